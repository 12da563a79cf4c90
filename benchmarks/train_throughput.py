"""Training throughput of one encoder (spec 8), printing a final JSON line with examples_per_sec.

    python benchmarks/train_throughput.py --encoder=gru4rec --plugin=none --dataset=ml-100k \
        --batch_size=256 --maxlen=20 --embedding_dim=64 --seconds=30
    python benchmarks/train_throughput.py --encoder=youtube_dnn --dataset=synthetic \
        --num_items=300000 --seconds=30
    python benchmarks/train_throughput.py --encoder=comirec_dr --plugin=mic --dataset=ml-1m \
        --embedding_dim=128 --mic_settings=configs/mic_ml-1m_comirec_dr.flags

Everything runs in one `model.fit` call, as in training; the first `--warmup_steps`
(tracing, first-touch allocations) are not timed. Synthetic data is
prepared with min_item_count=1 so the catalogue has about `--num_items` items.
"""

import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

flags.DEFINE_string("encoder", "gru4rec", "Encoder name.")
flags.DEFINE_enum("plugin", "none", ["none", "mic"], "Plugin.")
flags.DEFINE_enum("dataset", "ml-100k", ["ml-100k", "ml-1m", "synthetic"], "Dataset.")
flags.DEFINE_integer("num_items", 1000, "synthetic: number of items.")
flags.DEFINE_integer("num_users", None, "synthetic: users (default max(20000, num_items / 5)).")
flags.DEFINE_string("basic_loss", "sampled_softmax", "Basic loss.")
flags.DEFINE_string("sampler", "comirec", "Training sampler.")
flags.DEFINE_integer("batch_size", 256, "Batch size.")
flags.DEFINE_integer("maxlen", 20, "History length.")
flags.DEFINE_integer("embedding_dim", 64, "Embedding size.")
flags.DEFINE_float("seconds", 30, "Timed training seconds.")
flags.DEFINE_integer("warmup_steps", 50, "Untimed steps first (rounded up to 50).")
flags.DEFINE_boolean("jit_compile", None, "XLA-compile the update (default as run.py: on below "
                     "100k items).")
flags.DEFINE_integer("steps_per_execution", 1, "Keras steps per tf.function call.")
flags.DEFINE_enum("optimizer", "auto", ["auto", "adam", "lazy_adam"], "Optimizer (auto: "
                  "lazy_adam from 100k items).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_integer("mining_every", 500, "MIC: steps between minings (their time is included).")
flags.DEFINE_string("mic_settings", None, "MIC: a selected-settings flagfile "
                    "(configs/mic_D_E.flags); its training settings (term weights, ablation, "
                    "mined_weight, single_channel_heads) are used, its inference settings do not "
                    "matter here. Mining runs every --mining_every steps from the start, also for "
                    "settings that start it on the first plateau (there is no validation here).")
flags.DEFINE_string("data_dir", "/tmp/mic_bench_data", "Processed-data cache.")
FLAGS = flags.FLAGS


def load_data():
    from mic_tf.data.prepare import prepare_dataset
    from mic_tf.data.protocol import ProtocolParams

    if FLAGS.dataset in ("ml-100k", "ml-1m"):
        return prepare_dataset(FLAGS.dataset, data_dir=FLAGS.data_dir, verbose=False)
    users = FLAGS.num_users or max(20000, FLAGS.num_items // 5)
    options = {"synthetic_users": users, "synthetic_items": FLAGS.num_items,
               "synthetic_seed": FLAGS.seed}
    return prepare_dataset("synthetic", data_dir=FLAGS.data_dir, source_options=options,
                           params=ProtocolParams(min_item_count=1), verbose=False)


_CHUNK = 50  # steps per timed "epoch"


# flagfile names (run.py) -> MICConfig fields, for the settings that change a training step
_TRAINING_SETTINGS = {"w_uv": float, "w_vv": float, "w_uu": float, "mined_weight": float,
                      "single_channel_heads": bool}


def apply_mic_settings(cfg, path: str) -> dict:
    """Sets `cfg`'s MIC training settings (and ablation) from a selected-settings flagfile;
    returns what was applied."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from experiments.flagfiles import as_bool, read_flagfile

    values, applied = read_flagfile(path), {}
    for name, kind in _TRAINING_SETTINGS.items():
        if name in values:
            # bool("false") is True: a boolean goes through the flag syntax's own reading
            applied[name] = as_bool(values[name]) if kind is bool else kind(values[name])
            setattr(cfg.mic, name, applied[name])
    if "ablation" in values:
        cfg.ablation = applied["ablation"] = values["ablation"]
    return applied


def make_timer(seconds: float, warmup_epochs: int):
    """A Keras callback timing whole `_CHUNK`-step epochs after `warmup_epochs` untimed ones; it
    stops `fit` once `seconds` have been timed."""
    import keras

    class Timer(keras.callbacks.Callback):
        steps, elapsed, start = 0, 0.0, None

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            if epoch + 1 == warmup_epochs:
                self.start = now
            elif self.start is not None:
                self.steps += _CHUNK
                self.elapsed = now - self.start
                self.model.stop_training = self.elapsed >= seconds

    return Timer()


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import keras

    from mic_tf.experiment import ExperimentConfig, build_model, plugin_parts
    from mic_tf.data.pipeline import make_train_dataset
    from mic_tf.training.trainer import (TrainConfig, default_jit_compile, make_optimizer,
                                         resolve_optimizer)

    ds = load_data()
    jit = default_jit_compile(ds.num_items, FLAGS.jit_compile)
    train = TrainConfig(batch_size=FLAGS.batch_size, maxlen=FLAGS.maxlen, seed=FLAGS.seed,
                        sampler=FLAGS.sampler, jit_compile=jit)
    cfg = ExperimentConfig(encoder=FLAGS.encoder, plugin=FLAGS.plugin,
                           basic_loss=FLAGS.basic_loss, embedding_dim=FLAGS.embedding_dim,
                           train=train)
    cfg.mic.mining_every = FLAGS.mining_every
    settings = {}
    if FLAGS.mic_settings:
        if FLAGS.plugin != "mic":
            raise app.UsageError("--mic_settings needs --plugin=mic")
        settings = apply_mic_settings(cfg, FLAGS.mic_settings)
    cfg.validate()
    keras.utils.set_random_seed(FLAGS.seed)
    model = build_model(cfg, ds)
    optimizer = resolve_optimizer(FLAGS.optimizer, ds.num_items)
    model.compile(optimizer=make_optimizer(optimizer, 1e-3), jit_compile=jit,
                  steps_per_execution=FLAGS.steps_per_execution)
    map_fn, callbacks = plugin_parts(cfg, ds, log=lambda msg: None)
    dataset = make_train_dataset(ds, batch_size=FLAGS.batch_size, maxlen=FLAGS.maxlen,
                                 seed=FLAGS.seed, sampler=FLAGS.sampler, map_fn=map_fn)
    # One `fit` call, as the trainer makes, in `_CHUNK`-step epochs: the warm-up epochs (tracing,
    # first-touch allocations) are not timed. (Calling `fit` once per chunk instead re-creates
    # the input iterator every time and under-reported throughput by up to 1.6x.)
    warmup_epochs = max(1, -(-FLAGS.warmup_steps // _CHUNK))
    timer = make_timer(FLAGS.seconds, warmup_epochs)
    model.fit(dataset, steps_per_epoch=_CHUNK, epochs=10**9, verbose=0,
              callbacks=[*callbacks, timer])
    steps, elapsed = timer.steps, timer.elapsed
    result = {"encoder": FLAGS.encoder, "plugin": FLAGS.plugin, "dataset": FLAGS.dataset,
              "mining_every": FLAGS.mining_every if FLAGS.plugin == "mic" else None,
              "mic_settings": FLAGS.mic_settings, "mic_training_settings": settings or None,
              "num_items": ds.num_items, "num_train_users": len(ds.split_range("train")),
              "basic_loss": FLAGS.basic_loss, "sampler": FLAGS.sampler,
              "batch_size": FLAGS.batch_size, "maxlen": FLAGS.maxlen,
              "embedding_dim": FLAGS.embedding_dim, "jit_compile": jit,
              "optimizer": optimizer, "steps_per_execution": FLAGS.steps_per_execution,
              "steps": steps, "seconds": round(elapsed, 2),
              "examples_per_sec": round(steps * FLAGS.batch_size / elapsed, 1),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
