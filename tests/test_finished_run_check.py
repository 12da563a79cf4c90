"""The table runners reuse a finished run only if it was made with the settings asked for now."""

import json

import pytest

from experiments import flagfiles
from experiments.tables import check_finished_run, run_job, same_value


def finished_run(tmp_path, flags: dict):
    out = tmp_path / "run"
    out.mkdir()
    (out / "flags.json").write_text(json.dumps(flags))
    (out / "metrics.json").write_text("{}")
    return out


STORED = {"dataset": "ml-100k", "encoder": "gru4rec", "plugin": "mic", "mic_preset": "selected",
          "w_uv": 0.1, "w_vv": 0.0, "mining_on_plateau": True, "evaluate_test": True,
          "eval_mode": "cross_channel", "seed": 0, "data_dir": "/elsewhere/split-1230",
          "k1": None, "metrics": ["recall", "ndcg"]}


def write_config(configs, lines):
    configs.mkdir(exist_ok=True)
    flagfiles.selected_config("ml-100k", "gru4rec", configs).write_text(
        "# selected by hand for this test\n" + "\n".join(lines) + "\n")


def args(configs, *extra):
    return ["--dataset=ml-100k", "--encoder=gru4rec", "--plugin=mic", "--seed=0",
            "--data_dir=/here/split-1230", f"--configs_dir={configs}", *extra]


@pytest.mark.parametrize("stored,given,same", [
    (0.1, "0.1", True), (0.1, "0.10", True), (0.1, "0.01", False), (3, "3", True),
    (3, "x", False), (True, True, True), (True, False, False), (False, "false", True),
    (True, "1", True), (None, "None", True), (None, "5", False), ("u2i", "u2i", True),
    ("u2i", "cross_channel", False), (["recall", "ndcg"], "recall,ndcg", True),
    (["recall"], "recall,ndcg", False), ("u2i", True, False)])
def test_same_value(stored, given, same):
    assert same_value(stored, given) is same


def test_matching_run_is_reused(tmp_path):
    configs = tmp_path / "configs"
    write_config(configs, ["--w_uv=0.1", "--w_vv=0.0", "--mining_on_plateau",
                           "--eval_mode=cross_channel"])
    out = finished_run(tmp_path, STORED)
    # metrics.json exists and the settings match: reused, run.py never starts
    assert run_job(args(configs, "--evaluate_test"), out, log=print) is True


def test_changed_selected_flagfile_is_refused(tmp_path):
    configs = tmp_path / "configs"
    write_config(configs, ["--w_uv=0.3", "--w_vv=0.0", "--nomining_on_plateau"])
    out = finished_run(tmp_path, STORED)
    with pytest.raises(RuntimeError) as err:
        run_job(args(configs), out, log=print)
    message = str(err.value)
    assert "w_uv: 0.1 in the run, '0.3' now" in message
    assert "mining_on_plateau: True in the run, False now" in message
    assert "w_vv" not in message and "move the folder aside" in message


def test_explicit_argument_beats_the_flagfile(tmp_path):
    configs = tmp_path / "configs"
    write_config(configs, ["--w_uv=0.3"])
    out = finished_run(tmp_path, STORED)
    check_finished_run(args(configs, "--w_uv=0.1"), out)  # given explicitly: the run matches
    with pytest.raises(RuntimeError, match="eval_mode: 'cross_channel' in the run, 'u2i' now"):
        check_finished_run(args(configs, "--w_uv=0.1", "--eval_mode=u2i"), out)


def test_paper_preset_ignores_the_flagfile(tmp_path):
    configs = tmp_path / "configs"
    write_config(configs, ["--w_uv=0.3"])
    out = finished_run(tmp_path, {**STORED, "mic_preset": "paper"})
    check_finished_run(args(configs, "--mic_preset=paper"), out)
    with pytest.raises(RuntimeError, match="seed: 0 in the run, '1' now"):
        check_finished_run(args(configs, "--mic_preset=paper", "--seed=1"), out)


def test_run_without_flags_json_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(RuntimeError, match="no flags.json"):
        run_job(["--dataset=ml-100k"], out, log=print)


def test_flagfile_lines(tmp_path):
    path = tmp_path / "x.flags"
    path.write_text("# a comment\n\n--w_uv=0.1\n--mining_on_plateau\n--nosingle_channel_heads\n")
    assert flagfiles.read_flagfile(path) == {"w_uv": "0.1", "mining_on_plateau": True,
                                             "single_channel_heads": False}
    path.write_text("--w_uv=0.1\nw_vv=0.3\n")
    with pytest.raises(ValueError, match=r"x.flags: line 'w_vv=0.3' is not of the form"):
        flagfiles.read_flagfile(path)


def test_a_flag_the_flagfile_no_longer_sets_is_refused(tmp_path):
    # The run read --w_uu=0.1 from the flagfile; today's file drops the line, so a run now would
    # take run.py's default: a value comparison alone cannot see it (the file has no w_uu).
    configs = tmp_path / "configs"
    write_config(configs, ["--w_uv=0.1", "--w_vv=0.0", "--mining_on_plateau",
                           "--eval_mode=cross_channel"])
    lines = {"w_uv": "0.1", "w_vv": "0.0", "w_uu": "0.1", "mining_on_plateau": True,
             "eval_mode": "cross_channel"}
    out = finished_run(tmp_path, {**STORED, "w_uu": 0.1, "mic_preset_values": lines})
    with pytest.raises(RuntimeError) as err:
        check_finished_run(args(configs), out)
    assert "w_uu: \"'0.1' from the flagfile\" in the run, \"run.py's default\" now" in str(
        err.value)
    check_finished_run(args(configs, "--w_uu=0.1"), out)  # given explicitly: the same run
    # the same file as the run read: reused; a record from before mic_preset_values: by values
    write_config(configs, [f"--{k}={v}" if not isinstance(v, bool) else f"--{k}"
                           for k, v in lines.items()])
    check_finished_run(args(configs), out)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    write_config(configs, ["--w_uv=0.1", "--w_vv=0.0"])
    (legacy / "flags.json").write_text(json.dumps({**STORED, "w_uu": 0.1}))
    (legacy / "metrics.json").write_text("{}")
    check_finished_run(args(configs), legacy)


def test_a_run_recorded_before_a_flag_existed_has_its_default(tmp_path):
    # STORED predates --patience_loss_drop: it ran with the default (0), so asking for 0 reuses
    # it and asking for 0.05 refuses it instead of silently reusing a run of the other rule
    configs = tmp_path / "configs"
    write_config(configs, ["--w_uv=0.1", "--w_vv=0.0", "--mining_on_plateau",
                           "--eval_mode=cross_channel"])
    out = finished_run(tmp_path, STORED)
    check_finished_run(args(configs, "--patience_loss_drop=0"), out)
    with pytest.raises(RuntimeError, match="patience_loss_drop: 0.0 in the run, '0.05' now"):
        check_finished_run(args(configs, "--patience_loss_drop=0.05"), out)




RESUME_CHECK = """
import json, sys
from experiments.run import check_same_run
from mic_tf.errors import MicError
out = sys.argv[1]
check_same_run(out, {"seed": 0, "encoder": "gru4rec", "patience_loss_drop": 0.0})
try:
    check_same_run(out, {"seed": 0, "encoder": "gru4rec", "patience_loss_drop": 0.05})
except MicError as err:
    print(err)
"""


def test_run_py_resumes_a_run_started_before_a_flag_existed(tmp_path):
    # In a child: importing experiments.run here would define its absl flags beside select.py's
    import subprocess
    import sys
    from pathlib import Path
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "state.json").write_text("{}")
    (tmp_path / "flags.json").write_text(json.dumps({"seed": 0, "encoder": "gru4rec"}))
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", RESUME_CHECK, str(tmp_path)], cwd=repo,
                          capture_output=True, text=True, check=True)
    assert "patience_loss_drop: 0.0 -> 0.05" in done.stdout


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("true", True),
                                             ("False", False), ("1", True), ("0", False)])
def test_boolean_flagfile_values(value, expected):
    assert flagfiles.as_bool(value) is expected


def test_a_boolean_spelled_otherwise_is_refused():
    # bool("no") would be True; the reader names the problem instead
    with pytest.raises(ValueError, match="not a boolean value"):
        flagfiles.as_bool("no")
