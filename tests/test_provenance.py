"""provenance.json: the commit, and whether code (not results/) differs from it."""

import json
import subprocess

from mic_tf.utils.provenance import code_version, record_start


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_dirty_counts_code_not_results(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("a\n")
    (tmp_path / "model.py").write_text("x = 1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    clean = code_version(tmp_path)
    assert clean["commit"] == head and clean["dirty"] is False and clean["modified"] == []
    (tmp_path / "results" / "table.md").write_text("b\n")  # a report rewriting its table
    (tmp_path / "untracked.txt").write_text("run output\n")
    assert code_version(tmp_path)["dirty"] is False
    (tmp_path / "model.py").write_text("x = 2\n")
    dirty = code_version(tmp_path)
    assert dirty["dirty"] is True and dirty["modified"] == ["model.py"]


def test_outside_a_checkout_commit_is_none(tmp_path):
    got = code_version(tmp_path)
    assert got["commit"] is None and got["dirty"] is None


def test_record_start_appends(tmp_path):
    record_start(tmp_path, {"note": "first"})
    record_start(tmp_path)
    starts = json.loads((tmp_path / "provenance.json").read_text())["starts"]
    assert len(starts) == 2 and starts[0]["note"] == "first" and "note" not in starts[1]
