"""Fetch (where the source allows) and preprocess a dataset with the ComiRec protocol (spec 8).

    python datasets/prepare.py --dataset=ml-100k
    python datasets/prepare.py --dataset=taobao --raw_path=/data/UserBehavior.csv

Writes DATA_DIR/NAME/ and prints a final JSON line with the counts.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import interrupts  # noqa: E402

RESUME = ("nothing partial was kept; run the same command again to resume (downloads continue "
          "where they stopped)")
interrupts.install(RESUME)

from absl import app, flags  # noqa: E402

from experiments.common_flags import prepare_from_flags  # noqa: E402
from mic_tf.errors import MicError  # noqa: E402

flags.DEFINE_boolean("force", False, "Rebuild the processed folder even if it is up to date.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    try:
        ds = prepare_from_flags(FLAGS, force=FLAGS.force)
    except MicError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        interrupts.stop(RESUME)
    counts = ds.counts()
    print(f"users {counts['users']}, items {counts['items']} (kept items, padding not counted), "
          f"interactions {counts['interactions']}, train/valid/test users "
          f"{counts['train_users']}/{counts['valid_users']}/{counts['test_users']}")
    print(json.dumps(counts))


if __name__ == "__main__":
    app.run(main)
