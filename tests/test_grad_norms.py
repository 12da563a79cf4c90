"""experiments/grad_norms.py and the TensorBoard reader behind it, on event files written here."""

import csv
import json
import math
import subprocess
import sys

import pytest
import tensorflow as tf

from mic_tf.utils.tensorboard import read_scalars
from tests.conftest import REPO


def write_events(folder, values: dict) -> None:
    """values: {step: {tag: value}}, written by tf.summary as a run's writer does."""
    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for step, tags in values.items():
            for tag, value in tags.items():
                tf.summary.scalar(tag, value, step=step)
    writer.close()


def test_read_scalars_prefix_and_resumed_files(tmp_path):
    write_events(tmp_path, {1: {"grad_norm/basic_loss": 0.5, "train/loss": 9.0},
                            500: {"grad_norm/basic_loss": 0.25}})
    write_events(tmp_path, {500: {"grad_norm/basic_loss": 0.75},  # a resumed run rewrites 500
                            1000: {"grad_norm/basic_loss": 1.5}})
    got = read_scalars(tmp_path, "grad_norm/")
    assert set(got) == {"grad_norm/basic_loss"}
    assert got["grad_norm/basic_loss"] == {1: 0.5, 500: 0.75, 1000: 1.5}


def test_read_scalars_names_an_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        read_scalars(tmp_path)


def test_report_shares_by_hand(tmp_path):
    run = tmp_path / "mic-run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "flags.json").write_text(json.dumps({"plugin": "mic", "mic_lambda": 0.7, "w_uv": 0.1,
                                                "w_vv": 0.1, "w_uu": 0.0}))
    write_events(run / "tensorboard", {
        1: {"grad_norm/basic_loss": 0.02, "grad_norm/uv_loss": 10.0, "grad_norm/vv_loss": 3.0},
        500: {"grad_norm/basic_loss": 0.5, "grad_norm/uv_loss": 2.0, "grad_norm/vv_loss": 1.0}})
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "grad_norms.py"),
                           f"--run_dirs={run}", f"--results_dir={out}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {(int(r["step"]), r["term"]): r
            for r in csv.DictReader(open(out / "grad_norms_runs.csv"))}
    # share = (1 - lam) * w * |g_t| / (lam * |g_basic|), by hand
    assert math.isclose(float(rows[1, "L_uv"]["share"]), 0.3 * 0.1 * 10.0 / (0.7 * 0.02),
                        rel_tol=1e-6)  # TensorBoard stores float32
    assert math.isclose(float(rows[500, "L_vv"]["share"]), 0.3 * 0.1 * 1.0 / (0.7 * 0.5),
                        rel_tol=1e-6)
    assert rows[1, "L_uu"]["grad_norm"] == ""  # never logged: the term is ablated
    md = (out / "grad_norms_runs.md").read_text()
    assert "| run | 1 | 0.02 | 10 (21.4) | 3 (6.43) | — |" in md


def test_report_refuses_a_run_without_mic(tmp_path):
    run = tmp_path / "x-run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "flags.json").write_text(json.dumps({"plugin": "none"}))
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "grad_norms.py"),
                           f"--run_dirs={run}", f"--results_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "is not a MIC run" in done.stderr
