"""TensorBoard embedding projector for item vectors, written by hand.

Keras 3's TensorBoard callback writes `.weights.h5` files that the projector cannot read
(keras-team/keras#20210), so the item table is saved as a TF checkpoint with a metadata TSV
(title and category per item) and a `projector_config.pbtxt`.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector

from mic_tf.data.dataset import ProcessedDataset


def write_item_projector(log_dir: str | Path, item_vectors: np.ndarray, ds: ProcessedDataset,
                         max_items: int = 20000) -> None:
    """Writes the `max_items` most popular items' vectors (row 0, padding, skipped)."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    n = min(max_items, ds.num_items)
    ids = np.arange(1, n + 1)  # ids are ordered by popularity
    with open(log_dir / "items.tsv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["item", "title", "category"])
        for i in ids:
            title = str(ds.item_titles[i]) or str(ds.item_raw_ids[i])
            writer.writerow([ds.item_raw_ids[i], title.replace("\t", " "),
                             ds.category_names[ds.item_category[i]] or "(none)"])
    variable = tf.Variable(item_vectors[ids].astype(np.float32), name="item_embeddings")
    tf.train.Checkpoint(item_embeddings=variable).save(str(log_dir / "items.ckpt"))
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = "item_embeddings/.ATTRIBUTES/VARIABLE_VALUE"
    embedding.metadata_path = "items.tsv"
    projector.visualize_embeddings(str(log_dir), config)
