"""A worker for tests/test_distributed.py: trains the toy model of `toy_setup` for --steps steps
with the multi-worker loop (under TF_CONFIG, started by `mic_tf.distributed.launch --script=`)
and the chief writes each step's loss terms to --out as JSON."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

flags.DEFINE_enum("distribute", "multi_worker", ["multi_worker"], "Set by the launcher.")
flags.DEFINE_string("encoder", "youtube_dnn", "Encoder.")
flags.DEFINE_string("plugin", "none", "none or mic.")
flags.DEFINE_string("basic_loss", "sampled_softmax", "Basic loss.")
flags.DEFINE_integer("steps", 20, "Steps to run.")
flags.DEFINE_string("out", None, "JSON file of the per-step losses (chief).")
flags.DEFINE_string("run_dir", None, "The chief's run folder (checkpoints, TensorBoard).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import keras

    from mic_tf.distributed.cluster import Distribution
    from mic_tf.distributed.loop import DistributedTrainer
    from mic_tf.experiment import build_model, plugin_parts
    from tests.toy_config import toy_setup

    distributed = Distribution.from_env()
    ds, cfg = toy_setup(FLAGS.encoder, FLAGS.plugin, FLAGS.basic_loss)
    keras.utils.set_random_seed(cfg.train.seed)
    map_fn, callbacks = plugin_parts(cfg, ds, lambda msg: None)
    trainer = DistributedTrainer(lambda: build_model(cfg, ds), ds, cfg.train, FLAGS.run_dir,
                                 distributed.strategy, distributed.is_chief, map_fn=map_fn,
                                 mining=callbacks[0] if callbacks else None,
                                 log=lambda msg: None)
    losses = trainer.run_steps(FLAGS.steps)
    if distributed.is_chief:
        weights = [w.tolist() for w in trainer.model.get_weights()[:2]]
        with open(FLAGS.out, "w") as f:
            json.dump({"losses": losses, "weights": weights,
                       "mined": int((keras.ops.convert_to_numpy(trainer.model.user_pos) >= 0).sum())
                       if FLAGS.plugin == "mic" else 0}, f)
    distributed.leave()  # together, as experiments/run.py does


if __name__ == "__main__":
    app.run(main)
