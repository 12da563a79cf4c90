"""The report runners' --quick smokes: runs, skips finished runs, writes CSV, Markdown, PNG."""

import csv
import json
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


def test_table4_and_figures_quick_smoke(tmp_path, ml100k_raw_dir):
    """Table 4's nine variants (six trained, three re-evaluated) and both figures, sharing runs."""
    common = [f"--results_dir={tmp_path / 'results'}", f"--runs_dir={tmp_path / 'runs'}",
              f"--extra_args=--raw_dir={ml100k_raw_dir}", "--quick"]
    t4 = subprocess.run([sys.executable, str(REPO / "experiments" / "table4.py"), *common],
                        capture_output=True, text=True, timeout=900)
    assert t4.returncode == 0, t4.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "results" / "table4_ml-100k-quick.csv")))
    variants = ["baseline", "full", "-uu", "-ui", "-ii", "-perturbation", "-mining", "-u2u",
                "-u2i", "-i2i"]
    assert [r["variant"] for r in rows[::4]] == variants
    assert all(0 <= float(r["mean"]) <= 1 and r["n"] == "1" for r in rows)
    full = {r["metric"]: float(r["mean"]) for r in rows if r["variant"] == "full"}
    run_full = tmp_path / "runs-quick" / "comirec_sa-mic-s0"
    # `full` is the trained run's own test metrics; the channel ablations are re-evaluations
    assert full["recall@50"] == json.loads((run_full / "metrics.json").read_text())[
        "test"]["recall@50"]
    assert sorted(p.name for p in (run_full / "reeval").iterdir()) == [
        "test-i2i.json", "test-u2i.json", "test-u2u.json"]
    figs = subprocess.run([sys.executable, str(REPO / "experiments" / "figures.py"), *common],
                          capture_output=True, text=True, timeout=900)
    assert figs.returncode == 0, figs.stderr[-3000:]
    assert "running:" not in figs.stderr  # every run it needs was trained by table4.py
    for n in (4, 5):
        png = tmp_path / "results" / f"figure{n}_ml-100k-quick.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20000
    fig4 = list(csv.DictReader(open(tmp_path / "results" / "figure4_ml-100k-quick.csv")))
    assert {r["line"] for r in fig4} == {"mic", "baseline", "baseline_mic_inference"}
    # weight 0 of ComiRec's coefficient is the plain U2I ranking = the baseline run's metrics
    base0 = [r for r in fig4 if r["line"] == "baseline" and float(r["weight"]) == 0][0]
    base_run = json.loads((tmp_path / "runs-quick" / "comirec_sa-none-s0" / "metrics.json")
                          .read_text())["test"]
    assert abs(float(base0["recall@50"]) - base_run["recall@50"]) < 1e-9
    # lam_div 0.2 is the run's own inference setting: the MIC line reproduces its test metrics
    mic02 = [r for r in fig4 if r["line"] == "mic" and float(r["weight"]) == 0.2][0]
    assert abs(float(mic02["recall@50"]) - full["recall@50"]) < 1e-9
    fig5 = list(csv.DictReader(open(tmp_path / "results" / "figure5_ml-100k-quick.csv")))
    assert len(fig5) == 7 and all(0 <= float(r["ui_alignment"]) <= 4 and
                                  float(r["uu_uniformity"]) <= 0 for r in fig5)


def test_baselines_quick_smoke(tmp_path, ml100k_raw_dir):
    """X runs (Table 1's, shared), MostPopular and item-CF in one report."""
    cmd = [sys.executable, str(REPO / "experiments" / "baselines.py"), "--quick",
           "--dataset=ml-100k", "--encoders=youtube_dnn", f"--results_dir={tmp_path / 'results'}",
           f"--runs_dir={tmp_path / 'runs'}", f"--extra_args=--raw_dir={ml100k_raw_dir}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "results" / "baselines_ml-100k-quick.csv")))
    assert {r["model"] for r in rows} == {"most_popular", "item_cf", "youtube_dnn"}
    assert all(0 <= float(r["mean"]) <= 1 and r["n"] == "1" for r in rows)
    run = tmp_path / "runs-quick" / "youtube_dnn-none-s0"
    x = {r["metric"]: float(r["mean"]) for r in rows if r["model"] == "youtube_dnn"}
    assert x["recall@50"] == json.loads((run / "metrics.json").read_text())["test"]["recall@50"]
    pop = {r["metric"]: float(r["mean"]) for r in rows if r["model"] == "most_popular"}
    assert pop["recall@50"] == json.loads((run / "metrics.json").read_text())[
        "most_popular"]["test"]["recall@50"]  # the same MostPopular as every run reports
    md = (tmp_path / "results" / "baselines_ml-100k-quick.md").read_text()
    assert "| item-CF |" in md and "| YouTube DNN |" in md
