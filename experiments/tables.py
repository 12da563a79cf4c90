"""Shared machinery of the table runners: run a grid of `run.py` jobs (skipping finished ones) and
aggregate their metrics.json files into long-form statistics with paired significance tests."""

from __future__ import annotations

import csv
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from experiments import flagfiles, records

REPO = Path(__file__).resolve().parents[1]
METRICS = ("recall", "ndcg", "hit_rate", "diversity")
CUTOFFS = (20, 50)


def run_job(args: list[str], out_dir: Path, log, wait: bool = True) -> bool:
    """Runs `experiments/run.py` unless `out_dir/metrics.json` exists.

    Runners may work on one grid from several processes (one per core): a run is claimed with
    an exclusive lock on `out_dir/run.lock`. With `wait=False` a run another process holds is
    left alone (returns False, retry later); with `wait=True` this waits for it. A run whose
    record is in git (`experiments/records.py`) is restored instead of re-trained.
    """
    records.restore(out_dir)
    if (out_dir / "metrics.json").exists():
        check_finished_run(args, out_dir)
        records.save(out_dir)  # a run finished before records existed (or by an older runner)
        return True
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "run.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            return False
        if (out_dir / "metrics.json").exists():  # finished by the process we waited for
            check_finished_run(args, out_dir)
            return True
        cmd = [sys.executable, str(REPO / "experiments" / "run.py"), *args,
               f"--output_dir={out_dir}", "--verbose=2"]
        log("running: " + " ".join(cmd[1:]))
        start = time.time()
        with open(out_dir / "run.log", "a") as f:
            result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT,
                                    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        if result.returncode != 0:
            raise RuntimeError(f"run failed (exit {result.returncode}); see {out_dir / 'run.log'}")
        # Wall time of the (last) attempt, for the reports' budget lines; not in metrics.json.
        (out_dir / "wall_seconds.txt").write_text(f"{time.time() - start:.1f}\n")
        records.save(out_dir)
    return True


def same_value(stored, given: str | bool) -> bool:
    """Whether a flags.json value (typed) equals a command-line value (a string or a bool)."""
    if isinstance(stored, bool):
        return stored == (given if isinstance(given, bool) else given.lower() in ("true", "1"))
    if isinstance(given, bool):
        return False
    if stored is None:
        return given in ("", "None")
    if isinstance(stored, (int, float)):
        try:
            return float(given) == float(stored)
        except ValueError:
            return False
    if isinstance(stored, list):
        return given.split(",") == [str(v) for v in stored]
    return str(stored) == given


def expected_flags(args: list[str]) -> dict:
    """The settings a run of `args` uses that flags.json can show: the arguments themselves,
    and with `--plugin=mic` and the default `--mic_preset=selected`, the selected flagfile's
    values for the flags the arguments leave out (as run.py applies them)."""
    given = dict(flagfiles.parse_flag(a) for a in args)
    if given.get("plugin") != "mic" or given.get("mic_preset", "selected") != "selected":
        return given
    configs = given.get("configs_dir", flagfiles.CONFIGS)
    path = flagfiles.selected_config(given.get("dataset", ""), given.get("encoder", ""), configs)
    chosen = flagfiles.read_flagfile(path) if path.exists() else {}
    return {**chosen, **given}


def preset_set_changes(args: list[str], stored: dict) -> dict:
    """Flags the selected flagfile set for the stored run and no longer sets (nor `args`): today's
    run leaves them at run.py's default, which `expected_flags` cannot see (a flag the file sets
    now and did not then is compared by its value). Runs recorded before flags.json kept the
    file's lines ("mic_preset_values") are compared by the values alone."""
    before = stored.get("mic_preset_values")
    if before is None:
        return {}
    given = dict(flagfiles.parse_flag(a) for a in args)
    now = {k: v for k, v in expected_flags(args).items() if k not in given}
    out = {}
    for name in sorted(set(before) - set(given)):
        if name not in now:
            out[name] = (f"{before[name]!r} from the flagfile", "run.py's default")
    return out


# configs_dir too: what it points at is compared through the flagfile's values
REUSE_IGNORED = (*flagfiles.PLACE_FLAGS, "configs_dir")


def check_finished_run(args: list[str], out_dir: Path) -> None:
    """A finished run is reused only if it was made with the settings asked for now: a changed
    selected flagfile (a re-selection) or runner must not silently reuse an old run."""
    stored_path = out_dir / "flags.json"
    if not stored_path.exists():
        raise RuntimeError(f"{out_dir} holds metrics.json but no flags.json, so it cannot be "
                           f"checked against these settings; move the folder aside to re-run")
    stored = {**flagfiles.ADDED_FLAGS, **json.loads(stored_path.read_text())}
    changed = {name: (stored[name], value) for name, value in expected_flags(args).items()
               if name not in REUSE_IGNORED and name in stored
               and not same_value(stored[name], value)}
    changed.update(preset_set_changes(args, stored))
    if changed:
        detail = ", ".join(f"{k}: {a!r} in the run, {b!r} now" for k, (a, b) in
                           sorted(changed.items()))
        raise RuntimeError(f"{out_dir} holds a finished run made with other settings ({detail}); "
                           f"move the folder aside (or delete it) to re-run with the new ones, "
                           f"or restore the settings it was made with")


def run_jobs(jobs: list[tuple[list[str], Path]], log, after=None) -> None:
    """Runs every (args, out_dir) job; jobs another runner holds are done last (waiting).

    `after(out_dir)`, if given, runs as soon as each job is finished (by this runner or found
    finished): the reports pass their re-evaluations, so a grid stopped half-way leaves
    complete records of the runs it finished, not records waiting on the checkpoints."""
    after = after or (lambda out: None)
    deferred = []
    for args, out in jobs:
        if run_job(args, out, log, wait=False):
            after(out)
        else:
            deferred.append((args, out))
    for args, out in deferred:
        run_job(args, out, log, wait=True)
        after(out)


QUICK_ARGS = ["--max_steps=40", "--eval_every=20", "--mining_every=20", "--batch_size=64"]

# The arms of the reports: (run-folder tag, run.py flags). `mic_selected` uses the settings
# chosen on validation by experiments/select.py (configs/mic_DATASET_ENCODER.flags), `mic_paper`
# the paper's printed values.
ARMS = {
    "none": ("none", ["--plugin=none"]),
    "mic_paper": ("mic-paper", ["--plugin=mic", "--mic_preset=paper"]),
    "mic_selected": ("mic-sel", ["--plugin=mic", "--mic_preset=selected"]),
}
ARM_NAMES = {"none": "X", "mic_paper": "X + MIC (paper's values)",
             "mic_selected": "X + MIC (selected on valid)"}


def selected_config(dataset: str, encoder: str, configs_dir) -> Path:
    """The flagfile of the selected settings; exits with the command that makes it if missing."""
    path = flagfiles.selected_config(dataset, encoder, configs_dir)
    if not path.exists():
        raise SystemExit(f"error: no selected MIC settings for {dataset} / {encoder} ({path}); "
                         f"run `python experiments/select.py --dataset={dataset} "
                         f"--encoder={encoder}` first, or leave the mic_selected arm out")
    return path


def arm_args(arm: str, configs_dir) -> list[str]:
    """run.py flags of an arm (`--configs_dir` for the selected one)."""
    extra = [f"--configs_dir={configs_dir}"] if arm == "mic_selected" else []
    return [*ARMS[arm][1], *extra]


def arm_dir(runs: Path, encoder: str, arm: str, seed: int, variant: str = "full") -> Path:
    """`ENC-none-sS`, `ENC-mic-paper-sS`, `ENC-mic-sel-sS`; a training ablation such as `-uu`
    of an arm: `ENC-mic-sel-uu-sS`."""
    suffix = "" if variant == "full" else variant
    return runs / f"{encoder}-{ARMS[arm][0]}{suffix}-s{seed}"


def seed_args(dataset: str, seed: int) -> list[str]:
    """run.py flags of one seed: it moves both the initialisation and the user split."""
    split_seed = 1230 + seed
    data_dir = REPO / "datasets" / "data" / f"split-{split_seed}"
    return [f"--dataset={dataset}", f"--seed={seed}", f"--split_seed={split_seed}",
            f"--data_dir={data_dir}"]


def default_runs_dir(runs_dir, dataset: str, quick: bool) -> Path:
    """Where Table 1, Table 4 and the figures keep their runs (shared: Table 4's `full` row and
    the figures reuse Table 1's runs of the same seeds)."""
    runs = Path(runs_dir) if runs_dir else REPO / "runs" / "table1" / dataset
    return runs.with_name(runs.name + "-quick") if quick else runs


def short_key(settings: dict) -> str:
    """10 hex digits naming a dict of settings (cache file names of re-evaluations)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def inference_key(cfg) -> str:
    """`short_key` of an inference config with its lam_div (Figure 4's axis) left out."""
    return short_key({k: v for k, v in dataclasses.asdict(cfg).items() if k != "lam_div"})


def cached_json(path: Path, compute) -> dict:
    """`compute()` once, cached as JSON at `path` (written atomically), so re-evaluations of
    finished runs are skipped when a report is regenerated."""
    from mic_tf.utils.io import atomic_write_json

    if path.exists():
        return json.loads(path.read_text())
    run_dir = path.parent.parent if path.parent.name == "reeval" else None  # RUN/reeval/NAME
    if run_dir is not None:
        records.require_checkpoint(run_dir, path.name)
    value = compute()
    atomic_write_json(path, value)
    if run_dir is not None:
        records.save(run_dir)  # the record gains the new re-evaluation
    return value


TRAINED_VARIANTS = ("full", "-uu", "-ui", "-ii", "-perturbation", "-mining")


def check_trained_rows(rows: list[str]) -> list[str]:
    """Validates a `--trained` list of Table 4 / Figure 5 rows (the trained variants)."""
    allowed = ("baseline",) + TRAINED_VARIANTS
    unknown = [r for r in rows if r not in allowed]
    if unknown or not {"baseline", "full"} <= set(rows):
        raise SystemExit(f"error: --trained={','.join(rows)}: rows are among "
                         f"{', '.join(allowed)} and must include baseline and full "
                         f"(the comparisons are against them)")
    return [r for r in allowed if r in rows]


def variant_dir(runs: Path, encoder: str, variant: str, seed: int,
                arm: str = "mic_selected") -> Path:
    """`baseline` = Table 1's X run, `full` = its run of `arm`, an ablation such as `-uu` = that
    arm's run with the ablation (see `arm_dir`)."""
    if variant == "baseline":
        return arm_dir(runs, encoder, "none", seed)
    return arm_dir(runs, encoder, arm, seed, variant)


def variant_jobs(dataset: str, encoder: str, seeds, runs: Path, quick: bool, extra_args,
                 variants=("baseline",) + TRAINED_VARIANTS, arm: str = "mic_selected",
                 configs_dir=None) -> dict:
    """{(variant, seed): (run.py args, run dir)} of the trained variants of Table 4 / Figure 5."""
    jobs = {}
    for seed in seeds:
        for variant in variants:
            this_arm = "none" if variant == "baseline" else arm
            args = [*seed_args(dataset, seed), f"--encoder={encoder}",
                    *arm_args(this_arm, configs_dir), *extra_args]
            if variant not in ("baseline", "full"):
                args.append(f"--ablation={variant}")
            jobs[variant, seed] = (args + (QUICK_ARGS if quick else []),
                                   variant_dir(runs, encoder, variant, seed, arm))
    return jobs


def both_ways(run_dir: Path, cross_flags: dict | None = None) -> dict:
    """A finished run's test metrics ranked both ways (spec 5): `u2i` (the model's own score over
    the catalogue) and `cross_channel` (MIC's inference). The run's own way is its metrics.json;
    the other is a re-evaluation of the same best checkpoint, cached in `reeval/`.

    Args:
      run_dir: the run.
      cross_flags: inference flags (`lam_mic`, `m1`, ...; run.py names) for the cross-channel
        way of a run that was not evaluated that way (X runs: the selected MIC settings, so X
        and X + MIC share the inference); None: the run's own inference settings.
    """
    from mic_tf.evaluation.checkpoint import evaluate_cross_channel, evaluate_u2i, load_run

    metrics = json.loads((run_dir / "metrics.json").read_text())
    own = metrics["run"].get("eval_mode") or ("cross_channel" if metrics["run"]["plugin"] == "mic"
                                              else "u2i")
    out = {own: metrics["test"]}
    if own != "u2i":
        out["u2i"] = cached_json(run_dir / "reeval" / "test-u2i.json",
                                 lambda: evaluate_u2i(load_run(run_dir)))
    if own != "cross_channel" or cross_flags:
        def compute():
            run = load_run(run_dir)
            base = dataclasses.asdict(run.config.inference)
            base.update(inference_fields(cross_flags or {}))
            return evaluate_cross_channel(run, InferenceConfig(**{**base, "top_n":
                                                                   run.config.train.top_n}))
        from mic_tf.inference.score import InferenceConfig
        name = ("test-cross_channel.json" if not cross_flags
                else f"test-cross-{short_key(cross_flags)}.json")
        out["cross_channel"] = cached_json(run_dir / "reeval" / name, compute)
    return out


# run.py's inference flags -> InferenceConfig fields
INFERENCE_FIELDS = {"k1": "k1", "m1": "m1", "m2": "m2", "m_history": "m", "m3": "m3",
                    "lam_mic": "lam_mic", "lam_div": "lam_div", "basic_norm": "basic_norm",
                    "mic_score": "mic_score"}


def inference_fields(flag_values: dict) -> dict:
    """The InferenceConfig fields of a dict of run.py flag values (strings from a flagfile)."""
    out = {}
    for flag, field in INFERENCE_FIELDS.items():
        if flag in flag_values:
            value = flag_values[flag]
            if field in ("basic_norm", "mic_score"):
                out[field] = str(value)
            elif field in ("lam_mic", "lam_div"):
                out[field] = float(value)
            else:
                out[field] = None if value in (None, "None") else int(value)
    return out


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def seeds_to_run(seeds, quick: bool) -> list[int]:
    """The `--seeds` flag as ints; `--quick` keeps the first one."""
    return [int(s) for s in seeds][:1 if quick else None]


def report_path(results_dir, name: str, dataset: str, quick: bool, ext: str) -> Path:
    """results/NAME_DATASET[-quick].EXT"""
    return Path(results_dir) / f"{name}_{dataset}{'-quick' if quick else ''}.{ext}"


def write_csv(rows: list[dict], path: Path) -> None:
    """Rows of dicts (the first row's keys are the header), parent folders created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


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
