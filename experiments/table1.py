"""Table 1 of the paper: every encoder X against X + MIC, over several seeds, with paired tests.

    python experiments/table1.py --dataset=ml-1m         # X, X + MIC (paper's values), X + MIC (selected)
    python experiments/table1.py --dataset=ml-100k --arms=none,mic_selected
    python experiments/table1.py --arms=none             # the baselines only (see baselines.py)
    python experiments/table1.py --quick                 # one seed, a few steps (smoke)

A seed changes the model initialisation *and* the 80/10/10 user split (`--split_seed=1230+seed`),
so the spread covers both. The arms (`tables.ARMS`): X (`--plugin=none`), X + MIC with the
paper's printed values (`--mic_preset=paper`) and X + MIC with the settings selected on the
validation split by `experiments/select.py` (`configs/mic_DATASET_ENCODER.flags`, selection seeds
disjoint from these). Every run is then evaluated both ways (spec 5): U2I with the model's own
score, and MIC's cross-channel inference (X's checkpoints with the selected inference settings,
so that X and X + MIC share the inference), which separates what MIC's training does from what
its inference does. Finished runs and re-evaluations are skipped, so an interrupted table
resumes; finished runs' records in git (results/runs/table1/, `experiments/records.py`) are
restored instead of re-trained on a fresh machine. Writes results/table1_DATASET.{csv,md}: the CSV in long form (encoder, arm, way,
metric, mean, std, n), the Markdown one table per way, with the relative gain of each MIC arm
over X and a two-sided paired t-test over seeds, beside the paper's ML-1M values.
"""

import json
import os
import sys

# The repository root replaces this script's folder on the path: experiments/select.py would
# otherwise shadow the standard library's `select` (imported by subprocess, socket, ...).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from experiments.flagfiles import read_flagfile  # noqa: E402
from experiments.records import MissingCheckpoint  # noqa: E402
from experiments.tables import (ARM_NAMES, ARMS, QUICK_ARGS, REPO, arm_args,  # noqa: E402
                                arm_dir, both_ways, default_runs_dir, fmt, log, metric_names,
                                paired_test, report_path, run_jobs, seed_args, seeds_to_run,
                                selected_config, summarise, write_csv)

flags.DEFINE_string("dataset", "ml-100k", "Dataset.")
flags.DEFINE_list("encoders", ["youtube_dnn", "gru4rec", "comirec_dr", "comirec_sa"], "Encoders.")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds (each also moves the user split).")
flags.DEFINE_list("arms", None, "Arms among none, mic_paper, mic_selected (default: all three on "
                  "ml-1m, none and mic_selected elsewhere).")
flags.DEFINE_string("runs_dir", None, "Where the runs go (default runs/table1/DATASET).")
flags.DEFINE_string("results_dir", str(REPO / "results"), "Where the tables go.")
flags.DEFINE_string("configs_dir", str(REPO / "configs"), "Where the selected settings are.")
flags.DEFINE_string("report_name", "table1", "Base name of the tables written "
                    "(RESULTS_DIR/NAME_DATASET.{csv,md}): another name keeps a table of part of "
                    "the encoders beside the full one.")
flags.DEFINE_boolean("quick", False, "Smoke mode: first seed only, 40 steps, valid every 20.")
flags.DEFINE_list("extra_args", [], "Extra run.py flags for every run, e.g. --basic_loss=logistic.")
flags.DEFINE_list("plugins", None, "Deprecated spelling of --arms: none -> none, mic -> "
                  "mic_selected.")
FLAGS = flags.FLAGS

WAYS = {"u2i": "U2I with the model's own score (ComiRec's evaluation)",
        "cross_channel": "MIC's cross-channel inference (U2I + U2U + I2I, eq. 3-5)"}
SHOWN = ("recall@20", "recall@50", "hit_rate@20", "hit_rate@50", "ndcg@50", "diversity@50")
# The MIC paper's Table 1, Movielens rows, in % (X, then X + MIC). ComiRec: DR or SA unsaid.
PAPER_ML1M = {
    "youtube_dnn": ({"recall@20": 12.251, "recall@50": 23.028, "hit_rate@20": 71.688,
                     "hit_rate@50": 87.245},
                    {"recall@20": 12.508, "recall@50": 23.875, "hit_rate@20": 73.841,
                     "hit_rate@50": 88.907}),
    "gru4rec": ({"recall@20": 12.993, "recall@50": 24.447, "hit_rate@20": 72.344,
                 "hit_rate@50": 89.705},
                {"recall@20": 13.012, "recall@50": 25.003, "hit_rate@20": 74.308,
                 "hit_rate@50": 90.111}),
    "comirec": ({"recall@20": 13.001, "recall@50": 25.043, "hit_rate@20": 73.772,
                 "hit_rate@50": 90.138},
                {"recall@20": 13.322, "recall@50": 25.927, "hit_rate@20": 76.551,
                 "hit_rate@50": 91.391}),
}
PAPER_ROW = {"youtube_dnn": "youtube_dnn", "gru4rec": "gru4rec", "comirec_dr": "comirec",
             "comirec_sa": "comirec"}


def arms() -> list[str]:
    if FLAGS.arms:
        chosen = FLAGS.arms
    elif FLAGS.plugins:
        chosen = [{"none": "none", "mic": "mic_selected"}[p] for p in FLAGS.plugins]
    else:
        chosen = (["none", "mic_paper", "mic_selected"] if FLAGS.dataset == "ml-1m"
                  else ["none", "mic_selected"])
    unknown = [a for a in chosen if a not in ARMS]
    if unknown:
        raise SystemExit(f"error: unknown arm(s) {unknown}; choose among {list(ARMS)}")
    return [a for a in ARMS if a in chosen]


def cross_flags(encoder: str) -> dict | None:
    """The inference flags X's checkpoints are evaluated with: the selected ones if any."""
    from experiments.flagfiles import selected_config as path_of

    path = path_of(FLAGS.dataset, encoder, FLAGS.configs_dir)
    if not path.exists():
        return None
    values = read_flagfile(path)
    keep = ("k1", "m1", "m2", "m_history", "m3", "lam_mic", "lam_div", "basic_norm", "mic_score")
    return {k: values[k] for k in keep if k in values}


def run_grid(chosen: list[str]) -> dict:
    seeds = seeds_to_run(FLAGS.seeds, FLAGS.quick)
    runs = default_runs_dir(FLAGS.runs_dir, FLAGS.dataset, FLAGS.quick)
    if "mic_selected" in chosen:
        for encoder in FLAGS.encoders:
            selected_config(FLAGS.dataset, encoder, FLAGS.configs_dir)
    jobs = {}
    for seed in seeds:
        for encoder in FLAGS.encoders:
            for arm in chosen:
                args = [*seed_args(FLAGS.dataset, seed), f"--encoder={encoder}",
                        *arm_args(arm, FLAGS.configs_dir), *FLAGS.extra_args]
                jobs[encoder, arm, seed] = (args + (QUICK_ARGS if FLAGS.quick else []),
                                            arm_dir(runs, encoder, arm, seed))
    key_of = {out: key for key, (_, out) in jobs.items()}
    ways_of = {}

    def evaluate(out):  # both ways, as soon as the run is finished: cached in its record
        encoder, arm, seed = key_of[out]
        log(f"evaluating {out.name} both ways")
        try:
            ways_of[out] = both_ways(out, cross_flags(encoder) if arm == "none" else None)
        except MissingCheckpoint as e:
            # A record restored without its checkpoint, asked for a re-evaluation it does not
            # hold (X's cross-channel way after a re-selection changed the inference settings):
            # its own way is reported, the other is listed as missing in the report.
            log(f"warning: {e}")
            metrics = json.loads((out / "metrics.json").read_text())
            own = metrics["run"].get("eval_mode") or (
                "cross_channel" if metrics["run"]["plugin"] == "mic" else "u2i")
            ways_of[out] = {own: metrics["test"]}
            MISSING.extend((encoder, arm, w, seed, out.name) for w in WAYS if w != own)

    run_jobs(list(jobs.values()), log, after=evaluate)
    results = {}
    for (encoder, arm, seed), (_, out) in jobs.items():
        for way, metrics in ways_of[out].items():
            results[encoder, arm, way, seed] = metrics
    return results


# (encoder, arm, way, seed, run folder) of every re-evaluation a restored record could not give
MISSING: list[tuple] = []


def values(results: dict, encoder: str, arm: str, way: str, metric: str, seeds) -> list[float]:
    """The metric over the seeds that have it (all, unless a re-evaluation is MISSING)."""
    return [results[encoder, arm, way, s][metric] for s in seeds
            if (encoder, arm, way, s) in results]


def paired(results: dict, encoder: str, arm: str, way: str, metric: str, seeds):
    """X's and the arm's values over the seeds both have."""
    both = [s for s in seeds if (encoder, "none", way, s) in results
            and (encoder, arm, way, s) in results]
    return (values(results, encoder, "none", way, metric, both),
            values(results, encoder, arm, way, metric, both))


def gain_cell(base: list[float], other: list[float]) -> str:
    gain = (sum(other) - sum(base)) / max(sum(base), 1e-12) * 100
    p = paired_test(base, other)
    return f"{gain:+.1f}% (p={p:.3f})" if p == p else f"{gain:+.1f}%"


def write_tables(results: dict, chosen: list[str], path_csv, path_md) -> None:
    seeds = sorted({k[3] for k in results})
    encoders = [e for e in FLAGS.encoders if any(k[0] == e for k in results)]
    rows = []
    for encoder in encoders:
        for arm in chosen:
            for way in WAYS:
                for metric in metric_names():
                    found = values(results, encoder, arm, way, metric, seeds)
                    if not found:
                        continue
                    mean, std, n = summarise(found)
                    rows.append({"encoder": encoder, "arm": arm, "way": way, "metric": metric,
                                 "mean": mean, "std": std, "n": n})
    write_csv(rows, path_csv)
    lines = [f"# Table 1 on {FLAGS.dataset} (test split, %, mean ± std over {len(seeds)} "
             f"seed(s): {', '.join(map(str, seeds))})", "",
             "Arms: " + "; ".join(f"{ARM_NAMES[a]} (`{' '.join(ARMS[a][1])}`)" for a in chosen)
             + f". Extra run.py flags for every run: `{' '.join(FLAGS.extra_args) or 'none'}`. "
             "NDCG is the standard NDCG (`ndcg`). Gain = relative change of the mean over X in "
             "the same way; p = two-sided paired t-test over seeds (same seed = same split and "
             "initialisation). Each run's checkpoint is the one its own evaluation selected on "
             "valid recall@50; the other way re-evaluates that checkpoint."]
    for way, title in WAYS.items():
        lines += ["", f"## {title}", "", "| model | " + " | ".join(SHOWN) + " |",
                  "|---|" + "---|" * len(SHOWN)]
        for encoder in encoders:
            for arm in chosen:
                cells = [mean_cell(values(results, encoder, arm, way, c, seeds), len(seeds))
                         for c in SHOWN]
                lines.append(f"| {encoder} — {ARM_NAMES[arm]} | " + " | ".join(cells) + " |")
            for arm in chosen:
                if arm == "none" or "none" not in chosen:
                    continue
                pairs = [paired(results, encoder, arm, way, c, seeds) for c in SHOWN]
                cells = [gain_cell(base, other) if base else "—" for base, other in pairs]
                lines.append(f"| gain of {ARM_NAMES[arm]} | " + " | ".join(cells) + " |")
    if MISSING:
        lines += ["", "## Missing re-evaluations", "",
                  f"**Incomplete:** {len(MISSING)} re-evaluation(s) need a checkpoint their "
                  "record (results/runs/) does not hold; the cells above use the seeds that "
                  "have them (n shown where it is not every seed), gains pair those seeds only. "
                  "To fill them, move the runs' records and folders aside and re-run this "
                  "command (the runs are re-trained).", ""]
        lines += [f"- {enc}, {ARM_NAMES[arm]}, seed {seed}: the {way} way ({name})"
                  for enc, arm, way, seed, name in sorted(MISSING)]
    if FLAGS.dataset == "ml-1m":
        lines += ["", "## The paper's Table 1, Movielens (%)", "",
                  "| encoder | X R@20 / R@50 / HR@20 / HR@50 | X + MIC R@20 / R@50 / HR@20 / HR@50 |",
                  "|---|---|---|"]
        for encoder in encoders:
            x, mic = PAPER_ML1M[PAPER_ROW[encoder]]
            cell = lambda d: " / ".join(f"{d[m]:.2f}" for m in  # noqa: E731
                                        ("recall@20", "recall@50", "hit_rate@20", "hit_rate@50"))
            lines.append(f"| {encoder} | {cell(x)} | {cell(mic)} |")
    path_md.write_text("\n".join(lines) + "\n")


def mean_cell(found: list[float], seeds: int) -> str:
    if not found:
        return "—"
    text = fmt(*summarise(found)[:2])
    return text if len(found) == seeds else f"{text} (n={len(found)})"


def main(argv):
    del argv
    chosen = arms()
    path = lambda ext: report_path(FLAGS.results_dir, FLAGS.report_name,  # noqa: E731
                                   FLAGS.dataset, FLAGS.quick, ext)
    write_tables(run_grid(chosen), chosen, path("csv"), path("md"))
    print(path("md"))


if __name__ == "__main__":
    app.run(main)
