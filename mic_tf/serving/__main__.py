"""The serving command line (absl flags live here only; the library takes plain arguments).

    python -m mic_tf.serving export --run_dir=RUN --bundle_dir=B [--index_type=auto|flat|ivf|hnsw]
    python -m mic_tf.serving load   --bundle_dir=B --redis_url=redis://127.0.0.1:6379/0
    python -m mic_tf.serving serve  --bundle_dir=B --redis_url=... [--host=127.0.0.1 --port=8000
                                    --api_key=KEY --workers=N]
    python -m mic_tf.serving drop   --version=V --redis_url=...   (an old version's keys)

Each command prints a final JSON line.
"""

import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from absl import app, flags, logging  # noqa: E402

COMMANDS = ("export", "load", "serve", "drop")

flags.DEFINE_string("run_dir", None, "export: a finished run of experiments/run.py.")
flags.DEFINE_string("bundle_dir", None, "export: the bundle to write; load/serve: to read.")
flags.DEFINE_enum("index_type", "auto", ["auto", "flat", "ivf", "hnsw"],
                  "export: Faiss index (auto: exact up to 100k items, IVF nprobe 32 above).")
flags.DEFINE_integer("nprobe", None, "export: IVF lists probed (default 32).")
flags.DEFINE_string("version", None, "export: version id (default UTC time + random); "
                    "drop: the version to delete.")
flags.DEFINE_float("history_until", 0.0, "export: Unix time of the newest click in the run's "
                   "data; events at or before it are taken as already in the bundle (0: none).")
flags.DEFINE_string("data_dir", None, "export: processed-data folder (default: the run's).")
flags.DEFINE_string("redis_url", "redis://127.0.0.1:6379/0", "load/serve/drop: Redis.")
flags.DEFINE_string("key_prefix", "mic", "Redis key prefix.")
flags.DEFINE_boolean("force", False, "load: load again a version marked loaded; drop: drop "
                     "even the active version.")
flags.DEFINE_string("host", "127.0.0.1", "serve: bind address (loopback unless --api_key).")
flags.DEFINE_integer("port", 8000, "serve: port.")
flags.DEFINE_string("api_key", None, "serve: key required (X-API-Key) on events and admin "
                    "routes; required for a non-loopback --host. Default: $MIC_API_KEY.")
flags.DEFINE_float("redis_timeout_ms", 50.0, "serve: time-out of one Redis round trip.")
flags.DEFINE_float("redis_connect_timeout_ms", 50.0, "serve: Redis connect time-out.")
flags.DEFINE_float("redis_backoff_ms", 500.0, "serve: after a Redis failure, answer without "
                   "Redis this long before trying again.")
flags.DEFINE_integer("max_n", 1000, "serve: largest n of a request.")
flags.DEFINE_integer("max_history", 1000, "serve: longest history of a request.")
flags.DEFINE_integer("max_body_bytes", 65536, "serve: request body limit.")
flags.DEFINE_integer("max_concurrency", 64, "serve: requests in progress before 503.")
flags.DEFINE_integer("faiss_threads", 1, "serve: Faiss OpenMP threads.")
flags.DEFINE_integer("tf_threads", 1, "serve: TensorFlow intra-op threads.")
flags.DEFINE_boolean("inline_recommend", True, "serve: run recommend on the event loop's "
                     "thread (--noinline_recommend: in FastAPI's thread pool; BUILD_NOTES, "
                     "Serving).")
flags.DEFINE_integer("workers", 2, "serve: uvicorn worker processes sharing the port, each with "
                     "its own copy of the model (memory x N, x 2N during a reload) and its own "
                     "GIL; a reload reaches every worker. 2 measured best on this 2-core machine "
                     "(benchmarks/README); 1: one process.")
FLAGS = flags.FLAGS


def _need(*names):
    missing = [f"--{n}" for n in names if getattr(FLAGS, n) in (None, "")]
    if missing:
        raise SystemExit(f"error: {' '.join(missing)} required")


def _client():
    from mic_tf.serving.store import StoreSettings, connect

    return connect(StoreSettings(url=FLAGS.redis_url, timeout_ms=60_000,
                                 connect_timeout_ms=5_000))


def cmd_export():
    _need("run_dir", "bundle_dir")
    from mic_tf.serving.export import export_run

    params = {"nprobe": FLAGS.nprobe} if FLAGS.nprobe else None
    return export_run(FLAGS.run_dir, FLAGS.bundle_dir, index_type=FLAGS.index_type,
                      index_params=params, version=FLAGS.version,
                      history_until=FLAGS.history_until, data_dir=FLAGS.data_dir,
                      log=lambda m: print(m, file=sys.stderr))


def cmd_load():
    _need("bundle_dir")
    from mic_tf.serving.bundle import Bundle
    from mic_tf.serving.loader import bulk_load

    return bulk_load(Bundle(FLAGS.bundle_dir), _client(), prefix=FLAGS.key_prefix,
                     force=FLAGS.force, log=lambda m: print(m, file=sys.stderr))


def cmd_drop():
    _need("version")
    from mic_tf.serving.loader import drop_version

    removed = drop_version(_client(), FLAGS.key_prefix, FLAGS.version, force=FLAGS.force,
                           log=lambda m: print(m, file=sys.stderr))
    return {"version": FLAGS.version, "removed_keys": removed}


def cmd_serve():
    _need("bundle_dir")
    if FLAGS.workers < 1:
        from mic_tf.errors import UsageError

        raise UsageError(f"--workers must be >= 1, got {FLAGS.workers}")
    api_key = FLAGS.api_key or os.environ.get("MIC_API_KEY") or None
    from mic_tf.serving.security import check_bind

    check_bind(FLAGS.host, api_key)
    # Before Faiss (libgomp) loads: the default of threads that never call omp_set_num_threads.
    os.environ.setdefault("OMP_NUM_THREADS", str(FLAGS.faiss_threads))
    import uvicorn

    from mic_tf.serving.app import ServingSettings, create_app
    from mic_tf.serving.store import StoreSettings

    settings = ServingSettings(
        bundle_dir=FLAGS.bundle_dir, prefix=FLAGS.key_prefix, api_key=api_key,
        store=StoreSettings(url=FLAGS.redis_url, timeout_ms=FLAGS.redis_timeout_ms,
                            connect_timeout_ms=FLAGS.redis_connect_timeout_ms,
                            backoff_ms=FLAGS.redis_backoff_ms),
        max_n=FLAGS.max_n, max_history=FLAGS.max_history, max_body_bytes=FLAGS.max_body_bytes,
        faiss_threads=FLAGS.faiss_threads, tf_intra_threads=FLAGS.tf_threads,
        inline_recommend=FLAGS.inline_recommend)
    if FLAGS.workers > 1:
        return _serve_workers(settings, api_key)
    application = create_app(settings)
    model = application.state.mic.model
    print(json.dumps({"serving": model.version, "host": FLAGS.host, "port": FLAGS.port}),
          flush=True)
    uvicorn.run(application, host=FLAGS.host, port=FLAGS.port, log_level="warning",
                access_log=False, limit_concurrency=FLAGS.max_concurrency)
    return {"stopped": model.version}


def _serve_workers(settings, api_key):
    """`--workers=N`: uvicorn's supervisor starts N processes on one socket, each building the
    app from the environment (`app.app_from_environment`); a fresh state folder carries reloads
    between them and holds the Prometheus multiprocess files (`serving/workers.py`)."""
    import uvicorn

    from mic_tf.serving.bundle import Bundle
    from mic_tf.serving.workers import SETTINGS_ENV, STATE_ENV, prepare_state_dir

    version = Bundle(settings.bundle_dir).version  # a bad folder fails here, not N times
    state_dir = prepare_state_dir(tempfile.mkdtemp(prefix="mic-serve-"))
    os.environ[STATE_ENV] = str(state_dir)
    os.environ[SETTINGS_ENV] = settings.to_json()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(state_dir / "prometheus")
    if api_key:
        os.environ["MIC_API_KEY"] = api_key
    print(json.dumps({"serving": version, "host": FLAGS.host, "port": FLAGS.port,
                      "workers": FLAGS.workers, "state_dir": str(state_dir)}), flush=True)
    try:
        # The workers answer the supervisor's pings from a thread, but a big bundle's load
        # holds the GIL for seconds at a time: a 5 s health check would kill them mid-load.
        uvicorn.run("mic_tf.serving.app:app_from_environment", factory=True,
                    workers=FLAGS.workers, host=FLAGS.host, port=FLAGS.port,
                    log_level="warning", access_log=False,
                    limit_concurrency=FLAGS.max_concurrency, timeout_worker_healthcheck=120)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    return {"stopped": version, "workers": FLAGS.workers}


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise SystemExit(f"usage: python -m mic_tf.serving {{{','.join(COMMANDS)}}} --flags "
                         f"(got {argv[1:]})")
    import redis

    from mic_tf.errors import MicError

    try:
        result = globals()[f"cmd_{argv[1]}"]()
    except MicError as e:
        sys.exit(f"error: {e}")
    except redis.RedisError as e:
        sys.exit(f"error: Redis at {FLAGS.redis_url}: {e}")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    app.run(main)
