"""absl flags shared by `datasets/prepare.py` and `experiments/run.py` (data selection)."""

from __future__ import annotations

from absl import flags

from mic_tf.data.prepare import prepare_dataset
from mic_tf.data.protocol import ProtocolParams
from mic_tf.data.sources import SOURCES, get_source

flags.DEFINE_enum("dataset", "ml-100k", sorted(SOURCES), "Dataset source (spec 2.1).")
flags.DEFINE_string("data_dir", None, "Folder of processed datasets (default datasets/data).")
flags.DEFINE_string("raw_dir", None, "Folder of this dataset's raw files (default "
                    "datasets/raw/NAME); files fetched by a downloader land here.")
flags.DEFINE_string("raw_path", None, "Local raw file or folder for sources that are not "
                    "downloaded (book, taobao, custom) or to skip a download (ml-1m zip, steam).")
flags.DEFINE_string("raw_url", None, "Override the download URL of ml-1m or steam.")
flags.DEFINE_integer("min_item_count", 5, "Keep items with at least this many interactions.")
flags.DEFINE_integer("min_user_count", 5, "Keep users with at least this many interactions on "
                     "kept items.")
flags.DEFINE_integer("split_seed", 1230, "Seed of the 80/10/10 user shuffle (ComiRec: 1230).")
flags.DEFINE_boolean("dedup_interactions", False, "Drop rows that repeat an earlier row's user, "
                     "item and time (off: ComiRec keeps repeated interactions).")
# custom
flags.DEFINE_string("custom_user_col", "user", "custom: user id column.")
flags.DEFINE_string("custom_item_col", "item", "custom: item id column.")
flags.DEFINE_string("custom_time_col", "timestamp", "custom: timestamp column.")
flags.DEFINE_string("custom_category_col", None, "custom: optional item category column.")
flags.DEFINE_string("custom_user_features", None, "custom: optional CSV/Parquet of user fields "
                    "(first column = user id).")
flags.DEFINE_string("custom_item_features", None, "custom: optional CSV/Parquet of item fields "
                    "(first column = item id; `category` and `title` columns are used).")
# synthetic
flags.DEFINE_integer("synthetic_users", 2000, "synthetic: number of users.")
flags.DEFINE_integer("synthetic_items", 1000, "synthetic: number of items.")
flags.DEFINE_integer("synthetic_clusters", 10, "synthetic: planted latent clusters.")
flags.DEFINE_integer("synthetic_categories", 20, "synthetic: item categories.")
flags.DEFINE_integer("synthetic_mean_length", 30, "synthetic: mean interactions per user.")
flags.DEFINE_integer("synthetic_seed", 0, "synthetic: generator seed.")


def source_options(FLAGS) -> dict:
    """The flags that the chosen source declares in its OPTIONS, with their values."""
    source = get_source(FLAGS.dataset)
    options = {}
    for name in getattr(source, "OPTIONS", ()):
        value = getattr(FLAGS, name)
        if value is not None:
            options[name] = value
    return options


def protocol_params(FLAGS) -> ProtocolParams:
    return ProtocolParams(min_item_count=FLAGS.min_item_count, min_user_count=FLAGS.min_user_count,
                          split_seed=FLAGS.split_seed, dedup_interactions=FLAGS.dedup_interactions)


def prepare_from_flags(FLAGS, force: bool = False):
    return prepare_dataset(FLAGS.dataset, data_dir=FLAGS.data_dir, raw_dir=FLAGS.raw_dir,
                           params=protocol_params(FLAGS), source_options=source_options(FLAGS),
                           force=force)
