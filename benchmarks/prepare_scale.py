"""How long `datasets/prepare.py --dataset=taobao` takes, and how much memory, as rows grow.

    python benchmarks/prepare_scale.py --rows=10000000
    python benchmarks/prepare_scale.py --rows_list=1000000,10000000

For each size, a synthetic `UserBehavior.csv` in Taobao's raw format is generated (vectorised
numpy, written with pyarrow's C++ CSV writer, cached under --work_dir by rows and seed), then
`python datasets/prepare.py --dataset=taobao --raw_path=CSV --data_dir=WORK/data --force` runs in a
child process whose wall time and peak RSS (`os.wait4` rusage of that child) are measured.

The generated data mimics the real file (100,150,807 rows; 987,994 users; 4,162,024 items; 9,439
categories; Nov 25 - Dec 3 2017) scaled by rows: ~1 user per 101 rows and ~1 item per 24 rows,
sparse raw ids over realistic ranges, heavy-tailed user activity (lognormal), Zipf item popularity
(exponent 1), a fixed category per item, ~89.5% pv / 5.5% cart / 2.9% fav / 2.1% buy, rows grouped
by user and time-sorted within a user, plus a few out-of-range timestamps as in the real file.

Prints one JSON line per size and a final JSON line with every result and the goal
(10M rows in <= 60 s wall and <= 4 GB peak RSS).
"""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mic_tf.utils.io import atomic_path  # noqa: E402

flags.DEFINE_integer("rows", 10_000_000, "Rows of the generated UserBehavior.csv.")
flags.DEFINE_list("rows_list", None, "Several sizes to run one after the other (overrides --rows).")
flags.DEFINE_string("work_dir", "/tmp/mic_prepare_scale", "Where the CSVs and outputs go.")
flags.DEFINE_integer("seed", 0, "Generator seed.")
flags.DEFINE_float("max_wall_s", 60.0, "Goal: wall time of 10M rows.")
flags.DEFINE_float("max_rss_gb", 4.0, "Goal: peak RSS of 10M rows.")
FLAGS = flags.FLAGS

REAL_ROWS = 100_150_807
REAL_USERS, REAL_USER_ID_MAX = 987_994, 1_018_011
REAL_ITEMS, REAL_ITEM_ID_MAX = 4_162_024, 5_163_070
REAL_CATEGORIES, REAL_CATEGORY_ID_MAX = 9_439, 5_162_429
T0, T1 = 1511539200, 1512316800  # 2017-11-25 .. 2017-12-03 (UTC+8 midnight-ish)


def _sparse_ids(rng, n: int, id_max: int) -> np.ndarray:
    """`n` distinct ids in [1, max(id_max, n)], in random order."""
    high = max(id_max, n)
    return rng.choice(high, size=n, replace=False).astype(np.int64) + 1


def generate(rows: int, seed: int, path: Path) -> dict:
    rng = np.random.default_rng(seed)
    scale = rows / REAL_ROWS
    n_users = max(10, round(REAL_USERS * scale))
    n_items = max(50, round(REAL_ITEMS * scale))
    n_cats = max(5, min(REAL_CATEGORIES, round(REAL_CATEGORIES * min(1.0, scale) ** 0.5)))
    user_ids = np.sort(_sparse_ids(rng, n_users, round(REAL_USER_ID_MAX * scale)))
    item_ids = _sparse_ids(rng, n_items, round(REAL_ITEM_ID_MAX * scale))  # index = popularity rank
    cat_ids = _sparse_ids(rng, n_cats, round(REAL_CATEGORY_ID_MAX * scale))

    # Heavy-tailed activity: lognormal weights, exactly `rows` rows in total.
    weights = rng.lognormal(mean=0.0, sigma=1.0, size=n_users)
    per_user = rng.multinomial(rows, weights / weights.sum())
    row_user = np.repeat(np.arange(n_users, dtype=np.int64), per_user)

    # Zipf(1) item popularity by inverse CDF of a log-uniform rank; rank -> sparse raw id.
    u = rng.random(rows)
    rank = np.minimum(np.floor(np.exp(u * np.log(n_items + 1))).astype(np.int64) - 1, n_items - 1)
    del u
    items = item_ids[rank]
    # Each item has one category; categories are Zipf-ish too.
    item_cat_rank = np.minimum(
        np.floor(np.exp(rng.random(n_items) * np.log(n_cats + 1))).astype(np.int64) - 1, n_cats - 1)
    cats = cat_ids[item_cat_rank][rank]
    del rank, item_cat_rank

    behaviors = np.array(["pv", "cart", "fav", "buy"])
    behavior_codes = rng.choice(4, size=rows, p=[0.895, 0.055, 0.029, 0.021]).astype(np.int8)

    ts = rng.integers(T0, T1, size=rows, dtype=np.int64)
    outliers = rng.random(rows) < 1e-4  # the real file has a few timestamps outside the window
    ts[outliers] = rng.integers(0, 2 * T1, size=int(outliers.sum()), dtype=np.int64)
    order = np.lexsort((ts, row_user))  # grouped by user, time-sorted within a user
    table = pa.table({
        "user": user_ids[row_user[order]],
        "item": items[order],
        "category": cats[order],
        "behavior": pa.DictionaryArray.from_arrays(behavior_codes[order], behaviors),
        "timestamp": ts[order],
    })
    del order, row_user, items, cats, ts, behavior_codes
    with atomic_path(path) as tmp:
        pacsv.write_csv(table, tmp, write_options=pacsv.WriteOptions(
            include_header=False, quoting_style="none", batch_size=1 << 16))
    return {"users": n_users, "items": n_items, "categories": n_cats}


def run_prepare(csv: Path, data_dir: Path) -> dict:
    cmd = [sys.executable, str(REPO / "datasets" / "prepare.py"), "--dataset=taobao",
           f"--raw_path={csv}", f"--data_dir={data_dir}", "--force"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait4 gives the rusage of this child alone (getrusage(RUSAGE_CHILDREN) would be a running
    # maximum over every child, which mixes the sizes of --rows_list).
    out_lines, err_lines = [], []
    def pump(stream, sink):
        for line in stream:
            sink.append(line)

    threads = [threading.Thread(target=pump, args=(proc.stdout, out_lines)),
               threading.Thread(target=pump, args=(proc.stderr, err_lines))]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    for t in threads:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write("".join(err_lines))
        raise SystemExit(f"prepare.py failed with exit code {proc.returncode}")
    counts = json.loads(out_lines[-1])
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "user_cpu_s": round(usage.ru_utime, 2), "sys_cpu_s": round(usage.ru_stime, 2),
            "counts": counts, "log": [l.strip() for l in err_lines if l.strip()][-3:]}


def main(argv):
    del argv
    sizes = [int(float(r)) for r in FLAGS.rows_list] if FLAGS.rows_list else [FLAGS.rows]
    work = Path(FLAGS.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in sizes:
        csv = work / f"UserBehavior_{rows}_seed{FLAGS.seed}.csv"
        gen = {}
        start = time.perf_counter()
        if not csv.exists():
            gen = generate(rows, FLAGS.seed, csv)
        gen_s = time.perf_counter() - start
        measured = run_prepare(csv, work / f"data_{rows}")
        result = {"rows": rows, "csv_mb": round(csv.stat().st_size / 2 ** 20, 1),
                  "generate_s": round(gen_s, 2), **gen, **measured}
        if rows == 10_000_000:
            result["goal_met"] = (measured["wall_s"] <= FLAGS.max_wall_s
                                  and measured["peak_rss_mb"] <= FLAGS.max_rss_gb * 1024)
        print(json.dumps(result), flush=True)
        results.append(result)
    summary = {"benchmark": "prepare_scale", "dataset": "taobao", "cpus": os.cpu_count(),
               "goal": {"rows": 10_000_000, "max_wall_s": FLAGS.max_wall_s,
                        "max_rss_gb": FLAGS.max_rss_gb},
               "results": [{k: r[k] for k in ("rows", "wall_s", "peak_rss_mb", "counts")}
                           for r in results]}
    if len(results) > 1:
        a, b = results[0], results[-1]
        ratio = b["rows"] / a["rows"]
        summary["growth"] = {"rows_x": ratio, "wall_x": round(b["wall_s"] / a["wall_s"], 2),
                             "rss_x": round(b["peak_rss_mb"] / a["peak_rss_mb"], 2)}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    app.run(main)
