"""Replays a stopping rule on recorded runs: would `--patience_loss_drop` have stopped them later?

The stopping rule never changes training (the weights, noise and mining of step N are the same
whatever rule stops the run after N), so a recorded run's log answers exactly, for the steps it
reached: a run the rule would stop at the same step is the run it would have produced; a run the
rule would not have stopped must be trained on to know more. Reads each run's `run.log` (the
validation lines and the per-period Keras summaries with `basic_loss`) and `flags.json`.

    python experiments/replay_stopping.py --drop=0.05 --runs='runs/table1/ml-1m/comirec_sa-*'

With `--adopt_to=DIR`, each run the rule would stop at its recorded step is copied to DIR (same
folder name, checkpoints included) as a run of the rule: its flags.json gets the rule's value and
its provenance.json says where it came from and why it is the same run. A report runner pointed
at DIR with the rule (`--runs_dir=DIR --extra_args=--patience_loss_drop=...`) then trains only
the runs the rule changes.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys
from pathlib import Path

# Run as a script, this folder would come first on sys.path and experiments/select.py would
# otherwise shadow the standard library's `select` (imported by subprocess, socket, ...).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

flags.DEFINE_list("runs", None, "Run folders (globs allowed).", required=True)
flags.DEFINE_float("drop", 0.05, "The rule's patience_loss_drop to replay.")
flags.DEFINE_string("adopt_to", None, "Copy the runs the rule leaves unchanged here, as its runs.")
FLAGS = flags.FLAGS

VALID = re.compile(r"^step (\d+): valid recall@50 ([0-9.]+)")
SUMMARY = re.compile(r"^\d+/\d+ - .*\bbasic_loss: ([0-9.eE+-]+)")


def periods(log_text: str) -> list[tuple[int, float, bool, float | None]]:
    """(step, valid recall@50, whether it improved, the period's basic loss) of every evaluation
    in a run's log (the log's `*best*` decides improvement: its scores are rounded).

    Keras prints a period's summary right after the validation callback's line; a period whose
    summary is missing (the process stopped in between) gets None. A step logged twice (a resumed
    run repeats nothing, but be safe) keeps its last record."""
    found, last = {}, None
    for line in log_text.splitlines():
        if m := VALID.match(line):
            last = int(m[1])
            found[last] = (float(m[2]), "*best*" in line, None)
        elif (m := SUMMARY.match(line)) and last is not None:
            found[last] = (*found[last][:2], float(m[1]))
            last = None
    return [(step, *record) for step, record in sorted(found.items())]


def replay(evals, patience: int, max_steps: int, drop: float) -> dict:
    """Where the run stops under `drop` (0: ComiRec's rule), and its best valid score by then."""
    from mic_tf.training.stopping import arm_patience, patience_counts

    best, bad, reference, fell_at = -1.0, 0, -1.0, -1
    for step, score, improved, loss in evals:
        try:
            reference, fell_at = arm_patience(reference, fell_at, loss, drop, step)
        except ValueError:
            return {"stop": None, "why": f"no basic_loss logged for step {step}"}
        if improved:
            best, bad = score, 0
        elif patience_counts(fell_at, drop):
            bad += 1
        if bad >= patience or step >= max_steps:
            return {"stop": step, "best_valid": best}
    return {"stop": None, "best_valid": best,
            "why": f"not stopped by step {evals[-1][0] if evals else 0}: the log ends there"}


def report(run: Path, drop: float) -> dict:
    cfg = json.loads((run / "flags.json").read_text())
    evals = periods((run / "run.log").read_text())
    old = replay(evals, cfg["patience"], cfg["max_steps"], 0.0)
    new = replay(evals, cfg["patience"], cfg["max_steps"], drop)
    recorded = evals[-1][0] if evals else None
    return {"run": run.name, "recorded_stop": recorded, "replayed_old_stop": old["stop"],
            "new_stop": new["stop"], "same_run": new["stop"] == recorded,
            "best_valid_at_stop": old.get("best_valid"), "note": new.get("why", "")}


def adopt(run: Path, target_root: Path, drop: float) -> Path | None:
    """Copies `run` into `target_root` as a run made with `--patience_loss_drop=drop` (only a run
    the replay shows the rule would not change; None when the target exists already)."""
    from mic_tf.utils.io import atomic_write_json

    target = target_root / run.name
    if target.exists():
        return None
    cfg = json.loads((run / "flags.json").read_text())
    if cfg.get("patience_loss_drop") not in (None, 0, 0.0):
        raise SystemExit(f"{run} already ran with patience_loss_drop "
                         f"{cfg['patience_loss_drop']}; adopt only runs of ComiRec's rule")
    tmp = target.with_name(f".{target.name}.adopting")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run, tmp, ignore=shutil.ignore_patterns("run.lock"))
    atomic_write_json(tmp / "flags.json", {**cfg, "patience_loss_drop": drop})
    prov = json.loads((run / "provenance.json").read_text())
    prov["adopted"] = {"from": str(run.resolve()), "by": "experiments/replay_stopping.py",
                       "rule": f"patience_loss_drop={drop}",
                       "why": "the rule's replay of this run's log stops at its recorded step, "
                              "and the rule never changes training: the same run"}
    atomic_write_json(tmp / "provenance.json", prov)
    tmp.rename(target)
    return target


def main(argv):
    del argv
    runs = sorted({Path(p) for pattern in FLAGS.runs for p in glob.glob(pattern)
                   if (Path(p) / "run.log").exists()})
    if not runs:
        sys.exit(f"no run folder with a run.log matches {FLAGS.runs}")
    for run in runs:
        result = report(run, FLAGS.drop)
        if FLAGS.adopt_to and result["same_run"]:
            if not (run / "metrics.json").exists():
                raise SystemExit(f"{run} has no metrics.json: only finished runs are adopted")
            target = adopt(run, Path(FLAGS.adopt_to), FLAGS.drop)
            result["adopted_as"] = str(target) if target else "exists already"
        print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
