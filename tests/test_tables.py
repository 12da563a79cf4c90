"""The Table 1 runner's --quick smoke: runs, skips finished runs, writes the CSV and Markdown."""

import csv
import subprocess
import sys

from tests.conftest import REPO


def test_table1_quick_smoke(tmp_path, ml100k_raw_dir):
    cmd = [sys.executable, str(REPO / "experiments" / "table1.py"), "--quick",
           "--encoders=youtube_dnn", f"--results_dir={tmp_path / 'results'}",
           f"--runs_dir={tmp_path / 'runs'}", f"--extra_args=--raw_dir={ml100k_raw_dir}"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "results" / "table1_ml-100k-quick.csv")))
    assert {r["plugin"] for r in rows} == {"none", "mic"} and len(rows) == 2 * 8
    assert all(0 <= float(r["mean"]) <= 1 and r["n"] == "1" for r in rows)
    md = (tmp_path / "results" / "table1_ml-100k-quick.md").read_text()
    assert "| youtube_dnn + MIC |" in md and "| gain |" in md
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "running:" not in again.stderr  # finished runs skipped
