"""End to end on the real MovieLens-100K: prepare.py, run.py, resume after SIGKILL, determinism,
and metrics recomputed from recommendations.jsonl and the raw files."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO
from tests.test_protocol import comirec_oracle

RUN = [sys.executable, str(REPO / "experiments" / "run.py")]
SMALL = ["--dataset=ml-100k", "--encoder=youtube_dnn", "--batch_size=64", "--embedding_dim=16",
         "--max_steps=100", "--eval_every=20", "--patience=100", "--seed=3", "--verbose=2"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, ml100k_raw_dir):
    out = tmp_path_factory.mktemp("data")
    result = subprocess.run([sys.executable, str(REPO / "datasets" / "prepare.py"),
                             "--dataset=ml-100k", f"--data_dir={out}", f"--raw_dir={ml100k_raw_dir}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == ("users 943, items 1349 (kept items, padding not counted), interactions "
                         "99287, train/valid/test users 754/94/95")
    assert json.loads(lines[-1]) == {"users": 943, "items": 1349, "interactions": 99287,
                                     "train_users": 754, "valid_users": 94, "test_users": 95}
    return out


def run(args, out_dir, data_dir, raw_dir):
    return subprocess.run(RUN + args + [f"--output_dir={out_dir}", f"--data_dir={data_dir}",
                                        f"--raw_dir={raw_dir}"],
                          capture_output=True, text=True, timeout=600)


def test_resume_after_sigkill_and_same_seed_same_metrics(tmp_path, data_dir, ml100k_raw_dir):
    a = run(SMALL, tmp_path / "a", data_dir, ml100k_raw_dir)
    assert a.returncode == 0, a.stderr[-3000:]
    b_dir = tmp_path / "b"
    proc = subprocess.Popen(RUN + SMALL + [f"--output_dir={b_dir}", f"--data_dir={data_dir}",
                                           f"--raw_dir={ml100k_raw_dir}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = b_dir / "checkpoints" / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["evals_done"] >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["evals_done"]
    assert 2 <= killed_at < 5 and not (b_dir / "metrics.json").exists()
    b = run(SMALL, b_dir, data_dir, ml100k_raw_dir)
    assert b.returncode == 0, b.stderr[-3000:]
    assert f"resuming from step {killed_at * 20}" in b.stderr
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((b_dir / "metrics.json").read_text())
    for split in ("valid", "test"):
        for name, value in ma[split].items():
            assert mb[split][name] == pytest.approx(value, abs=1e-9), (split, name)
    assert ma["run"]["steps"] == mb["run"]["steps"] == 100
    # provenance.json records both starts of the resumed run, each with this checkout's commit
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    starts = json.loads((b_dir / "provenance.json").read_text())["starts"]
    assert len(starts) == 2 and {s["commit"] for s in starts} == {head or None}
    assert starts[0]["packages"]["keras"].startswith("3.")


def test_metrics_equal_a_recomputation_from_recommendations_and_raw_files(
        tmp_path, data_dir, ml100k_raw_dir):
    out = tmp_path / "run"
    result = run(SMALL, out, data_dir, ml100k_raw_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    flags_json = json.loads((out / "flags.json").read_text())
    assert flags_json["encoder"] == "youtube_dnn" and flags_json["maxlen"] == 20
    assert flags_json["jit_compile"] is True  # resolved default: XLA below 100k items
    for split in ("valid", "test"):
        for name in ("recall", "ndcg", "ndcg_comirec", "ndcg_comirec_paper", "hit_rate",
                     "diversity"):
            for k in (20, 50):
                assert 0.0 <= metrics[split][f"{name}@{k}"] <= 1.0
    # Independent recomputation: the raw files, ComiRec's protocol by hand, the saved lists.
    inter = pd.read_csv(ml100k_raw_dir / "ml-100k.inter", sep="\t", dtype=str)
    rows = list(zip(inter.iloc[:, 0], inter.iloc[:, 1], inter.iloc[:, 3].astype(float)))
    _, user_ids, seqs, _, s2 = comirec_oracle(rows)
    item_map, *_ = comirec_oracle(rows)
    raw_of = {v: k for k, v in item_map.items()}
    items = pd.read_csv(ml100k_raw_dir / "ml-100k.item", sep="\t", dtype=str)
    genre = dict(zip(items.iloc[:, 0], items.iloc[:, 3].str.split(" ").str[0]))
    recs = [json.loads(line) for line in (out / "recommendations.jsonl").read_text().splitlines()]
    assert [r["user"] for r in recs] == user_ids[s2:]  # every test user, in order
    recall = {20: [], 50: []}
    hit = {20: [], 50: []}
    div50 = []
    for rec, seq in zip(recs, seqs[s2:]):
        targets = [raw_of[i] for i in seq[int(len(seq) * 0.8):]]
        assert len(rec["items"]) == 50 and len(set(rec["items"])) == 50
        for k in (20, 50):
            hits = sum(item in set(targets) for item in rec["items"][:k])
            recall[k].append(hits / len(targets))
            hit[k].append(float(hits > 0))
        cats = [genre[i] for i in rec["items"]]
        div50.append(sum(cats[i] != cats[j] for i in range(50) for j in range(i + 1, 50))
                     / (50 * 49 / 2))
    for k in (20, 50):
        assert metrics["test"][f"recall@{k}"] == pytest.approx(np.mean(recall[k]), abs=1e-12)
        assert metrics["test"][f"hit_rate@{k}"] == pytest.approx(np.mean(hit[k]), abs=1e-12)
    assert metrics["test"]["diversity@50"] == pytest.approx(np.mean(div50), abs=1e-12)
    mp = metrics["most_popular"]["test"]["recall@50"]
    assert 0 < mp < 1 and not math.isnan(mp)


def test_bad_flag_names_the_value_and_the_choices(tmp_path):
    result = subprocess.run(RUN + ["--encoder=bert4rec", f"--output_dir={tmp_path}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "bert4rec" in result.stderr and "gru4rec" in result.stderr


def test_resuming_with_other_flags_is_refused(tmp_path, data_dir, ml100k_raw_dir):
    out = tmp_path / "run"
    first = run(SMALL[:-4] + ["--max_steps=20", "--eval_every=20", "--patience=1", "--verbose=2"],
                out, data_dir, ml100k_raw_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    again = run(SMALL[:-4] + ["--max_steps=20", "--eval_every=20", "--patience=1", "--verbose=2",
                              "--learning_rate=0.01"], out, data_dir, ml100k_raw_dir)
    assert again.returncode != 0
    assert "learning_rate: 0.001 -> 0.01" in again.stderr and "--output_dir" in again.stderr


@pytest.mark.parametrize("ablation", ["full", "-u2u"])
def test_mic_run_evaluates_through_cross_channel_inference(tmp_path, data_dir, ml100k_raw_dir,
                                                           ablation):
    args = ["--dataset=ml-100k", "--encoder=comirec_sa", "--plugin=mic", f"--ablation={ablation}",
            "--batch_size=64", "--embedding_dim=16", "--max_steps=40", "--eval_every=20",
            "--mining_every=20", "--verbose=2", "--mic_preset=paper"]
    result = run(args, tmp_path / "mic", data_dir, ml100k_raw_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mined neighbours of 754 users and 1349 items" in result.stderr
    metrics = json.loads((tmp_path / "mic" / "metrics.json").read_text())
    channels = {k for k in metrics["test"] if k.startswith("candidate_recall_")}
    expected = {"u2i", "u2u", "i2i"} - ({"u2u"} if ablation == "-u2u" else set())
    assert channels == {f"candidate_recall_{c}" for c in expected}
    for k in channels:
        assert 0 < metrics["test"][k] <= 1
    # the ranked lists still come from the channels' union: every item is a real item id
    recs = [json.loads(line) for line in (tmp_path / "mic" / "recommendations.jsonl")
            .read_text().splitlines()]
    assert len(recs) == 95 and all(len(r["items"]) == 50 for r in recs)


def test_selected_mic_preset_fills_unset_flags_only(tmp_path, data_dir, ml100k_raw_dir):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "mic_ml-100k_youtube_dnn.flags").write_text(
        "# chosen on validation\n--w_uv=0.05\n--lam_mic=0.1\n--mining_on_plateau\n"
        "--eval_mode=u2i\n")
    base = ["--dataset=ml-100k", "--encoder=youtube_dnn", "--plugin=mic", "--batch_size=64",
            "--embedding_dim=8", "--max_steps=20", "--eval_every=20", "--verbose=2",
            f"--configs_dir={configs}", "--noevaluate_test"]
    result = run(base + ["--w_uv=0.5"], tmp_path / "sel", data_dir, ml100k_raw_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    flags = json.loads((tmp_path / "sel" / "flags.json").read_text())
    assert flags["w_uv"] == 0.5  # given on the command line: wins
    assert flags["inference_lam_mic"] == 0.1 and flags["mining_on_plateau"] is True
    assert flags["eval_mode"] == "u2i"
    assert flags["mic_preset_used"] == str(configs / "mic_ml-100k_youtube_dnn.flags")
    assert flags["mic_preset_values"] == {"w_uv": "0.05", "lam_mic": "0.1",  # the file's lines
                                          "mining_on_plateau": True, "eval_mode": "u2i"}
    result = run(base + ["--mic_preset=paper"], tmp_path / "paper", data_dir, ml100k_raw_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    flags = json.loads((tmp_path / "paper" / "flags.json").read_text())
    assert flags["w_uv"] == 1.0 and flags["inference_lam_mic"] == 0.5
    assert flags["mining_on_plateau"] is False and flags["mic_preset_used"] == "paper"
    assert "mic_preset_values" not in flags


# ------------------------------------------------- a run's identity includes its data (issue 15)
TINY = ["--dataset=custom", "--encoder=youtube_dnn", "--batch_size=64", "--embedding_dim=16",
        "--max_steps=20", "--eval_every=20", "--patience=1", "--verbose=2"]


@pytest.fixture(scope="module")
def custom_logs(tmp_path_factory, ml100k_raw_dir):
    """ml-100k's interactions as custom CSV logs: the original, one with other sequences (same
    catalogue and users) and one with a smaller catalogue (10 items pushed below 5)."""
    out = tmp_path_factory.mktemp("logs")
    inter = pd.read_csv(ml100k_raw_dir / "ml-100k.inter", sep="\t", dtype=str)
    log = pd.DataFrame({"user": inter.iloc[:, 0], "item": inter.iloc[:, 1],
                        "timestamp": inter.iloc[:, 3]})
    log.to_csv(out / "a.csv", index=False)
    log.to_csv(out / "a_copy.csv", index=False)
    reordered = log.copy()
    first_users = reordered["user"].isin(reordered["user"].unique()[:50])
    reordered.loc[first_users, "timestamp"] = (
        -reordered.loc[first_users, "timestamp"].astype(float)).astype(str)
    reordered.to_csv(out / "other_order.csv", index=False)
    counts = log["item"].value_counts()
    five = counts[counts == 5].index[:10]
    smaller = log.drop(log.index[log["item"].isin(five)][::5])  # one row of each of the ten
    smaller.to_csv(out / "smaller.csv", index=False)
    return out


def run_custom(log, out_dir, data_dir):
    return subprocess.run(RUN + TINY + [f"--raw_path={log}", f"--output_dir={out_dir}",
                                        f"--data_dir={data_dir}"],
                          capture_output=True, text=True, timeout=600)


def test_rerun_on_other_data_is_refused_before_anything_is_rewritten(tmp_path, custom_logs):
    out = tmp_path / "run"
    first = run_custom(custom_logs / "a.csv", out, tmp_path / "d1")
    assert first.returncode == 0, first.stderr[-3000:]
    # issue 15 item 10: every file of the run folder has the mode an ordinary file gets
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.relative_to(out): oct(p.stat().st_mode & 0o777) for p in out.rglob("*")
             if p.is_file()}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes
    saved = {name: (out / name).read_bytes() for name in ("flags.json", "metrics.json")}
    for log in ("other_order.csv", "smaller.csv"):
        again = run_custom(custom_logs / log, out, tmp_path / f"d-{log}")
        assert again.returncode == 1, again.stderr[-3000:]
        assert "data_fingerprint" in again.stderr and "--output_dir" in again.stderr
        assert "Traceback" not in again.stderr
        assert {name: (out / name).read_bytes() for name in saved} == saved
    # the same content under another path and another --data_dir is the same run
    moved = run_custom(custom_logs / "a_copy.csv", out, tmp_path / "d2")
    assert moved.returncode == 0, moved.stderr[-3000:]
    assert "training already finished" in moved.stderr


@pytest.mark.parametrize("name", ["items.tsv", "users.tsv"])
def test_a_truncated_processed_folder_stops_the_run_before_training(tmp_path, data_dir,
                                                                    ml100k_raw_dir, name):
    """Issue 15 item 8: this used to fail with a traceback after training."""
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    table = copy / "ml-100k" / name
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    result = run(SMALL, tmp_path / "run", copy, ml100k_raw_dir)
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"{name}: processed file differs" in result.stderr and "--force" in result.stderr
    assert "Traceback" not in result.stderr and "training" not in result.stderr
    assert not (tmp_path / "run").exists()
