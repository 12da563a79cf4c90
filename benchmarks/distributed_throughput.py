"""Training throughput of the multi-worker loop with 1 and 2 local workers (spec 10).

    python benchmarks/distributed_throughput.py [--workers=1,2] [--encoder=gru4rec] [--plugin=none]

For each worker count it starts the job with `mic_tf.distributed.launch` (this script is the
workers' script too), trains `--warmup` steps, then times `--steps` steps of the global batch
`--batch_size` on a synthetic dataset; prints one JSON line per worker count on stderr and a
final JSON line with every figure (examples/s = steps x global batch / seconds, on the chief).
On this 2-core machine two workers share the cores (and the ring all-reduce runs over loopback),
so little or no speed-up is expected: the figure says what the collectives cost, not what a
cluster gains. The load average at the end of each run is recorded beside the figure.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

flags.DEFINE_list("workers", ["1", "2"], "Worker counts to measure.")
flags.DEFINE_enum("distribute", "none", ["none", "multi_worker"], "Set by the launcher: this "
                  "process is a worker.")
flags.DEFINE_string("encoder", "gru4rec", "Encoder.")
flags.DEFINE_enum("plugin", "none", ["none", "mic"], "Plugin (MIC adds the contrastive terms' "
                  "all-gathers; no mining in the timed steps).")
flags.DEFINE_integer("batch_size", 256, "Global batch.")
flags.DEFINE_integer("embedding_dim", 64, "D.")
flags.DEFINE_integer("maxlen", 20, "L.")
flags.DEFINE_integer("users", 5000, "Synthetic users.")
flags.DEFINE_integer("items", 2000, "Synthetic items.")
flags.DEFINE_integer("warmup", 10, "Untimed steps (tracing).")
flags.DEFINE_integer("steps", 50, "Timed steps.")
flags.DEFINE_string("data_dir", None, "Processed data folder (default: a temporary folder).")
flags.DEFINE_string("result", None, "Worker mode: the chief writes its figure here.")
FLAGS = flags.FLAGS


def dataset():
    from mic_tf.data.prepare import prepare_dataset

    return prepare_dataset("synthetic", data_dir=FLAGS.data_dir,
                           source_options={"synthetic_users": FLAGS.users,
                                           "synthetic_items": FLAGS.items})


def worker() -> None:
    import keras

    from mic_tf.distributed.cluster import Distribution
    from mic_tf.distributed.loop import DistributedTrainer
    from mic_tf.experiment import ExperimentConfig, build_model, plugin_parts
    from mic_tf.training.trainer import TrainConfig

    distributed = Distribution.from_env()
    ds = dataset()
    cfg = ExperimentConfig(encoder=FLAGS.encoder, plugin=FLAGS.plugin,
                           embedding_dim=FLAGS.embedding_dim,
                           train=TrainConfig(batch_size=FLAGS.batch_size, maxlen=FLAGS.maxlen,
                                             jit_compile=False))
    cfg.mic.mining_start = 10 ** 9  # no mining in the timed steps
    keras.utils.set_random_seed(0)
    map_fn, _ = plugin_parts(cfg, ds, lambda msg: None)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = DistributedTrainer(lambda: build_model(cfg, ds), ds, cfg.train, run_dir,
                                     distributed.strategy, distributed.is_chief, map_fn=map_fn,
                                     log=lambda msg: None)
        trainer.run_steps(FLAGS.warmup)
        start = time.perf_counter()
        trainer.run_steps(FLAGS.steps, start_step=FLAGS.warmup)
        seconds = time.perf_counter() - start
        if distributed.is_chief:
            with open(FLAGS.result, "w") as f:
                json.dump({"workers": distributed.num_workers, "steps": FLAGS.steps,
                           "seconds": round(seconds, 3),
                           "examples_per_second": round(FLAGS.steps * FLAGS.batch_size / seconds),
                           "load_average_1min": round(os.getloadavg()[0], 2)}, f)
    distributed.leave()  # every worker's temporary run folder is its own, removed above


def measure(count: int, data_dir: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        args = [a for a in sys.argv[1:] if not a.startswith(("--workers", "--data_dir"))]
        proc = subprocess.run(
            [sys.executable, "-m", "mic_tf.distributed.launch", f"--workers={count}",
             f"--script={os.path.abspath(__file__)}", "--", *args, f"--result={result}",
             f"--data_dir={data_dir}"],
            capture_output=True, text=True, cwd=sys.path[0])
        if proc.returncode != 0:
            sys.exit(f"error: the {count}-worker run failed:\n{proc.stderr[-3000:]}")
        with open(result) as f:
            return json.load(f)


def main(argv):
    del argv
    if FLAGS.distribute == "multi_worker":
        return worker()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = FLAGS.data_dir or tmp
        FLAGS.data_dir = data_dir
        dataset()  # prepared once, before the workers start
        figures = []
        for count in (int(w) for w in FLAGS.workers):
            figures.append(measure(count, data_dir))
            print(json.dumps(figures[-1]), file=sys.stderr, flush=True)
    base = figures[0]["examples_per_second"]
    print(json.dumps({"benchmark": "distributed_throughput", "encoder": FLAGS.encoder,
                      "plugin": FLAGS.plugin, "global_batch": FLAGS.batch_size,
                      "embedding_dim": FLAGS.embedding_dim, "maxlen": FLAGS.maxlen,
                      "dataset": f"synthetic {FLAGS.users} users x {FLAGS.items} items",
                      "cpu_count": os.cpu_count(), "runs": figures,
                      "speedup": {str(f["workers"]): round(f["examples_per_second"] / base, 2)
                                  for f in figures}}))


if __name__ == "__main__":
    app.run(main)
