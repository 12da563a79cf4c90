"""Evaluate a finished run's best checkpoint through U2I and through cross-channel inference.

    python experiments/inference_on_checkpoint.py --run_dir=runs/issue4/youtube_dnn-none-s0

Separates MIC's inference from its training: on a baseline (`--plugin=none`) checkpoint it shows
what cosine U2I and the U2U / I2I channels change. Prints one JSON line of test recall@50 values.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The repository root replaces this script's folder on the path: experiments/select.py would
# otherwise shadow the standard library's `select` (imported by subprocess, socket, ...).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags, logging  # noqa: E402

flags.DEFINE_string("run_dir", None, "A run folder written by experiments/run.py.")
flags.DEFINE_string("data_dir", None, "Processed data folder (default: the run's).")
flags.mark_flag_as_required("run_dir")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from mic_tf.data.prepare import prepare_dataset
    from mic_tf.data.protocol import ProtocolParams
    from mic_tf.experiment import ExperimentConfig, build_model
    from mic_tf.inference.evaluator import CrossChannelEvaluator
    from mic_tf.inference.score import InferenceConfig
    from mic_tf.training.trainer import TrainConfig, U2IEvaluator

    run = json.load(open(os.path.join(FLAGS.run_dir, "flags.json")))
    ds = prepare_dataset(run["dataset"], data_dir=FLAGS.data_dir or run.get("data_dir"),
                         params=ProtocolParams(split_seed=run["split_seed"]), verbose=False)
    test = ds.eval_split("test", run["maxlen"])
    cfg = ExperimentConfig(encoder=run["encoder"], embedding_dim=run["embedding_dim"],
                           num_interests=run["num_interests"],
                           train=TrainConfig(maxlen=run["maxlen"], batch_size=run["batch_size"]))
    model = build_model(cfg, ds)
    model.build_from_batch({"history": test.histories[:2], "user_features": test.user_features[:2]})
    model.load_weights(os.path.join(FLAGS.run_dir, "checkpoints", "best.weights.h5"))
    out = {"run_dir": FLAGS.run_dir,
           "u2i_inner_product": U2IEvaluator(ds.item_category)(model, test)[0]["recall@50"]}
    for name, inference in [
            ("u2i_cosine", InferenceConfig(use_u2u=False, use_i2i=False, lam_mic=0, lam_div=0)),
            ("mic_inference", InferenceConfig())]:
        metrics, _ = CrossChannelEvaluator(ds, run["maxlen"], inference)(model, test)
        out[name] = metrics["recall@50"]
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}))


if __name__ == "__main__":
    app.run(main)
