"""Table 4 of the paper: MIC's ablations on one encoder (ComiRec-SA by default), over seeds.

    python experiments/table4.py                 # ml-100k, comirec_sa, seeds 0-4
    python experiments/table4.py --quick         # one seed, a few steps (the test suite's smoke)

Nine variants (spec 3.4): `full` and the five training ablations `-uu, -ui, -ii, -perturbation,
-mining` are trained runs (`full` is Table 1's X + MIC run of the same seed, shared through the
runs folder); `-u2u, -u2i, -i2i` drop one channel at inference, so they re-evaluate the `full`
run's best checkpoint (the same trained model) with that channel removed. The baseline X (Table
1's run) is shown above them for reference. A seed moves the initialisation and the user split,
as in Table 1. Finished runs and re-evaluations are skipped (cached in each run's `reeval/`).
Writes results/table4_DATASET.{csv,md}; csv columns `variant, metric, mean, std, n`.
"""

import dataclasses
import os
import sys
from pathlib import Path

# The repository root replaces this script's folder on the path: experiments/select.py would
# otherwise shadow the standard library's `select` (imported by subprocess, socket, ...).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from experiments.tables import (REPO, TRAINED_VARIANTS, cached_json,  # noqa: E402
                                check_trained_rows, default_runs_dir, fmt, load_test_metrics, log, paired_test,
                                report_path, run_jobs, seeds_to_run, selected_config,
                                summarise, variant_dir, variant_jobs, write_csv)

flags.DEFINE_string("dataset", "ml-100k", "Dataset.")
flags.DEFINE_string("encoder", "comirec_sa", "Encoder (the paper: ComiRec).")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds (each also moves the user split).")
flags.DEFINE_string("runs_dir", None, "Runs folder, shared with table1.py (default "
                    "runs/table1/DATASET).")
flags.DEFINE_string("results_dir", str(REPO / "results"), "Where the tables go.")
flags.DEFINE_boolean("quick", False, "Smoke mode: first seed only, 40 steps, valid every 20.")
flags.DEFINE_list("extra_args", [], "Extra run.py flags for every run (also Table 1's).")
flags.DEFINE_enum("arm", "mic_selected", ["mic_selected", "mic_paper"], "Which X + MIC: the "
                  "settings selected on valid (configs/) or the paper's printed values.")
flags.DEFINE_string("configs_dir", str(REPO / "configs"), "Where the selected settings are.")
flags.DEFINE_list("trained", ["baseline", "full", "-uu", "-ui", "-ii", "-perturbation",
                                 "-mining"],
                  "The trained rows (runs trained when missing); fewer give a partial report, "
                  "e.g. baseline,full: only re-evaluations of Table 1's runs.")
FLAGS = flags.FLAGS

TRAINED = TRAINED_VARIANTS
INFERENCE = ("-u2u", "-u2i", "-i2i")
VARIANTS = TRAINED + INFERENCE
METRICS = ("recall@50", "ndcg@50", "hit_rate@50", "diversity@50")


def inference_ablation(full_dir: Path, variant: str) -> dict:
    """Test metrics of the `full` checkpoint with one channel dropped (cached)."""
    def compute():
        from mic_tf.evaluation.checkpoint import evaluate_cross_channel, load_run
        from mic_tf.inference.score import InferenceConfig

        run = load_run(full_dir)
        base = {**dataclasses.asdict(run.config.inference), "top_n": run.config.train.top_n}
        return evaluate_cross_channel(run, InferenceConfig.for_ablation(variant, **base))
    return cached_json(full_dir / "reeval" / f"test{variant}.json", compute)


def run_grid(log) -> dict:
    seeds = seeds_to_run(FLAGS.seeds, FLAGS.quick)
    runs = default_runs_dir(FLAGS.runs_dir, FLAGS.dataset, FLAGS.quick)
    if FLAGS.arm == "mic_selected":
        selected_config(FLAGS.dataset, FLAGS.encoder, FLAGS.configs_dir)
    jobs = variant_jobs(FLAGS.dataset, FLAGS.encoder, seeds, runs, FLAGS.quick,
                        FLAGS.extra_args, variants=tuple(check_trained_rows(FLAGS.trained)),
                        arm=FLAGS.arm, configs_dir=FLAGS.configs_dir)
    run_jobs(list(jobs.values()), log)
    results = {key: load_test_metrics(out) for key, (_, out) in jobs.items()}
    for seed in seeds:
        full = variant_dir(runs, FLAGS.encoder, "full", seed, FLAGS.arm)
        for variant in INFERENCE:
            log(f"re-evaluating {full} with {variant}")
            results[variant, seed] = inference_ablation(full, variant)
    return results


def write_tables(results: dict, path_csv: Path, path_md: Path) -> None:
    seeds = sorted({s for _, s in results})
    shown = [v for v in ("baseline",) + VARIANTS if (v, seeds[0]) in results]
    rows = []
    for variant in shown:
        for metric in METRICS:
            mean, std, n = summarise([results[variant, s][metric] for s in seeds])
            rows.append({"variant": variant, "metric": metric, "mean": mean, "std": std, "n": n})
    write_csv(rows, path_csv)
    lines = [f"# Table 4 on {FLAGS.dataset}: ablations of {FLAGS.encoder} + MIC (test split, %, "
             f"mean ± std over {len(seeds)} seed(s): {', '.join(map(str, seeds))})", "",
             "`baseline` is the encoder without MIC (ComiRec's U2I evaluation). Training "
             "ablations are separate runs; `-u2u/-u2i/-i2i` re-evaluate the `full` checkpoint "
             "with that inference channel dropped. Δ = change of the mean vs `full`; p = "
             "two-sided paired t-test over seeds vs `full`.", "",
             "| module | variant | " + " | ".join(METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    module = {"baseline": "no MIC", "full": "full model", **{v: "contrastive loss"
                                                          for v in TRAINED[1:]},
              **{v: "inference channel" for v in INFERENCE}}
    for variant in shown:
        cells = []
        for metric in METRICS:
            vals = [results[variant, s][metric] for s in seeds]
            cell = fmt(*summarise(vals)[:2])
            if variant != "full":
                full = [results["full", s][metric] for s in seeds]
                p = paired_test(full, vals)
                cell += f" (Δ {100 * (sum(vals) - sum(full)) / len(seeds):+.2f}"
                cell += f", p={p:.3f})" if p == p else ")"
            cells.append(cell)
        lines.append(f"| {module[variant]} | {variant} | " + " | ".join(cells) + " |")
    path_md.write_text("\n".join(lines) + "\n")


def main(argv):
    del argv
    path = lambda ext: report_path(FLAGS.results_dir, "table4", FLAGS.dataset, FLAGS.quick, ext)  # noqa: E731
    write_tables(run_grid(log), path("csv"), path("md"))
    print(path("md"))


if __name__ == "__main__":
    app.run(main)
