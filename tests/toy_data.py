"""Tiny in-memory datasets for unit tests."""

import numpy as np

from mic_tf.data.protocol import ProtocolParams, apply_comirec_protocol
from mic_tf.data.raw import RawDataset


def toy_raw(num_users=60, num_items=40, length=(6, 30), seed=0) -> RawDataset:
    """Users with 6..30 interactions over a popularity-skewed catalogue, times with ties."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(length[0], length[1], num_users)
    users = np.repeat(np.arange(num_users), lengths)
    items = rng.zipf(1.3, len(users)) % num_items
    ts = rng.integers(0, 1000, len(users))
    return RawDataset(name="toy", users=np.array([f"u{u}" for u in users], dtype=object),
                      items=np.array([f"i{i}" for i in items], dtype=object),
                      timestamps=ts.astype(np.int64))


def toy_dataset(**kwargs):
    return apply_comirec_protocol(toy_raw(**kwargs), ProtocolParams())
