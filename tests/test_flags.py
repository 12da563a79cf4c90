"""Every flag is checked before any work starts (issue 15, item 6): a UsageError that names the
flag and the allowed range, and a refused command writes nothing."""

import dataclasses
import json
import subprocess
import sys

import pytest

from mic_tf.errors import UsageError
from mic_tf.experiment import ExperimentConfig
from mic_tf.inference.score import InferenceConfig
from mic_tf.mic.mining import MiningConfig
from mic_tf.mic.plugin import MICConfig
from mic_tf.training.trainer import TrainConfig
from tests.conftest import REPO

NAN = float("nan")


def config(**parts) -> ExperimentConfig:
    """ExperimentConfig with some fields of its parts replaced: train=..., mic=..., mining=..."""
    train = dataclasses.replace(TrainConfig(), **parts.pop("train", {}))
    mining = dataclasses.replace(MiningConfig(), **parts.pop("mining", {}))
    mic = dataclasses.replace(MICConfig(mining=mining), **parts.pop("mic", {}))
    inference = dataclasses.replace(InferenceConfig(), **parts.pop("inference", {}))
    return ExperimentConfig(train=train, mic=mic, inference=inference, **parts)


# (case, config, the flag the message must name, text of the allowed range)
CASES = [
    ("dropout=1", config(mic={"dropout": 1.0}), "--dropout=1.0", "[0, 1)"),
    ("learning_rate=nan", config(train={"learning_rate": NAN}), "--learning_rate=nan", "> 0"),
    ("temperature=nan", config(mic={"temperature": NAN}), "--temperature=nan", "> 0"),
    ("lam_mic=nan", config(inference={"lam_mic": NAN}), "--lam_mic=nan", "finite number"),
    ("lam_div=inf", config(inference={"lam_div": float("inf")}), "--lam_div=inf",
     "finite number"),
    ("m1=-1", config(plugin="mic", inference={"m1": -1}), "--m1=-1", ">= 0"),
    ("k1=-3", config(inference={"k1": -3}), "--k1=-3", ">= 0, or unset"),
    ("m_history=-1", config(inference={"m": -1}), "--m_history=-1", ">= 0"),
    ("num_sampled=-5", config(num_sampled=-5), "--num_sampled=-5", ">= 1, or unset"),
    ("batch_size=0", config(train={"batch_size": 0}), "--batch_size=0", ">= 1"),
    ("mic_lambda=2", config(mic={"mic_lambda": 2.0}), "--mic_lambda=2.0", "[0, 1]"),
    ("w_uu=-1", config(mic={"w_uu": -1.0}), "--w_uu=-1.0", ">= 0"),
    ("p_mask=nan", config(mic={"p_mask": NAN}), "--p_mask=nan", "[0, 1]"),
    ("num_positives=0", config(mining={"num_positives": 0}), "--num_positives=0", ">= 1"),
    ("search_k=0", config(mining={"search_k": 0}), "--mining_search_k=0", ">= 1"),
    ("seed=-1", config(train={"seed": -1}), "--seed=-1", "[0, 2.14748e+09]"),
    ("logistic_temperature=0", config(logistic_temperature=0.0), "--logistic_temperature=0.0",
     "> 0"),
    ("embedding_dim=0", config(embedding_dim=0), "--embedding_dim=0", ">= 1"),
    ("eval_every=float", config(train={"eval_every": 2.5}), "--eval_every=2.5", "an integer"),
    ("lam_mic=str", config(inference={"lam_mic": "0.5"}), "--lam_mic='0.5'", "finite number"),
]


@pytest.mark.parametrize("cfg, flag, allowed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_bad_value_is_a_usage_error_naming_the_flag_and_the_range(cfg, flag, allowed):
    with pytest.raises(UsageError) as info:
        cfg.validate()
    message = str(info.value)
    assert message.startswith(flag + " is not allowed") and allowed in message, message


def test_combinations_are_checked():
    with pytest.raises(UsageError, match="--ablation=-uu needs --plugin=mic"):
        config(ablation="-uu").validate()
    with pytest.raises(UsageError, match="--plugin=mic needs --sampler=comirec"):
        config(plugin="mic", train={"sampler": "all"}).validate()
    with pytest.raises(UsageError, match="no channel"):
        config(inference={"use_u2i": False, "use_u2u": False, "use_i2i": False}).validate()
    config().validate()  # the defaults pass
    config(plugin="mic", ablation="-u2u", inference={"k1": 0, "lam_div": -0.5}).validate()


def test_every_config_field_has_a_check():
    """A field added without a line in its table would go unchecked: this names it."""
    from mic_tf.data.protocol import PROTOCOL_CHECKS, ProtocolParams
    from mic_tf.experiment import EXPERIMENT_CHECKS
    from mic_tf.inference.score import INFERENCE_CHECKS
    from mic_tf.mic.mining import MINING_CHECKS
    from mic_tf.mic.plugin import MIC_CHECKS
    from mic_tf.training.trainer import TRAIN_CHECKS

    parts = {"train", "mic", "inference", "mining"}  # nested configs, checked by their own table
    for cls, table in ((TrainConfig, TRAIN_CHECKS), (MiningConfig, MINING_CHECKS),
                       (MICConfig, MIC_CHECKS), (InferenceConfig, INFERENCE_CHECKS),
                       (ExperimentConfig, EXPERIMENT_CHECKS), (ProtocolParams, PROTOCOL_CHECKS)):
        fields = {f.name for f in dataclasses.fields(cls)} - parts
        checked = [c.field for c in table]
        assert len(checked) == len(set(checked)), cls
        assert fields == set(checked), (cls.__name__, fields ^ set(checked))


# ---------------------------------------------------------------- through experiments/run.py
CHECK_MANY = r"""
import json, sys
sys.argv = ["run.py"]
from absl import flags
import experiments.run as run
out = {}
for args in json.loads(sys.stdin.read()):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["run.py", *args])
    try:
        run.check_flags()
        out[" ".join(args)] = None
    except Exception as e:
        out[" ".join(args)] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
"""

FLAG_CASES = {
    "--dropout=1.0": "--dropout=1.0 is not allowed: expected a finite number in [0, 1)",
    "--learning_rate=nan": "--learning_rate=nan is not allowed",
    "--temperature=nan": "--temperature=nan is not allowed",
    "--lam_mic=nan": "--lam_mic=nan is not allowed",
    "--plugin=mic --m1=-1": "--m1=-1 is not allowed: expected an integer >= 0",
    "--num_sampled=-5": "--num_sampled=-5 is not allowed",
    "--batch_size=0 --max_epochs=1": "--batch_size=0 is not allowed",
    "--max_epochs=0": "--max_epochs=0 is not allowed: expected an integer >= 1, or unset",
    "--verbose=7": "--verbose=7 is not allowed: expected an integer in [0, 2], or unset",
    "--min_user_count=3": "--min_user_count=3 is not allowed: expected an integer >= 5",
    "--min_item_count=0": "--min_item_count=0 is not allowed",
    "--eval_every=0": "--eval_every=0 is not allowed",
    "--plugin=mic --ramp_steps=-1": "--ramp_steps=-1 is not allowed: expected an integer >= 0",
    "--plugin=mic --mined_weight=nan": "--mined_weight=nan is not allowed",
    "--plugin=mic --mining_start=-5": "--mining_start=-5 is not allowed",
    "--distribute=multi_worker --jit_compile": "--jit_compile is not allowed with "
                                                "--distribute=multi_worker",
    "--encoder=comirec_dr": None,  # allowed
    "--plugin=mic --ablation=-mining": None,
}


def test_run_checks_every_flag_before_any_work(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = dict(FLAG_CASES)
    cases[f"--output_dir={a_file}"] = "--output_dir"
    cases[f"--output_dir={a_file}/sub"] = "--output_dir"
    argvs = [c.split() for c in cases]
    result = subprocess.run([sys.executable, "-c", CHECK_MANY], input=json.dumps(argvs),
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    for case, expected in cases.items():
        if expected is None:
            assert got[case] is None, (case, got[case])
        else:
            assert got[case] and got[case].startswith("UsageError: "), (case, got[case])
            assert expected in got[case], (case, got[case])
    assert a_file.read_text() == "not a folder"


@pytest.mark.parametrize("args, expected", [
    (["--plugin=mic", "--dropout=1.0"], "--dropout=1.0 is not allowed"),
    (["--batch_size=0", "--max_epochs=1"], "--batch_size=0 is not allowed"),
])
def test_a_refused_command_writes_nothing(tmp_path, args, expected):
    out, data = tmp_path / "run", tmp_path / "data"
    result = subprocess.run([sys.executable, str(REPO / "experiments" / "run.py"), *args,
                             f"--output_dir={out}", f"--data_dir={data}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and expected in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not out.exists() and not data.exists()  # no flags.json, and no data prepared either
