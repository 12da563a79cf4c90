"""Time of one MIC nearest-neighbour mining pass (kNN, k-means++ clusters, hard negatives, joint
user <-> item retrieval) on clustered random vectors; prints a final JSON line.

    python benchmarks/mining_time.py --num_users=100000 --num_items=100000 --dim=64

The vectors are drawn around planted centres so that clustering and kNN do realistic work. The
encoder forward pass over all users (the other part of a mining step) is not included; the MIC
runs log it as `embed` seconds.
"""

import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402

flags.DEFINE_integer("num_users", 100000, "Training users.")
flags.DEFINE_integer("num_items", 100000, "Items.")
flags.DEFINE_integer("dim", 64, "Vector dimension.")
flags.DEFINE_integer("num_clusters", 20, "k-means++ clusters.")
flags.DEFINE_integer("exact_limit", 50000, "Exact search up to this many base vectors, IVF above.")
flags.DEFINE_integer("seed", 0, "Seed.")
FLAGS = flags.FLAGS


def clustered(rng, n, dim, centres):
    return (centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, dim))).astype(np.float32)


def main(argv):
    del argv
    from mic_tf.mic.mining import MiningConfig, mine

    rng = np.random.default_rng(FLAGS.seed)
    centres = rng.normal(size=(50, FLAGS.dim)) * 2
    users = clustered(rng, FLAGS.num_users, FLAGS.dim, centres)
    items = clustered(rng, FLAGS.num_items + 1, FLAGS.dim, centres)
    cfg = MiningConfig(num_clusters=FLAGS.num_clusters, exact_limit=FLAGS.exact_limit,
                       seed=FLAGS.seed)
    start = time.perf_counter()
    mined = mine(users, items, users * 0.5 + 0.1, items * 0.5 + 0.1, cfg)
    total = time.perf_counter() - start
    print(json.dumps({"num_users": FLAGS.num_users, "num_items": FLAGS.num_items, "dim": FLAGS.dim,
                      "exact_limit": FLAGS.exact_limit, "seconds": round(total, 2),
                      "parts": mined.seconds,
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    app.run(main)
