"""Cross-channel inference latency on synthetic datastores (issue: cross-channel inference).

    python benchmarks/inference_latency.py --num_items=1000000 --num_users=1000000 --dim=128

Builds user and item datastores of clustered random unit vectors and random histories, then times
the single-user path (`recommend_one`: U2I + U2U + I2I and the aggregation) over `--queries` new
users, the batch path, and the overlap of the approximate U2I top-N with the exact one. Prints a
final JSON line with p50_ms, p99_ms, recall_vs_exact, batch_users_per_sec and rss_mb.
Paper settings: M1=40, M2=60, M=30, M3=50, K1=N=200.
"""

import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402

flags.DEFINE_integer("num_items", 1000000, "Items N.")
flags.DEFINE_integer("num_users", 1000000, "Training users U in the user datastore.")
flags.DEFINE_integer("dim", 128, "Vector dimension.")
flags.DEFINE_integer("history_len", 60, "Items per training user's history.")
flags.DEFINE_integer("query_history_len", 30, "Items per query user's history.")
flags.DEFINE_enum("index_type", "ivf", ["flat", "ivf", "hnsw"], "Faiss index type.")
flags.DEFINE_integer("nlist", None, "IVF lists (default ~4 sqrt(n)).")
flags.DEFINE_integer("nprobe", 16, "IVF lists probed.")
flags.DEFINE_integer("hnsw_m", 32, "HNSW M.")
flags.DEFINE_integer("ef_search", 128, "HNSW efSearch.")
flags.DEFINE_integer("queries", 200, "Single-user queries timed.")
flags.DEFINE_integer("batch_users", 1000, "Users in the batch-path measurement.")
flags.DEFINE_integer("top_n", 200, "N (and K1).")
flags.DEFINE_integer("m1", 40, "M1.")
flags.DEFINE_integer("m2", 60, "M2.")
flags.DEFINE_integer("m", 30, "M.")
flags.DEFINE_integer("m3", 50, "M3.")
flags.DEFINE_integer("threads", 1, "Faiss OpenMP threads (single-user serving: 1).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_enum("item_score", "cosine", ["dot", "cosine"], "Datastore geometry. The synthetic "
                  "item vectors are unit-length, so both rank alike; `dot` (a dot-product "
                  "model's datastore) builds a second item index for I2I.")
flags.DEFINE_boolean("precompute_i2i", True, "Precompute the I2I neighbour table (M3 wide) at "
                     "build time; otherwise I2I searches M items per request.")
flags.DEFINE_string("save_dir", None, "Save the built datastore here (to time it again later).")
flags.DEFINE_string("load_dir", None, "Load a datastore saved with --save_dir instead of "
                    "building one (same --num_items/--num_users/--dim/--seed).")
FLAGS = flags.FLAGS


def clustered_unit(rng, n, dim, centres, chunk=200000):
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        x = centres[rng.integers(0, len(centres), hi - lo)] + rng.normal(size=(hi - lo, dim))
        out[lo:hi] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top(queries, items, k, chunk=100000):
    """Exact top-k item ids (1-based) by inner product, numpy, chunked over items."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for lo in range(1, len(items), chunk):
        s = queries @ items[lo:lo + chunk].T
        ids = np.arange(lo, lo + s.shape[1])
        cat_s = np.concatenate([best_s, s], 1)
        cat_i = np.concatenate([best_i, np.broadcast_to(ids, s.shape)], 1)
        top = np.argpartition(-cat_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cat_s, top, 1), np.take_along_axis(cat_i, top, 1)
    return best_i


def main(argv):
    del argv
    import faiss

    from mic_tf.inference import CrossChannelInference, Datastore, InferenceConfig

    faiss.omp_set_num_threads(FLAGS.threads)
    rng = np.random.default_rng(FLAGS.seed)
    centres = rng.normal(size=(200, FLAGS.dim)).astype(np.float32) * 0.6
    t0 = time.perf_counter()
    items = clustered_unit(rng, FLAGS.num_items + 1, FLAGS.dim, centres)
    items[0] = 0
    users = clustered_unit(rng, FLAGS.num_users, FLAGS.dim, centres)
    hist = rng.integers(1, FLAGS.num_items + 1, (FLAGS.num_users, FLAGS.history_len), np.int32)
    offsets = np.arange(FLAGS.num_users + 1, dtype=np.int64) * FLAGS.history_len
    category = rng.integers(0, 100, FLAGS.num_items + 1).astype(np.int32)
    gen_s = time.perf_counter() - t0
    params = ({"nlist": FLAGS.nlist, "nprobe": FLAGS.nprobe} if FLAGS.index_type == "ivf" else
              {"M": FLAGS.hnsw_m, "efSearch": FLAGS.ef_search} if FLAGS.index_type == "hnsw"
              else {})
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # build with every core
    t0 = time.perf_counter()
    if FLAGS.load_dir:
        ds = Datastore.load(FLAGS.load_dir, use_gpu=False)
        if (ds.num_items, ds.num_users, ds.dim) != (FLAGS.num_items, FLAGS.num_users, FLAGS.dim):
            raise SystemExit(f"{FLAGS.load_dir} holds {ds.num_items} items, {ds.num_users} "
                             "users: pass the --num_items/--num_users/--dim it was built with")
    else:
        ds = Datastore(users, items, hist.ravel(), offsets, category,
                       index_type=FLAGS.index_type, index_params=params, use_gpu=False,
                       item_score=FLAGS.item_score)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if FLAGS.precompute_i2i and (ds.item_neighbours is None
                                 or ds.item_neighbours.shape[1] < FLAGS.m3):
        ds.build_item_neighbours(FLAGS.m3)
    i2i_s = time.perf_counter() - t0
    if FLAGS.save_dir and not FLAGS.load_dir:
        ds.save(FLAGS.save_dir)
    if not FLAGS.precompute_i2i:
        ds.item_neighbours = None
    del users, hist
    faiss.omp_set_num_threads(FLAGS.threads)
    cfg = InferenceConfig(top_n=FLAGS.top_n, k1=FLAGS.top_n, m1=FLAGS.m1, m2=FLAGS.m2, m=FLAGS.m,
                          m3=FLAGS.m3)
    engine = CrossChannelInference(ds, cfg)
    queries = clustered_unit(rng, FLAGS.queries, FLAGS.dim, centres)
    q_hist = rng.integers(1, FLAGS.num_items + 1, (FLAGS.queries, FLAGS.query_history_len))
    for j in range(min(10, FLAGS.queries)):  # warm-up
        engine.recommend_one(queries[j], q_hist[j])
    lat = []
    for j in range(FLAGS.queries):
        t = time.perf_counter()
        engine.recommend_one(queries[j], q_hist[j])
        lat.append((time.perf_counter() - t) * 1000)
    _, approx = ds.search_items(queries, FLAGS.top_n)
    exact = exact_top(queries, ds.item_vectors, FLAGS.top_n)
    overlap = np.mean([len(set(a) & set(e)) / FLAGS.top_n for a, e in zip(approx, exact)])
    bq = clustered_unit(rng, FLAGS.batch_users, FLAGS.dim, centres)
    bh = rng.integers(1, FLAGS.num_items + 1, (FLAGS.batch_users, FLAGS.query_history_len))
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t = time.perf_counter()
    engine.recommend(bq, bh)
    batch_s = time.perf_counter() - t
    print(json.dumps({
        "num_items": FLAGS.num_items, "num_users": FLAGS.num_users, "dim": FLAGS.dim,
        "index_type": FLAGS.index_type, "item_score": ds.item_score, "index_params": ds.settings()["built_params"]["items"],
        "top_n": FLAGS.top_n, "m1": FLAGS.m1, "m2": FLAGS.m2, "m": FLAGS.m, "m3": FLAGS.m3,
        "threads": FLAGS.threads, "queries": FLAGS.queries,
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "recall_vs_exact": round(float(overlap), 4),
        "batch_users_per_sec": round(FLAGS.batch_users / batch_s, 1),
        "build_seconds": round(build_s, 1), "loaded": bool(FLAGS.load_dir),
        "precompute_i2i": FLAGS.precompute_i2i, "i2i_table_seconds": round(i2i_s, 1),
        "generate_seconds": round(gen_s, 1),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    app.run(main)
