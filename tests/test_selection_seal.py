"""A selection run (`evaluate_test=False`) never reads the test split's targets."""

import json

import pytest

from mic_tf.errors import DataError
from mic_tf.experiment import ExperimentConfig, run_experiment
from mic_tf.training.trainer import TrainConfig
from toy_data import toy_dataset


def _cfg(plugin, evaluate_test):
    train = TrainConfig(batch_size=16, maxlen=8, max_steps=6, eval_every=3, patience=2, seed=0,
                        verbose=0)
    cfg = ExperimentConfig(encoder="youtube_dnn", plugin=plugin, embedding_dim=8,
                           evaluate_test=evaluate_test, train=train)
    cfg.mic.mining_every = 3
    return cfg


@pytest.mark.parametrize("plugin", ["none", "mic"])
def test_selection_run_never_reads_test_targets(tmp_path, plugin):
    ds = toy_dataset(num_users=120)
    ds.seal("test")  # from here any read of the test users' histories / targets raises
    result = run_experiment(_cfg(plugin, False), ds, tmp_path / "run", log=lambda m: None)
    assert "test" not in result
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics) == {"valid", "most_popular", "run"} and "test" not in metrics["most_popular"]
    assert not (tmp_path / "run" / "recommendations.jsonl").exists()
    # The seal is real: a run that does evaluate the test split fails on the sealed dataset.
    with pytest.raises(DataError, match="test split is sealed"):
        run_experiment(_cfg(plugin, True), ds, tmp_path / "run2", log=lambda m: None)


def test_a_normal_run_seals_nothing(tmp_path):
    ds = toy_dataset(num_users=120)
    result = run_experiment(_cfg("none", True), ds, tmp_path / "run", log=lambda m: None)
    assert "test" in result and ds.sealed_splits == set()


def test_mining_knobs_are_skipped_once_mining_is_off():
    from experiments import select
    names = [k for k, _ in select.TRAIN_KNOBS]
    assert select.MINING_KNOBS <= set(names)  # every skipped knob is a real knob
    no_mining = {"ablation": "-mining", "w_uv": 0.1}
    assert [k for k in names if not select.knob_applies(k, no_mining)] == [
        "mined_weight", "hard_negatives", "num_positives"]
    assert all(select.knob_applies(k, {"w_uv": 0.1}) for k in names)
    assert all(select.knob_applies(k, {"mining_on_plateau": True}) for k in names)
