"""Figures 4 and 5 of the paper on one encoder (ComiRec-SA by default), over seeds.

    python experiments/figures.py                # ml-100k, comirec_sa, seeds 0-4
    python experiments/figures.py --quick        # one seed, a few steps (the test suite's smoke)

Figure 4 (accuracy vs diversity): test recall@50 against diversity@50 as the diversity weight
sweeps, for (a) X + MIC through cross-channel inference (`lam_div`), (b) the baseline X with
ComiRec's greedy coefficient (`score - coef * same-category picks`), and (c) the baseline's
checkpoint through X + MIC's inference settings (lam_div swept), which separates MIC's
inference from its training.
Figure 5 (representation geometry): test recall@50 against UI alignment, UU uniformity and II
uniformity (Wang & Isola) for the baseline and every contrastive setting of Table 4.
It trains the runs it needs (shared with table1.py / table4.py, skipped when finished) and caches
every re-evaluation in the run's `reeval/`. Writes results/figure{4,5}_DATASET.{png,csv}.
"""

import dataclasses
import json
import os
import sys
from pathlib import Path

# The repository root replaces this script's folder on the path: experiments/select.py would
# otherwise shadow the standard library's `select` (imported by subprocess, socket, ...).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402

from experiments.tables import (REPO, cached_json, check_trained_rows, inference_key,  # noqa: E402
                                default_runs_dir, load_test_metrics, log, report_path, run_jobs,
                                seeds_to_run, selected_config, variant_dir, variant_jobs,
                                write_csv)

flags.DEFINE_string("dataset", "ml-100k", "Dataset.")
flags.DEFINE_string("encoder", "comirec_sa", "Encoder (the paper's Figure 4: ComiRec-SA).")
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Seeds (each also moves the user split).")
flags.DEFINE_string("runs_dir", None, "Runs folder, shared with table1.py / table4.py.")
flags.DEFINE_string("results_dir", str(REPO / "results"), "Where the figures go.")
flags.DEFINE_boolean("quick", False, "Smoke mode: first seed only, 40 steps, 3 sweep points.")
flags.DEFINE_list("extra_args", [], "Extra run.py flags for every run (also Table 1's).")
flags.DEFINE_enum("arm", "mic_selected", ["mic_selected", "mic_paper"], "Which X + MIC: the "
                  "settings selected on valid (configs/) or the paper's printed values.")
flags.DEFINE_string("configs_dir", str(REPO / "configs"), "Where the selected settings are.")
flags.DEFINE_list("lam_div", ["0", "0.05", "0.1", "0.2", "0.5", "1", "2"],
                  "MIC's diversity weights (Figure 4).")
flags.DEFINE_list("coef", ["0", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1", "2"],
                  "ComiRec's greedy coefficients for the baseline (Figure 4).")
flags.DEFINE_list("trained", ["baseline", "full", "-uu", "-ui", "-ii", "-perturbation",
                                 "-mining"],
                  "The trained rows (runs trained when missing); fewer give a partial report, "
                  "e.g. baseline,full: only re-evaluations of Table 1's runs.")
FLAGS = flags.FLAGS

REPR = ("ui_alignment", "uu_uniformity", "ii_uniformity")
LINES = {"mic": "X + MIC (cross-channel, lam_div)",
         "baseline": "X (U2I, ComiRec coef)",
         "baseline_mic_inference": "X checkpoint, MIC inference (lam_div)"}


def figure4_points(runs: Path, seeds, log) -> list[dict]:
    from mic_tf.evaluation.checkpoint import (config_from_flags, evaluate_cross_channel,
                                              evaluate_u2i, load_run)

    rows = []
    for seed in seeds:
        # X's checkpoint goes through the same inference as X + MIC's run of this seed (its M's,
        # lam_mic, Score_MIC reading ...), so the two cross-channel lines differ by training only
        full_flags = json.loads((variant_dir(runs, FLAGS.encoder, "full", seed, FLAGS.arm)
                                 / "flags.json").read_text())
        mic_inference = config_from_flags(full_flags).inference
        for line, variant, grid in (("mic", "full", FLAGS.lam_div),
                                    ("baseline", "baseline", FLAGS.coef),
                                    ("baseline_mic_inference", "baseline", FLAGS.lam_div)):
            folder = variant_dir(runs, FLAGS.encoder, variant, seed, FLAGS.arm)
            loaded = {}

            def run():
                if "run" not in loaded:
                    loaded["run"] = load_run(folder)
                return loaded["run"]

            for value in grid:
                def compute():
                    r = run()
                    if line == "baseline":
                        return evaluate_u2i(r, coef=float(value))
                    cfg = dataclasses.replace(mic_inference, top_n=r.config.train.top_n,
                                              lam_div=float(value), use_u2i=True, use_u2u=True,
                                              use_i2i=True)
                    return evaluate_cross_channel(r, cfg)
                # "-as-mic-KEY": X's line with X + MIC's inference, KEY naming those settings
                # (a cache named without them was reused after full's settings changed)
                tag = f"-as-mic-{inference_key(mic_inference)}" if (
                    line == "baseline_mic_inference") else ""
                name = f"fig4-{line}{tag}-{float(value):g}.json"
                m = cached_json(folder / "reeval" / name, compute)
                rows.append({"line": line, "weight": float(value), "seed": seed,
                             "recall@50": m["recall@50"], "diversity@50": m["diversity@50"]})
            log(f"figure 4: {line} on {folder.name} done")
    return rows


def figure5_points(runs: Path, seeds, log) -> list[dict]:
    from mic_tf.evaluation.checkpoint import load_run, representation_metrics

    rows = []
    for seed in seeds:
        for variant in check_trained_rows(FLAGS.trained):
            folder = variant_dir(runs, FLAGS.encoder, variant, seed, FLAGS.arm)
            geo = cached_json(folder / "reeval" / "representation-test.json",
                              lambda: representation_metrics(load_run(folder)))
            rows.append({"setting": variant, "seed": seed, **geo,
                         "recall@50": load_test_metrics(folder)["recall@50"]})
        log(f"figure 5: seed {seed} done")
    return rows


def plot_figure4(rows, path: Path, n_seeds: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    styles = {"mic": ("tab:red", "o"), "baseline": ("black", "s"),
              "baseline_mic_inference": ("tab:blue", "^")}
    for line, label in LINES.items():
        weights = sorted({r["weight"] for r in rows if r["line"] == line})
        rec = [100 * np.mean([r["recall@50"] for r in rows
                              if r["line"] == line and r["weight"] == w]) for w in weights]
        div = [100 * np.mean([r["diversity@50"] for r in rows
                              if r["line"] == line and r["weight"] == w]) for w in weights]
        color, marker = styles[line]
        ax.plot(rec, div, marker=marker, color=color, label=label)
        for x, y, w in zip(rec, div, weights):
            ax.annotate(f"{w:g}", (x, y), textcoords="offset points", xytext=(4, 3),
                        fontsize=7, color=color)
    ax.set_xlabel("Recall@50 (%)")
    ax.set_ylabel("Diversity@50 (%)")
    ax.set_title(f"Figure 4 on {FLAGS.dataset}: accuracy vs diversity, {FLAGS.encoder} "
                 f"(test, mean of {n_seeds} seed(s); labels = weight)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_figure5(rows, path: Path, n_seeds: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    settings = list(dict.fromkeys(r["setting"] for r in rows))
    colors = dict(zip(settings, plt.get_cmap("tab10").colors))
    titles = {"ui_alignment": "UI alignment (lower = closer positives)",
              "uu_uniformity": "UU uniformity (lower = more uniform)",
              "ii_uniformity": "II uniformity (lower = more uniform)"}
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5), sharey=True)
    for ax, key in zip(axes, REPR):
        for s in settings:
            xs = [r[key] for r in rows if r["setting"] == s]
            ys = [100 * r["recall@50"] for r in rows if r["setting"] == s]
            ax.errorbar(np.mean(xs), np.mean(ys), xerr=np.std(xs), yerr=np.std(ys), fmt="o",
                        color=colors[s], capsize=3, label=s)
            ax.annotate(s, (np.mean(xs), np.mean(ys)), textcoords="offset points",
                        xytext=(5, 4), fontsize=8, color=colors[s])
        ax.set_xlabel(titles[key])
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Recall@50 (%)")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"Figure 5 on {FLAGS.dataset}: representation geometry vs recall, "
                 f"{FLAGS.encoder} (test, mean ± std over {n_seeds} seed(s))", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv):
    del argv
    seeds = seeds_to_run(FLAGS.seeds, FLAGS.quick)
    if FLAGS.quick:
        FLAGS.lam_div, FLAGS.coef = ["0", "0.2", "1"], ["0", "0.05", "0.5"]
    runs = default_runs_dir(FLAGS.runs_dir, FLAGS.dataset, FLAGS.quick)
    if FLAGS.arm == "mic_selected":
        selected_config(FLAGS.dataset, FLAGS.encoder, FLAGS.configs_dir)
    jobs = variant_jobs(FLAGS.dataset, FLAGS.encoder, seeds, runs, FLAGS.quick, FLAGS.extra_args,
                        variants=tuple(check_trained_rows(FLAGS.trained)),
                        arm=FLAGS.arm, configs_dir=FLAGS.configs_dir)
    run_jobs(list(jobs.values()), log)
    for name, points, plot in (("figure4", figure4_points, plot_figure4),
                               ("figure5", figure5_points, plot_figure5)):
        png = report_path(FLAGS.results_dir, name, FLAGS.dataset, FLAGS.quick, "png")
        rows = points(runs, seeds, log)
        write_csv(rows, png.with_suffix(".csv"))
        plot(rows, png, len(seeds))
        print(png)


if __name__ == "__main__":
    app.run(main)
