"""Table 1 of the paper: every encoder X vs X + MIC, over several seeds, with paired tests.

    python experiments/table1.py                       # ml-100k, 4 encoders x {none, mic} x 5 seeds
    python experiments/table1.py --quick               # one seed, a few steps (the test suite's smoke)
    python experiments/table1.py --dataset=ml-1m --seeds=0,1,2

A seed changes the model initialisation *and* the 80/10/10 user split (`--split_seed=1230+seed`),
so the spread covers both. Finished runs (their metrics.json exists) are skipped, so an
interrupted table resumes. Writes results/table1_DATASET.{csv,md}: the CSV in long form
(encoder, plugin, metric, mean, std, n), the Markdown laid out like the paper's Table 1 with the
relative gain of X + MIC over X and a paired t-test over seeds per cell.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from experiments.tables import (QUICK_ARGS, REPO, default_runs_dir, fmt,  # noqa: E402
                                load_test_metrics, log, metric_names, paired_test, report_path,
                                run_jobs, seed_args, seeds_to_run, summarise, write_csv)

flags.DEFINE_string("dataset", "ml-100k", "Dataset.")
flags.DEFINE_list("encoders", ["youtube_dnn", "gru4rec", "comirec_dr", "comirec_sa"], "Encoders.")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds (each also moves the user split).")
flags.DEFINE_string("runs_dir", None, "Where the runs go (default runs/table1/DATASET).")
flags.DEFINE_string("results_dir", str(REPO / "results"), "Where the tables go.")
flags.DEFINE_boolean("quick", False, "Smoke mode: first seed only, 40 steps, valid every 20.")
flags.DEFINE_list("extra_args", [], "Extra run.py flags for every run, e.g. --basic_loss=logistic.")
flags.DEFINE_list("plugins", ["none", "mic"], "Arms to run (`--plugins=none`: the baselines only; "
                  "experiments/baselines.py adds MostPopular and item-CF beside them).")
FLAGS = flags.FLAGS

PLUGINS = ("none", "mic")
SHOWN = ("recall", "ndcg", "hit_rate")


def run_grid(log) -> dict:
    seeds = seeds_to_run(FLAGS.seeds, FLAGS.quick)
    runs = default_runs_dir(FLAGS.runs_dir, FLAGS.dataset, FLAGS.quick)
    jobs = {}
    for seed in seeds:
        for encoder in FLAGS.encoders:
            for plugin in FLAGS.plugins:
                args = [*seed_args(FLAGS.dataset, seed), f"--encoder={encoder}",
                        f"--plugin={plugin}", *FLAGS.extra_args]
                jobs[encoder, plugin, seed] = (args + (QUICK_ARGS if FLAGS.quick else []),
                                               runs / f"{encoder}-{plugin}-s{seed}")
    run_jobs(list(jobs.values()), log)
    return {key: load_test_metrics(out) for key, (_, out) in jobs.items()}


def write_tables(results: dict, path_csv, path_md) -> None:
    seeds = sorted({s for _, _, s in results})
    encoders = [e for e in FLAGS.encoders if any(k[0] == e for k in results)]
    plugins = [p for p in PLUGINS if p in FLAGS.plugins]
    rows = []
    for encoder in encoders:
        for plugin in plugins:
            for metric in metric_names():
                mean, std, n = summarise([results[encoder, plugin, s][metric] for s in seeds])
                rows.append({"encoder": encoder, "plugin": plugin, "metric": metric,
                             "mean": mean, "std": std, "n": n})
    write_csv(rows, path_csv)
    cols = [f"{m}@{k}" for k in (20, 50) for m in SHOWN] + ["diversity@50"]
    lines = [f"# Table 1 on {FLAGS.dataset}: X vs X + MIC (test split, %, mean ± std over "
             f"{len(seeds)} seed(s): {', '.join(map(str, seeds))})", "",
             "NDCG is the standard NDCG (`ndcg`); run.py's defaults (sampled softmax) plus "
             f"`{' '.join(FLAGS.extra_args) or 'no extra flags'}` for every row. Gain = relative "
             "change of the mean; p = two-sided paired t-test over seeds (same seed = same split "
             "and initialisation for X and X + MIC).", "",
             "| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for encoder in encoders:
        for plugin in plugins:
            name = encoder + (" + MIC" if plugin == "mic" else "")
            cells = [fmt(*summarise([results[encoder, plugin, s][c] for s in seeds])[:2])
                     for c in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if len(plugins) < 2:
            continue
        gains = []
        for c in cols:
            base = [results[encoder, "none", s][c] for s in seeds]
            mic = [results[encoder, "mic", s][c] for s in seeds]
            gain = (sum(mic) - sum(base)) / max(sum(base), 1e-12) * 100
            p = paired_test(base, mic)
            gains.append(f"{gain:+.1f}% (p={p:.3f})" if p == p else f"{gain:+.1f}%")
        lines.append("| gain | " + " | ".join(gains) + " |")
    path_md.write_text("\n".join(lines) + "\n")


def main(argv):
    del argv
    path = lambda ext: report_path(FLAGS.results_dir, "table1", FLAGS.dataset, FLAGS.quick, ext)  # noqa: E731
    write_tables(run_grid(log), path("csv"), path("md"))
    print(path("md"))


if __name__ == "__main__":
    app.run(main)
