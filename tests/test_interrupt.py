"""Ctrl-C (SIGINT) stops run.py and prepare.py with one line that says to run the same command
again, exit status 130 and no traceback (issue 15, item 9); nothing partial is left behind."""

import json
import signal
import subprocess
import sys
import time

from tests.conftest import REPO


def wait_for(proc, condition, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.05)
    return False


def interrupt(proc):
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    return err


def test_ctrl_c_during_training(tmp_path, ml100k_raw_dir):
    out = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "experiments" / "run.py"), "--encoder=youtube_dnn",
           "--batch_size=64", "--embedding_dim=16", "--max_steps=100000", "--eval_every=20",
           "--patience=100000", "--verbose=2", f"--output_dir={out}",
           f"--data_dir={tmp_path / 'data'}", f"--raw_dir={ml100k_raw_dir}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    state = out / "checkpoints" / "state.json"
    started = wait_for(proc, lambda: state.exists()
                       and json.loads(state.read_text())["evals_done"] >= 1)
    assert started, "training did not start"
    err = interrupt(proc)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and "run the same command again to resume" in last, last
    assert not [p for p in out.rglob(".*.tmp")]  # no temporary file left


def test_ctrl_c_during_prepare(tmp_path):
    data = tmp_path / "data"
    cmd = [sys.executable, str(REPO / "datasets" / "prepare.py"), "--dataset=synthetic",
           "--synthetic_users=300000", "--synthetic_items=20000", f"--data_dir={data}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []

    def reading():
        line = proc.stderr.readline()
        lines.append(line)
        return "reading the raw data" in line

    assert wait_for(proc, reading), "".join(lines)
    time.sleep(0.5)
    err = "".join(lines) + interrupt(proc)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert "run the same command again" in err.strip().splitlines()[-1]
    assert not (data / "synthetic").exists()
    assert not data.exists() or not list(data.iterdir())  # no temporary folder left either
