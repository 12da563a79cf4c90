"""Early stopping: ComiRec's patience rule, and `patience_loss_drop` holding it on a flat start."""

import json
import re

import pytest

from mic_tf.errors import ConfigError
from mic_tf.experiment import ExperimentConfig, run_experiment
from mic_tf.training.trainer import TrainConfig
from toy_data import toy_dataset


def _run(tmp_path, name, **train):
    cfg = ExperimentConfig(encoder="youtube_dnn", plugin="none", embedding_dim=8,
                           evaluate_test=False,
                           train=TrainConfig(batch_size=16, maxlen=8, eval_every=3, patience=2,
                                             seed=0, verbose=0, **train))
    lines = []
    run_experiment(cfg, toy_dataset(num_users=120), tmp_path / name, log=lines.append)
    state = json.loads((tmp_path / name / "checkpoints" / "state.json").read_text())
    return state, [m for m in lines if re.match(r"step \d+: valid", m)]


def test_a_frozen_model_is_stopped_by_patience_unless_its_loss_must_fall_first(tmp_path):
    # A learning rate of 1e-12 leaves the weights where they start: validation never improves
    # after the first evaluation and the basic loss stays at its starting level.
    state, lines = _run(tmp_path, "comirec", learning_rate=1e-12, max_steps=30)
    assert state["evals_done"] == 3 and state["bad_evals"] == 2  # best at step 3, stop at 9
    assert lines[-1].endswith("-> stopping") and "waits" not in " ".join(lines)

    state, lines = _run(tmp_path, "held", learning_rate=1e-12, max_steps=30,
                        patience_loss_drop=0.5)
    assert state["evals_done"] == 10 and state["bad_evals"] == 0  # ran to the cap
    assert state["loss_fell_at"] == -1 and state["loss_reference"] > 0
    targets = [float(re.search(r"basic_loss <= ([0-9.]+)", m)[1]) for m in lines[1:]]
    assert targets == pytest.approx([0.5 * state["loss_reference"]] * 9, abs=1e-4)


def test_patience_counts_from_the_period_the_loss_has_fallen(tmp_path):
    # A model that learns: its loss falls below 99.9% of the first period's at some period,
    # from which on every evaluation without gain counts again.
    state, lines = _run(tmp_path, "learns", learning_rate=0.05, max_steps=60,
                        patience_loss_drop=0.001)
    fell = state["loss_fell_at"]
    assert fell > 0 and fell % 3 == 0
    for m in lines:
        step = int(m.split()[1].rstrip(":"))
        assert ("waits" in m) == (step < fell and "*best*" not in m)


@pytest.mark.parametrize("drop", [-0.1, 1.0, 2.0])
def test_a_loss_drop_outside_0_1_is_refused(drop):
    with pytest.raises(ConfigError, match="patience_loss_drop"):
        TrainConfig(patience_loss_drop=drop).validate()


LOG = """training youtube_dnn: up to 2000 steps
step 200: valid recall@50 0.1000 ndcg@50 0.1 hit_rate@50 0.5 (0.1s) *best*
200/200 - 5s - 25ms/step - basic_loss: 8.0000 - loss: 8.0000
step 400: valid recall@50 0.0900 ndcg@50 0.1 hit_rate@50 0.5 (0.1s) (no gain for 1)
200/200 - 5s - 25ms/step - basic_loss: 7.9000 - loss: 7.9000
step 600: valid recall@50 0.0950 ndcg@50 0.1 hit_rate@50 0.5 (0.1s) (no gain for 2) -> stopping
200/200 - 5s - 25ms/step - basic_loss: 7.8000 - loss: 7.8000
"""


def test_replaying_a_log_finds_where_each_rule_stops():
    from experiments.replay_stopping import periods, replay
    evals = periods(LOG)
    assert evals == [(200, 0.1, True, 8.0), (400, 0.09, False, 7.9), (600, 0.095, False, 7.8)]
    assert replay(evals, patience=2, max_steps=2000, drop=0.0)["stop"] == 600  # as recorded
    # 5% below 8.0 is 7.6: never reached, so the rule would have trained on past the log's end
    held = replay(evals, patience=2, max_steps=2000, drop=0.05)
    assert held["stop"] is None and held["best_valid"] == 0.1
    # 2% below is 7.84: reached at step 600, whose evaluation is the first to count
    assert replay(evals, patience=2, max_steps=2000, drop=0.02)["stop"] is None
    assert replay(evals, patience=1, max_steps=2000, drop=0.02)["stop"] == 600


def test_a_run_the_rule_leaves_alone_is_adopted_with_its_origin(tmp_path):
    from experiments.replay_stopping import adopt
    run = tmp_path / "runs" / "x-none-s0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "state.json").write_text("{}")
    (run / "run.log").write_text(LOG)
    (run / "run.lock").write_text("")
    (run / "flags.json").write_text(json.dumps({"patience": 2, "max_steps": 2000}))
    (run / "provenance.json").write_text(json.dumps({"starts": [{"commit": "abc"}]}))
    target = adopt(run, tmp_path / "adopted", 0.05)
    assert json.loads((target / "flags.json").read_text()) == {
        "patience": 2, "max_steps": 2000, "patience_loss_drop": 0.05}
    prov = json.loads((target / "provenance.json").read_text())
    assert prov["starts"] == [{"commit": "abc"}] and prov["adopted"]["from"] == str(run)
    assert (target / "checkpoints" / "state.json").exists() and not (target / "run.lock").exists()
    assert adopt(run, tmp_path / "adopted", 0.05) is None  # never overwrites
