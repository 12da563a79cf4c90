"""Choose MIC's settings on the validation split only (issue 14, spec 3.3 and 4).

    python experiments/select.py --dataset=ml-100k --encoder=gru4rec            # wide search
    python experiments/select.py --dataset=ml-1m --encoder=gru4rec \\
        --space=finalists --from_config=configs/mic_ml-100k_gru4rec.flags      # finalists
    python experiments/select.py --quick                                        # smoke (3 runs)

Selection seeds (default 100; each moves the user split to 1230 + seed, as the reports do) are
disjoint from the report seeds 0-4. Every trial is an `experiments/run.py --noevaluate_test`
run: the test split is sealed in it, and nothing here reads a test target (the stage-2
re-evaluations seal it too).

Stage 1 (training knobs, `TRAIN_KNOBS` in order): a coordinate search from the printed values
(run.py's paper preset): for each knob, every alternative value is tried on top of the best
configuration so far and kept if its mean valid recall@50 over the selection seeds is higher.
Checkpoints are selected by U2I valid recall (`--eval_mode=u2i`), so this stage measures what
MIC's training does to the model's own retrieval. `--budget` caps the number of MIC trials.
Stage 2 (inference knobs, `INFERENCE_GRID`): every combination is scored on the valid split of
the stage-1 winner's best checkpoint (one datastore per checkpoint), beside U2I alone; the
winner's `--eval_mode` is `cross_channel` only if some combination beats U2I on validation.

Writes results/selection_DATASET_ENCODER.csv (every trial: stage, knob, flags, valid metrics,
steps, wall time) and configs/mic_DATASET_ENCODER.flags (a flagfile run.py takes; run.py's
default `--mic_preset=selected` reads it). Trials are cached in their run folders, so an
interrupted selection resumes; each finished trial's record (its JSON files and its stage-2 grid,
scored as soon as it finishes) goes to results/runs/select/ (experiments/records.py), so a
selection committed half-way resumes on a fresh machine without re-training what it finished.
"""

import os
import sys

# The repository root replaces this script's folder on the path: experiments/select.py would
# otherwise shadow the standard library's `select` (imported by subprocess, socket, ...).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import csv  # noqa: E402
import hashlib  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

from absl import app, flags  # noqa: E402

from experiments.flagfiles import read_flagfile  # noqa: E402
from experiments.tables import (QUICK_ARGS, REPO, cached_json, log, run_job,  # noqa: E402
                                seed_args)

flags.DEFINE_string("dataset", "ml-100k", "Dataset.")
flags.DEFINE_string("encoder", "gru4rec", "Encoder.")
flags.DEFINE_list("seeds", ["100"], "Selection seeds (disjoint from the report seeds 0-4).")
flags.DEFINE_integer("budget", 24, "Most stage-1 (training) trials, the X reference excluded.")
flags.DEFINE_enum("space", "wide", ["wide", "finalists"], "wide: the coordinate search over "
                  "TRAIN_KNOBS; finalists: the printed values, --from_config and its weights "
                  "x3 and /3 (for ml-1m after an ml-100k search).")
flags.DEFINE_string("from_config", None, "A flagfile of an earlier selection (finalists).")
flags.DEFINE_string("runs_dir", None, "Trial runs (default runs/select/DATASET/ENCODER).")
flags.DEFINE_string("results_dir", str(REPO / "results"), "Where the trial CSV goes.")
flags.DEFINE_string("configs_dir", str(REPO / "configs"), "Where the flagfile goes.")
flags.DEFINE_list("extra_args", [], "Extra run.py flags for every trial (X reference too).")
flags.DEFINE_boolean("quick", False, "Smoke mode: 2 knobs, 40-step runs, a tiny grid.")
FLAGS = flags.FLAGS

# Stage 1. Each knob: (name, [alternatives]); an alternative is a dict of run.py flags merged
# on top of the current best; the first alternative of every knob is the printed value, i.e.
# the empty dict or run.py's default.
TRAIN_KNOBS = [
    ("weights", [{}, {"w_uv": 0.3, "w_vv": 0.3, "w_uu": 0.3},
                 {"w_uv": 0.1, "w_vv": 0.1, "w_uu": 0.1},
                 {"w_uv": 0.03, "w_vv": 0.03, "w_uu": 0.03}]),
    ("mining_start", [{}, {"mining_on_plateau": True}, {"ablation": "-mining"}]),
    ("mined_weight", [{}, {"mined_weight": 1.0}, {"mined_weight": 0.25}]),
    ("temperature", [{}, {"temperature": 0.2}, {"temperature": 0.5}]),
    ("ramp", [{}, {"ramp_steps": 1000}]),
    ("hard_negatives", [{}, {"hard_negatives": "random"}]),
    ("heads", [{}, {"single_channel_heads": False}]),
    ("terms", [{}, {"w_uu": 0.0}, {"w_vv": 0.0}]),
    ("num_positives", [{}, {"num_positives": 2, "num_cross": 2}]),
    ("mic_lambda", [{}, {"mic_lambda": 0.9}]),
]
QUICK_KNOBS = [("weights", TRAIN_KNOBS[0][1][:2])]
# Knobs that only act through the mined lists: with `--ablation=-mining` they are no-ops (a trial
# of one would repeat the current best's run under another name and spend the budget).
MINING_KNOBS = {"mined_weight", "hard_negatives", "num_positives"}


def knob_applies(knob: str, base: dict) -> bool:
    """Whether trying `knob`'s alternatives on top of `base` can change the run."""
    return not (knob in MINING_KNOBS and base.get("ablation") == "-mining")

# Stage 2: inference knobs, every combination (U2I alone is scored beside them).
INFERENCE_GRID = {
    "basic_norm": ["none", "minmax"],
    "mic_score": ["softmax", "max"],
    "lam_mic": [0.0, 0.1, 0.25, 0.5, 1.0],
    "lam_div": [0.0, 0.05, 0.2],
    "m1_m2": [(40, 60), (20, 20), (10, 10)],
    "m_m3": [(30, 50), (10, 10), (5, 5)],
}
QUICK_GRID = {"basic_norm": ["none", "minmax"], "mic_score": ["softmax"], "lam_mic": [0.5],
              "lam_div": [0.0, 0.2], "m1_m2": [(40, 60)], "m_m3": [(30, 50)]}
METRICS = ("recall@50", "ndcg@50", "hit_rate@50", "recall@20", "diversity@50")


def as_args(flag_dict: dict) -> list[str]:
    """run.py arguments of a flag dict (sorted; booleans as --name / --noname)."""
    out = []
    for name, value in sorted(flag_dict.items()):
        if isinstance(value, bool):
            out.append(f"--{name}" if value else f"--no{name}")
        else:
            out.append(f"--{name}={value}")
    return out


def trial_id(flag_dict: dict) -> str:
    return hashlib.sha256(json.dumps(flag_dict, sort_keys=True).encode()).hexdigest()[:10]


class Trials:
    """Runs (or reuses) trials on every selection seed; keeps every result for the CSV."""

    def __init__(self, runs: Path):
        self.runs, self.rows, self.spent = runs, [], 0

    def run(self, flag_dict: dict, plugin: str, stage: str, knob: str) -> float:
        """Mean valid recall@50 over the selection seeds of one configuration."""
        tid = trial_id({"plugin": plugin, **flag_dict})
        scores = []
        for seed in (int(s) for s in FLAGS.seeds):
            out = self.runs / f"{plugin}-{tid}-s{seed}"
            args = [*seed_args(FLAGS.dataset, seed), f"--encoder={FLAGS.encoder}",
                    f"--plugin={plugin}", "--noevaluate_test", "--eval_mode=u2i",
                    "--mic_preset=paper",  # trials start from the printed values
                    *FLAGS.extra_args, *as_args(flag_dict)]
            fresh = not (out / "metrics.json").exists()
            run_job(args + (QUICK_ARGS if FLAGS.quick else []), out, log)
            if plugin == "mic":
                # Stage 2's grid now, while the checkpoint is here: the trial's record (in git,
                # experiments/records.py) then holds it, so a selection resumed on another
                # machine can still score a winner trained on this one.
                grid_result(out, grid_configs(QUICK_GRID if FLAGS.quick else INFERENCE_GRID))
            metrics = json.loads((out / "metrics.json").read_text())
            assert "test" not in metrics, f"{out}: a selection trial must not test"
            valid, run = metrics["valid"], metrics["run"]
            wall = out / "wall_seconds.txt"
            self.rows.append({"stage": stage, "knob": knob, "trial": tid, "seed": seed,
                              "plugin": plugin, "flags": " ".join(as_args(flag_dict)),
                              **{m: valid[m] for m in METRICS}, "steps": run["steps"],
                              "best_step": run["best_step"],
                              "cap_while_improving": run["stopped_at_cap_while_improving"],
                              "wall_seconds": float(wall.read_text()) if wall.exists() else ""})
            scores.append(valid["recall@50"])
            self.spent += fresh and plugin == "mic"
        score = sum(scores) / len(scores)
        log(f"[{stage}] {knob}: {' '.join(as_args(flag_dict)) or '(printed values)'} -> "
            f"valid recall@50 {score:.4f}")
        return score


def finalist_configs() -> list[dict]:
    """The printed values, --from_config's training flags, and its weights x3 and /3."""
    chosen = {k: v for k, v in read_flagfile(Path(FLAGS.from_config)).items()
              if k not in INFERENCE_FLAGS}
    out = [{}, chosen]
    for factor in (3.0, 1 / 3):
        scaled = dict(chosen)
        for w in ("w_uv", "w_vv", "w_uu"):
            scaled[w] = round(float(chosen.get(w, 1.0)) * factor, 4)
        out.append(scaled)
    return out


def stage1(trials: Trials) -> tuple[dict, float]:
    """The coordinate search (or the finalists); returns the best flags and their score."""
    if FLAGS.space == "finalists":
        scored = [(trials.run(f, "mic", "train", "finalist"), i, f)
                  for i, f in enumerate(finalist_configs())]
        best_score, _, best = max(scored, key=lambda t: (t[0], -t[1]))
        return best, best_score
    best, best_score = {}, trials.run({}, "mic", "train", "printed")
    for knob, alternatives in (QUICK_KNOBS if FLAGS.quick else TRAIN_KNOBS):
        base = dict(best)
        if not knob_applies(knob, base):
            log(f"skipping {knob}: the best so far has no mining, so it changes nothing")
            continue
        for alt in alternatives[1:]:
            if trials.spent >= FLAGS.budget:
                log(f"budget of {FLAGS.budget} MIC trials spent; stopping stage 1 at {knob}")
                return best, best_score
            candidate = {**base, **alt}
            score = trials.run(candidate, "mic", "train", knob)
            if score > best_score:
                best, best_score = candidate, score
    return best, best_score


INFERENCE_FLAGS = ("basic_norm", "mic_score", "lam_mic", "lam_div", "m1", "m2", "m_history",
                   "m3", "eval_mode")


def grid_configs(grid: dict) -> list[dict]:
    out = []
    for values in itertools.product(*grid.values()):
        g = dict(zip(grid, values))
        (m1, m2), (m, m3) = g.pop("m1_m2"), g.pop("m_m3")
        out.append({**g, "m1": m1, "m2": m2, "m_history": m, "m3": m3})
    return out


def grid_result(run_dir: Path, configs: list[dict]) -> dict:
    """Valid metrics of every inference config on a trial's best checkpoint, and its U2I valid
    metrics; cached in the trial's reeval/selection-grid.json (so in its record)."""
    def compute():
        from mic_tf.evaluation.checkpoint import load_run
        from mic_tf.inference.evaluator import CrossChannelEvaluator
        from mic_tf.inference.score import InferenceConfig
        from mic_tf.models.losses import score_geometry

        run = load_run(run_dir, seal_test=True)  # stage 2 reads validation targets only
        top_n = run.config.train.top_n
        infer = [InferenceConfig(top_n=top_n, **{"m" if k == "m_history" else k: v
                                                 for k, v in c.items()}) for c in configs]
        evaluator = CrossChannelEvaluator(run.ds, run.config.train.maxlen, infer[0],
                                          item_score=score_geometry(run.config.basic_loss))
        valid = run.ds.eval_split("valid", run.config.train.maxlen)
        return {"grid": evaluator.sweep(run.model, valid, infer),
                "u2i": json.loads((run_dir / "metrics.json").read_text())["valid"]}
    result = cached_json(run_dir / "reeval" / "selection-grid.json", compute)
    if len(result["grid"]) != len(configs):
        raise RuntimeError(f"{run_dir}/reeval/selection-grid.json scores {len(result['grid'])} "
                           f"inference configs, this grid has {len(configs)}: it was made with "
                           f"another grid; delete it (the checkpoint re-scores it)")
    return result


def stage2(best: dict, trials: Trials) -> tuple[dict, float, float]:
    """Scores the inference grid on the winner's checkpoints (valid only); returns the best
    inference flags (with eval_mode), its score and U2I's score."""
    configs = grid_configs(QUICK_GRID if FLAGS.quick else INFERENCE_GRID)
    tid = trial_id({"plugin": "mic", **best})
    totals = [0.0] * len(configs)
    u2i = 0.0
    for seed in (int(s) for s in FLAGS.seeds):
        run_dir = trials.runs / f"mic-{tid}-s{seed}"
        result = grid_result(run_dir, configs)
        for i, (cfg, metrics) in enumerate(zip(configs, result["grid"])):
            totals[i] += metrics["recall@50"] / len(FLAGS.seeds)
            trials.rows.append({"stage": "inference", "knob": "grid", "trial": tid,
                                "seed": seed, "plugin": "mic",
                                "flags": " ".join(as_args({**best, **cfg})),
                                **{m: metrics[m] for m in METRICS}, "steps": "",
                                "best_step": "", "cap_while_improving": "",
                                "wall_seconds": ""})
        u2i += result["u2i"]["recall@50"] / len(FLAGS.seeds)
    i = max(range(len(configs)), key=lambda j: (totals[j], -j))
    chosen = dict(configs[i])
    chosen["eval_mode"] = "cross_channel" if totals[i] > u2i else "u2i"
    log(f"[inference] best grid point {as_args(configs[i])}: valid recall@50 {totals[i]:.4f} "
        f"(U2I alone {u2i:.4f}) -> --eval_mode={chosen['eval_mode']}")
    return chosen, totals[i], u2i


def write_outputs(trials: Trials, flags_out: dict, summary: list[str]) -> None:
    suffix = "-quick" if FLAGS.quick else ""
    name = f"{FLAGS.dataset}_{FLAGS.encoder}{suffix}"
    csv_path = Path(FLAGS.results_dir) / f"selection_{name}.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(trials.rows[0]))
        writer.writeheader()
        writer.writerows(trials.rows)
    flag_path = Path(FLAGS.configs_dir) / f"mic_{name}.flags"
    flag_path.parent.mkdir(parents=True, exist_ok=True)
    flag_path.write_text("\n".join([*(f"# {s}" for s in summary), *as_args(flags_out)]) + "\n")
    print(json.dumps({"csv": str(csv_path), "flagfile": str(flag_path)}))


def main(argv):
    del argv
    if FLAGS.space == "finalists" and not FLAGS.from_config:
        sys.exit("error: --space=finalists needs --from_config=FLAGFILE (an earlier selection)")
    runs = Path(FLAGS.runs_dir or REPO / "runs" / "select" / FLAGS.dataset / FLAGS.encoder)
    if FLAGS.quick:
        runs = runs.with_name(runs.name + "-quick")
    trials = Trials(runs)
    x_score = trials.run({}, "none", "reference", "X")
    best, score = stage1(trials)
    inference, inf_score, u2i = stage2(best, trials)
    summary = [f"selected by experiments/select.py on {FLAGS.dataset}, encoder {FLAGS.encoder}, "
               f"selection seeds {','.join(FLAGS.seeds)} (valid split only), space {FLAGS.space}",
               f"valid recall@50: X {x_score:.4f}; X + MIC stage 1 (U2I) {score:.4f}; "
               f"stage 2 best cross-channel {inf_score:.4f} vs U2I {u2i:.4f}",
               f"{trials.spent} new MIC training trials this call"]
    write_outputs(trials, {**best, **inference}, summary)


if __name__ == "__main__":
    app.run(main)
