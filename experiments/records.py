"""Run records: the small JSON files of a finished run, kept in git under `results/runs/`.

A run's folder (`runs/...`: checkpoints, TensorBoard logs) stays on the machine that made it,
and machines do not outlive a session. Its record (flags.json, metrics.json, provenance.json,
wall time and the cached re-evaluations in `reeval/`) is what the tables and the selections are
computed from, so it is copied to `results/runs/<the same path under runs/>` and committed:
`runs/table1/...` (the reports' runs) and `runs/select/...` (experiments/select.py's trials, so
a selection that outlasts a session resumes on the next machine). A later runner on a
fresh machine restores a record into an empty run folder and treats the run as finished
(`tables.run_job` still checks its flags against the settings asked for now), so a report can be
regenerated, or grown by one encoder, without re-training what was already measured.

A restored run has no checkpoint: a re-evaluation its record does not hold cannot be computed,
and `require_checkpoint` says so (delete the record and the folder to re-train).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "runs"  # runs/table1 (Table 1, Table 4, figures share it), runs/select (trials)
RECORDS = REPO / "results" / "runs"
FILES = ("flags.json", "metrics.json", "provenance.json", "wall_seconds.txt")
RESTORED = "RESTORED_FROM_RECORD"  # marker in a run folder filled from its record


def record_dir(run_dir: Path, runs_root: Path | None = None,
               records_root: Path | None = None) -> Path | None:
    """Where the record of `run_dir` lives (roots default to RUNS and RECORDS), or None for a
    run outside the runs root (a custom `--runs_dir`: the user's own runs are not recorded)."""
    runs_root, records_root = runs_root or RUNS, records_root or RECORDS
    try:
        rel = Path(run_dir).resolve().relative_to(Path(runs_root).resolve())
    except ValueError:
        return None
    if not rel.parts or any(p.endswith("-quick") for p in rel.parts[:-1]):
        return None  # smoke grids (--quick: runs/table1/DATASET-quick, runs/select/.../ENC-quick)
    return Path(records_root) / rel


def _record_files(folder: Path) -> list[Path]:
    """The record's files of a run folder, relative to it (metrics.json last: it marks a
    finished run, so a copy interrupted before it leaves an unfinished-looking folder)."""
    files = [Path(name) for name in FILES if name != "metrics.json" and (folder / name).exists()]
    files += sorted(p.relative_to(folder) for p in (folder / "reeval").glob("*.json"))
    return files + ([Path("metrics.json")] if (folder / "metrics.json").exists() else [])


def save(run_dir: Path, runs_root: Path | None = None,
         records_root: Path | None = None) -> Path | None:
    """Copies a finished run's record into `records_root` (replacing an older record of the same
    run whole: built in a temporary folder, then renamed). Returns the record folder."""
    run_dir = Path(run_dir)
    target = record_dir(run_dir, runs_root, records_root)
    if target is None or not (run_dir / "metrics.json").exists():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for rel in _record_files(run_dir):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(run_dir / rel, tmp / rel)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def restore(run_dir: Path, runs_root: Path | None = None,
            records_root: Path | None = None) -> bool:
    """Fills a run folder that holds no finished run from its record, if one exists (a partial
    run in the folder is superseded: the record is a finished run of the same path). True if
    the folder was restored."""
    run_dir = Path(run_dir)
    source = record_dir(run_dir, runs_root, records_root)
    if (run_dir / "metrics.json").exists() or source is None \
            or not (source / "metrics.json").exists():
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESTORED).write_text(f"restored from {source}; no checkpoint\n")
    for rel in _record_files(source):
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, run_dir / rel)
    return True


class MissingCheckpoint(RuntimeError):
    """A re-evaluation needs the checkpoint of a run restored from its record without one."""


def require_checkpoint(run_dir: Path, what: str) -> None:
    """Raises a clear error when `what` (a re-evaluation) needs the checkpoint of a run that was
    restored from its record without one."""
    run_dir = Path(run_dir)
    if (run_dir / RESTORED).exists() and not (run_dir / "checkpoints").exists():
        raise MissingCheckpoint(
            f"{run_dir} was restored from its record (results/runs/) without a checkpoint, and "
            f"its record does not hold {what}; delete the record and the run folder to re-train "
            f"the run, or ask for the re-evaluations the record holds")
