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


def git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version() -> dict:
    """{commit, dirty, python, packages}; commit is None outside a git checkout. `dirty` says
    whether tracked files differ from the commit (untracked files, e.g. run folders, do not
    count)."""
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"commit": commit, "dirty": bool(status) if commit else None,
            "python": platform.python_version(), "packages": versions}


def record_start(out_dir, extra: dict | None = None) -> dict:
    """Appends this start (time, code_version(), `extra`) to `out_dir/provenance.json`."""
    path = Path(out_dir) / "provenance.json"
    starts = json.loads(path.read_text())["starts"] if path.exists() else []
    entry = {"started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), **code_version(), **(extra or {})}
    atomic_write_json(path, {"starts": [*starts, entry]})
    return entry
