"""Evaluation throughput: bare Faiss search vs the full evaluation path (search + metrics).

Measures, on random data,
  (a) bare: `faiss.IndexFlatIP.search` of all users (index built once, only the search timed);
  (b) full: `ItemIndex.search` + `ranking_metrics` (random targets, ~20 per user, random
      categories), i.e. everything `evaluate` does per evaluation.
Each is run `--repeats` times, interleaved in alternating order, and the best time kept (the
host may be shared: a 2-thread Faiss search slows down several-fold when a core is busy). The
final stdout line is JSON with `bare_users_per_sec`, `full_users_per_sec`, `ratio` (full / bare;
the goal is >= 0.8), the best times (`metrics_seconds` is the ranking_metrics share of the full
path) and the parameters.

  python benchmarks/eval_throughput.py --num_users=10000 --num_items=300000
"""

from __future__ import annotations

import json
import time

import numpy as np
from absl import app, flags

import faiss

from mic_tf.evaluation.metrics import ranking_metrics
from mic_tf.utils.faiss_index import ItemIndex

flags.DEFINE_integer("num_users", 10000, "Users (queries) per evaluation.")
flags.DEFINE_integer("num_items", 300000, "Catalogue size N (item ids 1..N).")
flags.DEFINE_integer("dim", 64, "Embedding dimension.")
flags.DEFINE_integer("top_n", 50, "Items retrieved per user; metrics at @20 and @top_n.")
flags.DEFINE_integer("seed", 0, "Seed of the random data.")
flags.DEFINE_integer("repeats", 3, "Timed repetitions of each measurement (best is kept).")
flags.DEFINE_integer("num_categories", 100, "Random item categories 0..C (0 = no category).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    rng = np.random.default_rng(FLAGS.seed)
    num_users, num_items, dim, top_n = FLAGS.num_users, FLAGS.num_items, FLAGS.dim, FLAGS.top_n
    if min(num_users, num_items, dim, top_n, FLAGS.repeats) < 1:
        raise app.UsageError("num_users, num_items, dim, top_n and repeats must be >= 1")
    items = rng.standard_normal((num_items + 1, dim), dtype=np.float32)
    users = rng.standard_normal((num_users, dim), dtype=np.float32)
    lengths = rng.integers(10, 31, size=num_users)  # ~20 targets per user
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    targets = rng.integers(1, num_items + 1, size=int(offsets[-1])).astype(np.int32)
    categories = rng.integers(0, FLAGS.num_categories + 1, size=num_items + 1).astype(np.int32)
    cutoffs = tuple(sorted({min(20, top_n), top_n}))

    bare = faiss.IndexFlatIP(dim)
    bare.add(items[1:])
    index = ItemIndex(items, use_gpu="auto")

    def run_bare():
        start = time.perf_counter()
        bare.search(users, top_n)
        bare_times.append(time.perf_counter() - start)

    def run_full():
        start = time.perf_counter()
        _, ranked = index.search(users, top_n)
        searched = time.perf_counter()
        ranking_metrics(ranked, targets, offsets, categories, cutoffs=cutoffs)
        end = time.perf_counter()
        full_times.append(end - start)
        metric_times.append(end - searched)

    # Untimed warm-up on a slice (thread pools, first-touch allocations).
    bare.search(users[:256], top_n)
    index.search(users[:256], top_n)
    bare_times, full_times, metric_times = [], [], []
    for r in range(FLAGS.repeats):
        # Interleaved, alternating which goes first, and the best time kept: the machine may be
        # shared, and a 2-thread Faiss search slows down several-fold whenever a core is busy.
        for fn in ((run_bare, run_full) if r % 2 == 0 else (run_full, run_bare)):
            fn()

    bare_rate = num_users / min(bare_times)
    full_rate = num_users / min(full_times)
    result = {
        "bare_users_per_sec": round(bare_rate, 1),
        "full_users_per_sec": round(full_rate, 1),
        "ratio": round(full_rate / bare_rate, 4),
        "bare_seconds": round(min(bare_times), 4),
        "full_seconds": round(min(full_times), 4),
        "metrics_seconds": round(min(metric_times), 4),
        "num_users": num_users, "num_items": num_items, "dim": dim, "top_n": top_n,
        "seed": FLAGS.seed, "repeats": FLAGS.repeats, "faiss_threads": faiss.omp_get_max_threads(),
        "on_gpu": index.on_gpu,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    app.run(main)
