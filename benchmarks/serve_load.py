"""Online serving under open-loop load (issue 16): a synthetic 1M-user / 1M-item bundle, Redis,
the HTTP service and the load generator on this machine.

    python benchmarks/serve_load.py --bundle_dir=/tmp/serve1m              # build once, then reuse
    python benchmarks/serve_load.py --bundle_dir=/tmp/serve1m --rates=100 --seconds=20
    python benchmarks/serve_load.py --bundle_dir=/tmp/serve1m --workers=1  # one process
    python benchmarks/serve_load.py --bundle_dir=/tmp/serve1m --serve_cwd=/path/to/old/checkout \
        --workers=0       # another checkout's service (one without --workers) under this load

1. Builds (or reuses) a bundle: clustered unit item vectors (as `inference_latency.py`), a user
   tower (`--encoder`; its item table = those vectors; YouTube DNN's projection = identity, so
   the user vector is the mean of the history, other encoders keep random weights) exported as
   the bundle's SavedModel, clustered user vectors, histories of one interest cluster per user,
   real IVF indexes (the serving default, nprobe 32), and random similar-user / similar-item
   tables: the tables' content does not change what a request costs (random lists overlap less
   than mined ones, so the candidate set V_C is larger and the scoring a little slower: a
   conservative choice), while mining them at 1M costs ~20 minutes of both cores. Prints the
   export's timings and the U2I recall of the index against exact search, at several nprobe,
   for history-mean queries (what the identity tower computes) and item-like queries (those of
   `inference_latency.py`).
2. Starts its own `redis-server`, bulk-loads the bundle (`mic_tf.serving.loader.bulk_load`),
   starts `python -m mic_tf.serving serve` in a subprocess.
3. For each rate: Poisson arrivals for `--seconds` (after `--warmup` seconds), `--event_share`
   of them click events (random user, random item), the rest `recommend` for a random training
   user with n = N; latency from the scheduled send time (no coordinated omission), over
   keep-alive connections opened as needed and reused oldest-idle first (so that requests
   spread over every open connection, hence over the workers that accepted them, as a client
   population would; newest-first reuse funnelled a light load onto one or two connections).
   One JSON line per rate: achieved rate, p50 / p99 / p99.9, errors, the server's per-stage
   times (from each answer's `timings_ms`), the share of answers per worker (`X-Mic-Worker`)
   and the machine's load average before and after.
4. `--restart`: stops Redis (its data saved) under load at the middle rate, starts it again and
   measures how long the service takes to answer with every channel again.
"""

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402

flags.DEFINE_string("bundle_dir", "/tmp/mic_serve_load/bundle", "Synthetic bundle (built if "
                    "missing or if its sizes differ).")
flags.DEFINE_string("work_dir", None, "Redis data and logs (default: beside the bundle).")
flags.DEFINE_integer("num_items", 1000000, "Items N.")
flags.DEFINE_integer("num_users", 1000000, "Training users U.")
flags.DEFINE_integer("dim", 128, "D.")
flags.DEFINE_enum("encoder", "youtube_dnn", ["youtube_dnn", "gru4rec", "comirec_sa"],
                  "User tower of the synthetic bundle.")
flags.DEFINE_integer("maxlen", 50, "Tower history length L.")
flags.DEFINE_integer("top_n", 200, "N (and K1).")
flags.DEFINE_integer("m1", 40, "M1.")
flags.DEFINE_integer("m2", 60, "M2.")
flags.DEFINE_integer("m", 30, "M.")
flags.DEFINE_integer("m3", 50, "M3.")
flags.DEFINE_integer("nprobe", 32, "IVF nprobe of the bundle (the serving default).")
flags.DEFINE_integer("recall_queries", 200, "Queries of the U2I recall check.")
flags.DEFINE_list("rates", ["50", "100", "200"], "Offered loads, requests per second.")
flags.DEFINE_float("seconds", 25.0, "Measured seconds per rate.")
flags.DEFINE_float("warmup", 3.0, "Unmeasured seconds before each rate.")
flags.DEFINE_float("event_share", 0.1, "Share of requests that are click events.")
flags.DEFINE_float("timeout", 5.0, "Client time-out per request (s); counted as an error.")
flags.DEFINE_boolean("restart", True, "Measure the recovery after a Redis restart.")
flags.DEFINE_string("serve_args", "", "Extra flags for `serve` (space separated).")
flags.DEFINE_integer("workers", 2, "`serve --workers=N` (waits for every worker before loading); "
                     "0: pass no --workers (a checkout that predates it: one process).")
flags.DEFINE_string("serve_cwd", None, "Run the service from this checkout (e.g. another branch, "
                    "to compare it under this same load generator); default: this one.")
flags.DEFINE_integer("seed", 0, "Seed.")
FLAGS = flags.FLAGS


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- the bundle
def clustered_unit(rng, n, dim, centres, chunk=200000):
    """`[n, dim]` unit vectors around random centres, and each row's centre."""
    out = np.empty((n, dim), np.float32)
    label = rng.integers(0, len(centres), n)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        x = centres[label[lo:hi]] + rng.normal(size=(hi - lo, dim))
        out[lo:hi] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, label


def clustered_histories(rng, users, length, item_label, num_centres):
    """`[users, length]` item ids: each user clicks items of one centre (their interest), so
    that a history's mean points where a trained tower would put the user."""
    order = np.argsort(item_label[1:], kind="stable") + 1  # item ids grouped by centre
    starts = np.searchsorted(item_label[order], np.arange(num_centres + 1))
    interest = rng.integers(0, num_centres, users)
    lo, size = starts[interest], np.maximum(starts[interest + 1] - starts[interest], 1)
    pos = lo[:, None] + (rng.random((users, length)) * size[:, None]).astype(np.int64)
    return order[np.minimum(pos, len(order) - 1)].astype(np.int32)


def random_table(rng, rows, width, high, exclude_self=False):
    """`[rows, width]` random ids in 1..high (or 0..high-1 without the row's own id)."""
    if exclude_self:
        t = rng.integers(0, high - 1, (rows, width), dtype=np.int32)
        return t + (t >= np.arange(rows, dtype=np.int32)[:, None])  # skips the row itself
    return rng.integers(1, high + 1, (rows, width), dtype=np.int32)


def exact_top(queries, items, k, chunk=100000):
    """Exact top-k item ids (1-based) by inner product, numpy, chunked over items."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for lo in range(1, len(items), chunk):
        s = queries @ items[lo:lo + chunk].T
        cat_s = np.concatenate([best_s, s], 1)
        cat_i = np.concatenate([best_i, np.broadcast_to(np.arange(lo, lo + s.shape[1]),
                                                        s.shape)], 1)
        top = np.argpartition(-cat_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cat_s, top, 1), np.take_along_axis(cat_i, top, 1)
    return best_i


def build_bundle(folder) -> dict:
    import faiss

    from mic_tf.inference import InferenceConfig, channels
    from mic_tf.inference.datastore import Datastore
    from mic_tf.models.retrieval_model import RetrievalModel
    from mic_tf.serving.bundle import BundleParts, write_bundle

    t_all = time.perf_counter()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(FLAGS.seed)
    n, u, d = FLAGS.num_items, FLAGS.num_users, FLAGS.dim
    cap = max(FLAGS.maxlen, FLAGS.m, FLAGS.m2)
    centres = rng.normal(size=(200, d)).astype(np.float32) * 0.6
    items, item_label = clustered_unit(rng, n + 1, d, centres)
    items[0] = 0
    users, _ = clustered_unit(rng, u, d, centres)
    hist = clustered_histories(rng, u, cap, item_label, len(centres))
    category = rng.integers(0, 100, n + 1).astype(np.int32)
    model = RetrievalModel(FLAGS.encoder, n, d, FLAGS.maxlen, num_categories=100)
    model.build_from_batch({"history": hist[:2, :FLAGS.maxlen]})
    model.item_tower.item_embedding.embeddings.assign(items)
    if FLAGS.encoder == "youtube_dnn":  # identity projection: the user = mean of the history
        model.user_tower.dense.set_weights([np.eye(d, dtype=np.float32),
                                            np.zeros(d, np.float32)])
    t = time.perf_counter()
    ds = Datastore(users, items, hist.ravel(), np.arange(u + 1, dtype=np.int64) * cap, category,
                   index_type="ivf", index_params={"nprobe": FLAGS.nprobe}, use_gpu=False,
                   item_score="cosine")
    index_s = time.perf_counter() - t
    ds.item_neighbours = random_table(rng, n + 1, FLAGS.m3, n)
    ds.item_neighbours[0] = 0
    cfg = InferenceConfig(top_n=FLAGS.top_n, k1=FLAGS.top_n, m1=FLAGS.m1, m2=FLAGS.m2, m=FLAGS.m,
                          m3=FLAGS.m3)
    parts = BundleParts(
        datastore=ds, write_tower=lambda f: model.export_user_tower(str(f)),
        user_raw_ids=[str(i) for i in range(u)],
        item_raw_ids=np.array([""] + [str(i) for i in range(1, n + 1)], dtype=object),
        other_history_items=np.zeros(0, np.int32), other_history_offsets=np.zeros(1, np.int64),
        similar_users=random_table(rng, u, FLAGS.m1, u, exclude_self=True),
        popular=np.stack([np.arange(1, 1001), np.arange(1000, 0, -1)], 1), inference=cfg,
        maxlen=FLAGS.maxlen, history_cap=cap,
        source={"synthetic": True, "encoder": FLAGS.encoder, "seed": FLAGS.seed})
    t = time.perf_counter()
    write_bundle(folder, parts)
    write_s = time.perf_counter() - t
    # U2I recall of the served index against exact search. Queries: the mean of a user's
    # history items (what the YouTube DNN tower above computes; a tower with random weights
    # would scatter queries where no trained model puts users).
    faiss.omp_set_num_threads(1)
    pick = rng.choice(u, FLAGS.recall_queries, replace=False)
    # Second set: item-like queries (`inference_latency.py`'s), for its earlier figures.
    queries = {"history_mean": items[hist[pick, -FLAGS.maxlen:]].mean(axis=1),
               "item_like": clustered_unit(rng, FLAGS.recall_queries, d, centres)[0]}
    by_nprobe = {}
    for name, q in queries.items():
        exact = exact_top(ds.query_vectors(q), ds.item_vectors, FLAGS.top_n)
        for nprobe in sorted({8, 16, 32, 64, 128, FLAGS.nprobe}):
            ds._items.index.nprobe = nprobe  # this check only; the bundle keeps FLAGS.nprobe
            t = time.perf_counter()
            approx = channels.u2i(ds, q, FLAGS.top_n)
            ms = (time.perf_counter() - t) * 1000 / len(q)
            by_nprobe[f"{name}@{nprobe}"] = {"recall": round(float(np.mean([
                len(set(a) & set(e)) / FLAGS.top_n for a, e in zip(approx, exact)])), 4),
                "ms_per_query": round(ms, 3)}
    ds._items.index.nprobe = FLAGS.nprobe
    recall = by_nprobe[f"history_mean@{FLAGS.nprobe}"]["recall"]
    info = {"bundle": "built", "num_items": n, "num_users": u, "dim": d,
            "encoder": FLAGS.encoder, "index": ds.settings()["built_params"]["items"],
            "index_build_seconds": round(index_s, 1), "bundle_write_seconds": round(write_s, 1),
            "build_seconds_total": round(time.perf_counter() - t_all, 1),
            "u2i_recall_vs_exact": recall, "recall_queries": FLAGS.recall_queries,
            "recall_by_nprobe": by_nprobe}
    with open(os.path.join(folder, "..", "serve_load_build.json"), "w") as f:
        json.dump(info, f)
    return info


def bundle_matches(folder) -> bool:
    path = os.path.join(folder, "bundle.json")
    if not os.path.exists(path):
        return False
    meta = json.load(open(path))
    return ((meta["num_items"], meta["num_train_users"], meta["dim"], meta["maxlen"],
             meta["source"].get("encoder")) == (FLAGS.num_items, FLAGS.num_users, FLAGS.dim,
                                                FLAGS.maxlen, FLAGS.encoder))


# ----------------------------------------------------------------------------- the client
class Http:
    """A minimal HTTP/1.1 keep-alive client (asyncio streams): the load generator must cost
    the shared cores as little as possible."""

    def __init__(self, host, port):
        import collections

        self.host, self.port, self.idle = host, port, collections.deque()

    async def post(self, path, body: bytes):
        if self.idle:  # a kept-alive connection the server may have closed meanwhile
            try:
                return await self._send(self.idle.popleft(), path, body)
            except (ConnectionError, EOFError, asyncio.IncompleteReadError):
                pass  # nothing was answered on it: send again on a new connection
        return await self._send(await asyncio.open_connection(self.host, self.port), path, body)

    async def _send(self, conn, path, body: bytes):
        reader, writer = conn
        writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(),
                                                        len(body), body))
        line = await reader.readline()
        if not line:
            writer.close()
            raise EOFError("connection closed before an answer")
        status = int(line.split()[1])
        length, close, worker = 0, False, None
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"x-mic-worker":
                worker = value.strip().decode()
        payload = await reader.readexactly(length)
        if close:
            writer.close()
        else:
            self.idle.append(conn)
        return status, payload, worker


async def one(http, path, body, scheduled, timeout, out):
    try:
        status, payload, worker = await asyncio.wait_for(http.post(path, body), timeout)
    except Exception as e:  # time-outs, refused or reset connections: errors, measured
        out.append((path, None, (time.perf_counter() - scheduled) * 1000, repr(e), None))
        return
    latency = (time.perf_counter() - scheduled) * 1000
    timings = None
    if status == 200 and path == "/v1/recommend":
        body = json.loads(payload)
        timings = body["timings_ms"]
        timings["degraded"] = bool(body["degraded"])
    out.append((path, status, latency, timings, worker))


async def offered_load(port, rate, seconds, rng, num_users, num_items, out, stop=None):
    """Poisson arrivals at `rate` for `seconds`; every request is a task started at its
    scheduled time, whatever earlier ones are doing (open loop)."""
    http = Http("127.0.0.1", port)
    tasks, start = [], time.perf_counter()
    t = start
    while t - start < seconds and not (stop and stop.is_set()):
        t += rng.exponential(1.0 / rate)
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if rng.random() < FLAGS.event_share:
            path = "/v1/events"
            body = json.dumps({"user_id": str(rng.integers(num_users)),
                               "item_id": str(rng.integers(1, num_items + 1))}).encode()
        else:
            path = "/v1/recommend"
            body = json.dumps({"user_id": str(rng.integers(num_users)),
                               "n": FLAGS.top_n}).encode()
        tasks.append(asyncio.ensure_future(one(http, path, body, t, FLAGS.timeout, out)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - start


def pct(values, q):
    return round(float(np.percentile(values, q)), 2) if len(values) else None


def summarise(rate, results, wall):
    lat = [r[2] for r in results]
    errors = [r for r in results if r[1] != 200]
    rec = [r for r in results if r[0] == "/v1/recommend" and r[1] == 200]
    stages = {}
    for name in ("redis", "tower", "faiss", "score", "total"):
        values = [r[3].get(name, 0.0) for r in rec]
        stages[name] = {"p50": pct(values, 50), "p99": pct(values, 99),
                        "mean": round(float(np.mean(values)), 2) if values else None}
    outside = [r[2] - r[3]["total"] for r in rec]
    stages["outside_app"] = {"p50": pct(outside, 50), "p99": pct(outside, 99),
                             "mean": round(float(np.mean(outside)), 2) if outside else None}
    ev = [r[2] for r in results if r[0] == "/v1/events" and r[1] == 200]
    workers = {}
    for r in results:
        if r[4] is not None:
            workers[r[4]] = workers.get(r[4], 0) + 1
    return {"rate": rate, "achieved_rate": round(len(results) / wall, 1),
            "requests": len(results), "errors": len(errors),
            "error_kinds": sorted({str(e[1]) if e[1] else e[3][:60] for e in errors})[:5],
            "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "p999_ms": pct(lat, 99.9),
            "recommend_p99_ms": pct([r[2] for r in rec], 99), "events_p99_ms": pct(ev, 99),
            "degraded": sum(1 for r in rec if r[3]["degraded"]), "server_stages_ms": stages,
            "worker_share": {w: round(c / len(results), 3) for w, c in sorted(workers.items())}}


def cpu_seconds(root_pid: int) -> float:
    """CPU time (user + system, every thread) of a process and all its descendants, from /proc
    (the service's worker processes are its children)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in stats.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(stats[p][1] for p in tree if p in stats) / tick


def run_rate(port, rate, num_users, num_items, seed, pids=None):
    """One rate; `pids` = {"server": pid, "redis": pid}: their CPU per request is reported
    (ms of CPU per request, every request kind, over the measured seconds), with the load
    generator's own."""
    rng = np.random.default_rng(seed)
    warm = []
    asyncio.run(offered_load(port, rate, FLAGS.warmup, rng, num_users, num_items, warm))
    results = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    pids = pids or {}
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    me0 = sum(os.times()[:2])
    wall = asyncio.run(offered_load(port, rate, FLAGS.seconds, rng, num_users, num_items,
                                    results))
    cpu = {f"{name}_cpu_ms_per_request": round((cpu_seconds(pid) - cpu0[name]) * 1000
                                               / max(len(results), 1), 3)
           for name, pid in pids.items()}
    cpu["load_generator_cpu_ms_per_request"] = round(
        (sum(os.times()[:2]) - me0) * 1000 / max(len(results), 1), 3)
    return {**summarise(rate, results, wall), **cpu, "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


# ----------------------------------------------------------------------------- the processes
def start_service(bundle_dir, redis_url, port, work):
    import subprocess

    import httpx

    cmd = [sys.executable, "-m", "mic_tf.serving", "serve", f"--bundle_dir={bundle_dir}",
           f"--redis_url={redis_url}", f"--port={port}"] + FLAGS.serve_args.split()
    if FLAGS.workers:
        cmd.append(f"--workers={FLAGS.workers}")
    logf = open(os.path.join(work, "serve.log"), "a")  # every run kept (tracebacks of 500s)
    logf.write(f"=== {time.strftime('%FT%TZ', time.gmtime())} {' '.join(cmd[2:])} "
               f"(cwd {FLAGS.serve_cwd or 'this checkout'})\n")
    logf.flush()
    cwd = FLAGS.serve_cwd or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=cwd)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited: see {work}/serve.log")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            if r.status_code == 200 and len(r.json().get("workers", [0])) == max(FLAGS.workers,
                                                                               1):
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("serve did not start")


def measure_restart(redis, port, num_users, num_items) -> dict:
    """Stops Redis (data saved) under load at the middle rate, starts it again, and times the
    service's return to full answers once Redis answers PING."""
    import threading

    import httpx

    rate = float(FLAGS.rates[len(FLAGS.rates) // 2])
    stop, results = threading.Event(), []
    rng = np.random.default_rng(FLAGS.seed + 99)
    loader = threading.Thread(target=lambda: asyncio.run(offered_load(
        port, rate, 3600, rng, num_users, num_items, results, stop)), daemon=True)
    loader.start()
    time.sleep(3)
    t0 = time.perf_counter()
    redis.stop()
    down_s = time.perf_counter() - t0
    time.sleep(2)
    t0 = time.perf_counter()
    redis.start()
    redis_up = time.perf_counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        while True:  # a 503 (the concurrency limit, when the machine falls behind) is "not yet"
            r = c.post("/v1/recommend", json={"user_id": "1", "n": FLAGS.top_n})
            if r.status_code == 200 and not r.json()["degraded"]:
                break
            time.sleep(0.01)
    recovered = time.perf_counter()
    time.sleep(2)
    stop.set()
    loader.join(60)
    rec = [x for x in results if x[0] == "/v1/recommend"]
    return {"restart": True, "rate": rate, "redis_shutdown_save_seconds": round(down_s, 2),
            "redis_start_seconds": round(redis_up - t0, 2),
            "service_recovery_ms_after_redis_up": round((recovered - redis_up) * 1000, 1),
            "requests": len(results), "recommend_non_200": sum(1 for x in rec if x[1] != 200),
            "degraded_answers": sum(1 for x in rec if x[1] == 200 and x[3]["degraded"]),
            "events_503": sum(1 for x in results if x[0] == "/v1/events" and x[1] == 503),
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


def main(argv):
    del argv
    from mic_tf.serving.bundle import Bundle
    from mic_tf.serving.loader import bulk_load
    from mic_tf.serving.redis_process import RedisServer, free_port
    from mic_tf.serving.store import StoreSettings, connect

    bundle_dir = os.path.abspath(FLAGS.bundle_dir)
    work = FLAGS.work_dir or os.path.join(os.path.dirname(bundle_dir), "work")
    os.makedirs(work, exist_ok=True)
    if bundle_matches(bundle_dir):
        info = json.load(open(os.path.join(bundle_dir, "..", "serve_load_build.json")))
        info["bundle"] = "reused"
    else:
        info = build_bundle(bundle_dir)
    print(json.dumps(info), flush=True)
    bundle = Bundle(bundle_dir)
    redis = RedisServer(os.path.join(work, "redis")).start()
    service = None
    try:
        info = bulk_load(bundle, connect(StoreSettings(url=redis.url, timeout_ms=60000)),
                         log=log)
        print(json.dumps({"bulk_load": info}), flush=True)
        port = free_port()
        t = time.perf_counter()
        service = start_service(bundle_dir, redis.url, port, work)
        print(json.dumps({"service_start_seconds": round(time.perf_counter() - t, 1)}),
              flush=True)
        users, items = bundle.meta["num_users"], bundle.num_items
        for j, rate in enumerate(FLAGS.rates):
            print(json.dumps(run_rate(port, float(rate), users, items, FLAGS.seed + j,
                                      {"server": service.pid, "redis": redis.proc.pid})),
                  flush=True)
        if FLAGS.restart:
            print(json.dumps(measure_restart(redis, port, users, items)), flush=True)
    finally:
        if service is not None:
            service.terminate()
            service.wait(30)
        redis.stop(save=False)


if __name__ == "__main__":
    app.run(main)
