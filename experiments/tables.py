"""Shared machinery of the table runners: run a grid of `run.py` jobs (skipping finished ones) and
aggregate their metrics.json files into long-form statistics with paired significance tests."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
METRICS = ("recall", "ndcg", "hit_rate", "diversity")
CUTOFFS = (20, 50)


def run_job(args: list[str], out_dir: Path, log) -> float:
    """Runs `experiments/run.py` unless `out_dir/metrics.json` exists; returns seconds spent."""
    if (out_dir / "metrics.json").exists():
        return 0.0
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(REPO / "experiments" / "run.py"), *args,
           f"--output_dir={out_dir}", "--verbose=2"]
    log("running: " + " ".join(cmd[1:]))
    start = time.time()
    with open(out_dir / "run.log", "a") as f:
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if result.returncode != 0:
        raise RuntimeError(f"run failed (exit {result.returncode}); see {out_dir / 'run.log'}")
    seconds = time.time() - start
    # Wall time of the (last) attempt, for the reports' budget lines; not part of metrics.json.
    (out_dir / "wall_seconds.txt").write_text(f"{seconds:.1f}\n")
    return seconds


def load_test_metrics(out_dir: Path) -> dict:
    return json.loads((out_dir / "metrics.json").read_text())["test"]


def summarise(values: list[float]) -> tuple[float, float, int]:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")
    return float(arr.mean()), std, len(arr)


def paired_test(a: list[float], b: list[float]) -> float:
    """Two-sided p-value of a paired t-test of b vs a over seeds (NaN with < 2 pairs or no
    variance)."""
    if len(a) < 2 or np.allclose(np.subtract(b, a), np.subtract(b, a)[0]):
        return float("nan")
    return float(stats.ttest_rel(b, a).pvalue)


def metric_names() -> list[str]:
    return [f"{m}@{k}" for m in METRICS for k in CUTOFFS]


def fmt(mean: float, std: float) -> str:
    if math.isnan(std):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"
