"""The report runners' --quick smokes: runs, skips finished runs, writes CSV, Markdown, PNG."""

import csv
import json
import shutil
import subprocess
import sys

import pytest

from experiments import records
from experiments.tables import run_jobs
from tests.conftest import REPO


SELECTED = ("# a test's stand-in for experiments/select.py's output\n--w_uv=0.1\n--w_vv=0.1\n"
            "--w_uu=0.1\n--mining_on_plateau\n--lam_mic=0.25\n--lam_div=0.2\n"
            "--eval_mode=cross_channel\n")


def selected_configs(folder, *encoders):
    folder.mkdir(parents=True, exist_ok=True)
    for encoder in encoders:
        (folder / f"mic_ml-100k_{encoder}.flags").write_text(SELECTED)
    return folder


def test_table1_quick_smoke(tmp_path, ml100k_raw_dir):
    configs = selected_configs(tmp_path / "configs", "youtube_dnn")
    cmd = [sys.executable, str(REPO / "experiments" / "table1.py"), "--quick",
           "--encoders=youtube_dnn", f"--results_dir={tmp_path / 'results'}",
           f"--runs_dir={tmp_path / 'runs'}", f"--configs_dir={configs}",
           f"--extra_args=--raw_dir={ml100k_raw_dir}"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "results" / "table1_ml-100k-quick.csv")))
    assert {r["arm"] for r in rows} == {"none", "mic_selected"} and len(rows) == 2 * 2 * 8
    assert {r["way"] for r in rows} == {"u2i", "cross_channel"}
    assert all(0 <= float(r["mean"]) <= 1 and r["n"] == "1" for r in rows)
    runs = tmp_path / "runs-quick"
    x = json.loads((runs / "youtube_dnn-none-s0" / "metrics.json").read_text())
    mic = json.loads((runs / "youtube_dnn-mic-sel-s0" / "metrics.json").read_text())
    flags = json.loads((runs / "youtube_dnn-mic-sel-s0" / "flags.json").read_text())
    assert flags["w_uv"] == 0.1 and flags["inference_lam_mic"] == 0.25  # the selected settings
    cell = {(r["arm"], r["way"], r["metric"]): float(r["mean"]) for r in rows}
    assert cell["none", "u2i", "recall@50"] == x["test"]["recall@50"]  # each run's own way
    assert cell["mic_selected", "cross_channel", "recall@50"] == mic["test"]["recall@50"]
    # the other way is a cached re-evaluation of the same checkpoint
    assert (runs / "youtube_dnn-mic-sel-s0" / "reeval" / "test-u2i.json").exists()
    assert [p.name for p in (runs / "youtube_dnn-none-s0" / "reeval").iterdir()][0].startswith(
        "test-cross-")  # X with the selected inference settings
    md = (tmp_path / "results" / "table1_ml-100k-quick.md").read_text()
    assert "gain of X + MIC (selected on valid)" in md and "## MIC's cross-channel" in md
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "running:" not in again.stderr  # finished runs skipped
    no_config = subprocess.run(cmd[:-2] + [f"--configs_dir={tmp_path / 'none'}", cmd[-1]],
                               capture_output=True, text=True, timeout=600)
    assert no_config.returncode != 0 and "experiments/select.py" in no_config.stderr
    # X's run as a fresh machine restores it from its record, without the checkpoint, and
    # without the cross-channel re-evaluation (as after a re-selection of the inference
    # settings): the table is written with that cell listed as missing, not silently dropped.
    x_run = runs / "youtube_dnn-none-s0"
    shutil.rmtree(x_run / "checkpoints")
    shutil.rmtree(x_run / "reeval")
    (x_run / records.RESTORED).write_text("restored by the test\n")
    lost = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert lost.returncode == 0, lost.stderr[-3000:]
    assert "running:" not in lost.stderr and "without a checkpoint" in lost.stderr
    md = (tmp_path / "results" / "table1_ml-100k-quick.md").read_text()
    assert "## Missing re-evaluations" in md and "**Incomplete:** 1 re-evaluation" in md
    assert "- youtube_dnn, X, seed 0: the cross_channel way (youtube_dnn-none-s0)" in md
    rows = list(csv.DictReader(open(tmp_path / "results" / "table1_ml-100k-quick.csv")))
    assert not [r for r in rows if r["arm"] == "none" and r["way"] == "cross_channel"]
    assert len(rows) == 3 * 8  # X's U2I and the MIC arm's two ways are still there


def test_table4_and_figures_quick_smoke(tmp_path, ml100k_raw_dir):
    """Table 4's variants (trained and re-evaluated) and both figures, sharing runs. One training
    ablation of five (`--trained`) keeps the smoke short: the runners treat them alike, and each
    ablation's effect on the loss is tested in test_mic.py."""
    configs = selected_configs(tmp_path / "configs", "comirec_sa")
    common = [f"--results_dir={tmp_path / 'results'}", f"--runs_dir={tmp_path / 'runs'}",
              f"--extra_args=--raw_dir={ml100k_raw_dir}", "--quick", f"--configs_dir={configs}",
              "--trained=baseline,full,-mining"]
    t4 = subprocess.run([sys.executable, str(REPO / "experiments" / "table4.py"), *common],
                        capture_output=True, text=True, timeout=900)
    assert t4.returncode == 0, t4.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "results" / "table4_ml-100k-quick.csv")))
    variants = ["baseline", "full", "-mining", "-u2u", "-u2i", "-i2i"]
    assert [r["variant"] for r in rows[::4]] == variants
    assert all(0 <= float(r["mean"]) <= 1 and r["n"] == "1" for r in rows)
    full = {r["metric"]: float(r["mean"]) for r in rows if r["variant"] == "full"}
    run_full = tmp_path / "runs-quick" / "comirec_sa-mic-sel-s0"
    ablation = json.loads((tmp_path / "runs-quick" / "comirec_sa-mic-sel-mining-s0" /
                           "flags.json").read_text())
    assert ablation["ablation"] == "-mining"  # the trained ablation ran with its flag
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
    assert [r["setting"] for r in fig5] == ["baseline", "full", "-mining"] and all(0 <= float(r["ui_alignment"]) <= 4 and
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


def test_select_quick_smoke_reads_no_test_target(tmp_path, ml100k_raw_dir):
    """select.py: X reference, printed values, one knob; CSV of valid metrics; a flagfile that
    run.py takes as its selected preset. Every trial ran with the test split sealed."""
    out = {"results": tmp_path / "results", "configs": tmp_path / "configs",
           "runs": tmp_path / "runs"}
    cmd = [sys.executable, str(REPO / "experiments" / "select.py"), "--quick",
           "--dataset=ml-100k", "--encoder=youtube_dnn", f"--results_dir={out['results']}",
           f"--configs_dir={out['configs']}", f"--runs_dir={out['runs']}",
           f"--extra_args=--raw_dir={ml100k_raw_dir}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader(open(out["results"] / "selection_ml-100k_youtube_dnn-quick.csv")))
    assert [r["stage"] for r in rows[:3]] == ["reference", "train", "train"]
    assert {r["stage"] for r in rows[3:]} == {"inference"} and not any("test" in k for k in rows[0])
    trials = sorted((out["runs"].parent / "runs-quick").iterdir())
    assert len(trials) == 3
    for trial in trials:
        metrics = json.loads((trial / "metrics.json").read_text())
        assert "test" not in metrics and metrics["run"]["evaluate_test"] is False
        assert "test" not in metrics["most_popular"]
        assert not (trial / "recommendations.jsonl").exists()
    flagfile = out["configs"] / "mic_ml-100k_youtube_dnn-quick.flags"
    lines = [l for l in flagfile.read_text().splitlines() if not l.startswith("#")]
    assert any(l.startswith("--eval_mode=") for l in lines) and any("lam_mic" in l for l in lines)
    best = max((r for r in rows if r["stage"] == "train"), key=lambda r: float(r["recall@50"]))
    assert all(f in lines for f in best["flags"].split())  # the stage-1 winner's flags


def test_run_jobs_calls_after_for_each_finished_job(tmp_path):
    """The reports evaluate each run as soon as it is finished (a stopped grid leaves complete
    records): `after` sees every job, found finished or run, in the jobs' order."""
    jobs = []
    for seed in (0, 1, 2):
        out = tmp_path / f"run-s{seed}"
        out.mkdir()
        (out / "flags.json").write_text(json.dumps({"seed": seed, "plugin": "none"}))
        (out / "metrics.json").write_text(json.dumps({"test": {"recall@50": 0.1}}))
        jobs.append(([f"--seed={seed}", "--plugin=none"], out))
    seen = []
    run_jobs(jobs, lambda msg: None, after=seen.append)
    assert seen == [out for _, out in jobs]
    (jobs[1][1] / "flags.json").write_text(json.dumps({"seed": 7, "plugin": "none"}))
    seen.clear()
    # a finished run made with other settings stops the grid before its `after`
    with pytest.raises(RuntimeError, match="other settings"):
        run_jobs(jobs, lambda msg: None, after=seen.append)
    assert seen == [jobs[0][1]]


def test_figure4_caches_x_through_mic_inference_under_the_settings_used():
    # X's third line is cached per X + MIC inference setting: a cache made under other M's must
    # not be reused when `full`'s settings change (it was, once); lam_div is the axis, not a key.
    import dataclasses

    from experiments.tables import inference_key
    from mic_tf.inference.score import InferenceConfig

    base = InferenceConfig(m1=20, m2=20, m3=10)
    assert inference_key(base) == inference_key(dataclasses.replace(base, lam_div=2.0))
    assert inference_key(base) != inference_key(dataclasses.replace(base, m1=10))
    assert len(inference_key(base)) == 10
