"""The baselines beside the paper's Table 1: every encoder X alone, MostPopular and item-CF.

    python experiments/baselines.py --dataset=ml-1m          # 4 encoders x 5 seeds, + MostPopular, item-CF
    python experiments/baselines.py --dataset=ml-100k
    python experiments/baselines.py --quick                  # one seed, a few steps (smoke)

The X runs are Table 1's `ENC-none-sSEED` runs (same runs folder, `runs/table1/DATASET`), so
Table 1 reuses them; finished runs are skipped, so an interrupted report resumes. MostPopular and
item-CF (cosine item-item co-occurrence over the training users, summed over the same history
the models see) need no training and go through the same metrics on the same splits. Writes
results/baselines_DATASET.{csv,md}: the CSV in long form (model, metric, mean, std, n), the
Markdown beside the paper's ML-1M baseline column where the dataset is ml-1m.
"""

import json
import os
import sys

# The repository root replaces this script's folder on the path: experiments/select.py would
# otherwise shadow the standard library's `select` (imported by subprocess, socket, ...).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from experiments import defaults  # noqa: E402
from experiments.tables import (QUICK_ARGS, REPO, cached_json, default_runs_dir, fmt,  # noqa: E402
                                load_test_metrics, log, metric_names, report_path, run_jobs,
                                seed_args, seeds_to_run, summarise, write_csv)

flags.DEFINE_string("dataset", "ml-1m", "Dataset.")
flags.DEFINE_list("encoders", ["youtube_dnn", "gru4rec", "comirec_dr", "comirec_sa"], "Encoders.")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds (each also moves the user split).")
flags.DEFINE_string("runs_dir", None, "Where the runs go (default runs/table1/DATASET).")
flags.DEFINE_string("results_dir", str(REPO / "results"), "Where the tables go.")
flags.DEFINE_boolean("quick", False, "Smoke mode: first seed only, 40 steps, valid every 20.")
flags.DEFINE_list("extra_args", [], "Extra run.py flags for every X run.")
FLAGS = flags.FLAGS

# The MIC paper's Table 1, Movielens (ML-1M) rows, baseline columns, in %.
PAPER_ML1M = {
    "youtube_dnn": {"recall@20": 12.251, "recall@50": 23.028, "hit_rate@20": 71.688,
                    "hit_rate@50": 87.245, "ndcg@20": 36.249, "ndcg@50": 38.756},
    "gru4rec": {"recall@20": 12.993, "recall@50": 24.447, "hit_rate@20": 72.344,
                "hit_rate@50": 89.705, "ndcg@20": 37.033, "ndcg@50": 39.888},
    "comirec": {"recall@20": 13.001, "recall@50": 25.043, "hit_rate@20": 73.772,
                "hit_rate@50": 90.138, "ndcg@20": 37.207, "ndcg@50": 41.099},
}
PAPER_ROW = {"youtube_dnn": "youtube_dnn", "gru4rec": "gru4rec", "comirec_dr": "comirec",
             "comirec_sa": "comirec"}
NAMES = {"most_popular": "MostPopular", "item_cf": "item-CF", "youtube_dnn": "YouTube DNN",
         "gru4rec": "GRU4Rec", "comirec_dr": "ComiRec-DR", "comirec_sa": "ComiRec-SA"}
SHOWN = ("recall@20", "recall@50", "hit_rate@20", "hit_rate@50")


def extra_flag(name: str):
    """The value of `--NAME=` in --extra_args (the last one), or None."""
    given = [a.split("=", 1)[1] for a in FLAGS.extra_args if a.startswith(f"--{name}=")]
    return given[-1] if given else None


def simple_baselines(dataset: str, seed: int, maxlen: int) -> dict:
    """MostPopular and item-CF on the seed's split, valid and test (no training, no selection)."""
    from mic_tf.data.prepare import prepare_dataset
    from mic_tf.data.protocol import ProtocolParams
    from mic_tf.evaluation.baselines import item_cf_rank, item_cf_similarity
    from mic_tf.evaluation.metrics import ranking_metrics
    from mic_tf.experiment import most_popular

    split_seed = 1230 + seed
    ds = prepare_dataset(dataset, data_dir=REPO / "datasets" / "data" / f"split-{split_seed}",
                         raw_dir=extra_flag("raw_dir"), params=ProtocolParams(split_seed=split_seed),
                         verbose=False)
    out = {"most_popular": most_popular(ds, maxlen), "item_cf": {}}
    r = ds.split_range("train")
    lo, hi = ds.seq_offsets[r.start], ds.seq_offsets[r.stop]
    sim = item_cf_similarity(ds.seq_items[lo:hi], ds.seq_offsets[r.start:r.stop + 1] - lo,
                             ds.num_items)
    for split in ("valid", "test"):
        es = ds.eval_split(split, maxlen)
        ranked = item_cf_rank(sim, es.histories, 50)
        out["item_cf"][split] = ranking_metrics(ranked, es.targets, es.target_offsets,
                                                ds.item_category)
    return out


def run_grid(seeds, runs) -> dict:
    jobs = {}
    for seed in seeds:
        for encoder in FLAGS.encoders:
            args = [*seed_args(FLAGS.dataset, seed), f"--encoder={encoder}", "--plugin=none",
                    *FLAGS.extra_args]
            jobs[encoder, seed] = (args + (QUICK_ARGS if FLAGS.quick else []),
                                   runs / f"{encoder}-none-s{seed}")
    run_jobs(list(jobs.values()), log)
    results = {key: load_test_metrics(out) for key, (_, out) in jobs.items()}
    walls = {}
    for (encoder, seed), (_, out) in jobs.items():
        wall = out / "wall_seconds.txt"
        run = json.loads((out / "metrics.json").read_text())["run"]
        walls[encoder, seed] = {"wall": float(wall.read_text()) if wall.exists() else None,
                                "steps": run["steps"], "best_step": run["best_step"]}
    return results, walls


def write_report(results, walls, seeds, path_csv, path_md) -> None:
    models = ["most_popular", "item_cf", *FLAGS.encoders]
    rows = []
    for model in models:
        for metric in metric_names():
            mean, std, n = summarise([results[model, s][metric] for s in seeds])
            rows.append({"model": model, "metric": metric, "mean": mean, "std": std, "n": n})
    write_csv(rows, path_csv)
    paper = FLAGS.dataset == "ml-1m"
    head = ["model", *SHOWN] + (["paper R@50 / HR@50", "gap R@50", "gap HR@50"] if paper else []) \
        + ["best step (of run)", "wall min / run"]
    lines = [f"# Baselines on {FLAGS.dataset} (test split, %, mean ± std over {len(seeds)} "
             f"seed(s): {', '.join(map(str, seeds))})", "",
             "Each seed moves the 80/10/10 user split too (`--split_seed=1230+seed`). X rows: "
             "`experiments/run.py --plugin=none` with the defaults of `experiments/defaults.py`"
             f" plus `{' '.join(FLAGS.extra_args) or 'no extra flags'}`, selected on valid "
             "recall@50. MostPopular and item-CF go through the same metrics on the same users."
             + (" Paper: MIC's Table 1, Movielens baseline column (ComiRec: the paper does not "
                "say DR or SA; both are compared with it). Gap = relative difference of our mean "
                "from the paper's value." if paper else ""), "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for model in models:
        cells = [NAMES.get(model, model)]
        cells += [fmt(*summarise([results[model, s][m] for s in seeds])[:2]) for m in SHOWN]
        if paper:
            ref = PAPER_ML1M.get(PAPER_ROW.get(model, ""))
            if ref:
                ours = {m: 100 * summarise([results[model, s][m] for s in seeds])[0]
                        for m in ("recall@50", "hit_rate@50")}
                cells += [f"{ref['recall@50']:.2f} / {ref['hit_rate@50']:.2f}",
                          f"{(ours['recall@50'] / ref['recall@50'] - 1) * 100:+.1f}%",
                          f"{(ours['hit_rate@50'] / ref['hit_rate@50'] - 1) * 100:+.1f}%"]
            else:
                cells += ["-", "-", "-"]
        if model in FLAGS.encoders:
            w = [walls[model, s] for s in seeds]
            best = ", ".join(f"{x['best_step']}/{x['steps']}" for x in w)
            minutes = [x["wall"] / 60 for x in w if x["wall"] is not None]
            cells += [best, f"{sum(minutes) / len(minutes):.1f}" if minutes else "-"]
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    path_md.write_text("\n".join(lines) + "\n")


def main(argv):
    del argv
    seeds = seeds_to_run(FLAGS.seeds, FLAGS.quick)
    runs = default_runs_dir(FLAGS.runs_dir, FLAGS.dataset, FLAGS.quick)
    results, walls = run_grid(seeds, runs)
    maxlen = int(extra_flag("maxlen") or defaults.resolve("maxlen", FLAGS.dataset, "", None))
    for seed in seeds:
        simple = cached_json(runs / f"simple-baselines-maxlen{maxlen}-s{seed}.json",
                             lambda: simple_baselines(FLAGS.dataset, seed, maxlen))
        for model, by_split in simple.items():
            results[model, seed] = by_split["test"]
    path = lambda ext: report_path(FLAGS.results_dir, "baselines", FLAGS.dataset, FLAGS.quick, ext)  # noqa: E731
    write_report(results, walls, seeds, path("csv"), path("md"))
    print(path("md"))


if __name__ == "__main__":
    app.run(main)
