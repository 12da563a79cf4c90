"""Which code and library versions a run folder's results came from (`provenance.json`).

Kept apart from `flags.json`, which is the run's identity: a run may resume at another commit
(a fix that changes no number), and each start is recorded, so a table can name the commits
its runs were trained at."""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from mic_tf.utils.io import atomic_write_json

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "faiss-cpu", "faiss-gpu-cu12", "numpy")


def git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def code_version(repo: Path = REPO) -> dict:
    """{commit, dirty, modified, python, packages}; commit is None outside a git checkout.
    `dirty` says whether tracked files outside `results/` differ from the commit, `modified`
    names them (the reports rewrite `results/` while they run; untracked files, such as run
    folders, do not count)."""
    commit = (git(repo, "rev-parse", "HEAD") or "").strip() or None
    status = (git(repo, "status", "--porcelain", "--untracked-files=no", "--", ".",
                  ":(exclude)results") if commit else None)
    modified = [line[3:] for line in (status or "").splitlines()]
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"commit": commit, "dirty": bool(modified) if commit else None,
            "modified": modified[:20],
            "python": platform.python_version(), "packages": versions}


def record_start(out_dir, extra: dict | None = None) -> dict:
    """Appends this start (time, code_version(), `extra`) to `out_dir/provenance.json`."""
    path = Path(out_dir) / "provenance.json"
    starts = json.loads(path.read_text())["starts"] if path.exists() else []
    entry = {"started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), **code_version(), **(extra or {})}
    atomic_write_json(path, {"starts": [*starts, entry]})
    return entry
