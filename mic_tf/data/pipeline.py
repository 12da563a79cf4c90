"""Training examples as `tf.data` pipelines (spec 2.3).

Both samplers are pure functions of `(seed, step)`: step `s` of a run always yields the same batch,
so a run restarted from a checkpoint at step `s` sees exactly the batches an uninterrupted run
would have seen, and no shuffle buffer or Python generator sits in the hot path.

- `comirec` (default): each step draws `batch_size` distinct training users (the first
  `batch_size` positions of a pseudo-random permutation, `tf.random.experimental.index_shuffle`,
  seeded by the step), then for each a cut `k` uniform in `[4, len)`; the target is `seq[k]` and
  the history the last `maxlen` items of `seq[:k]`, right-padded with 0.
- `all`: every `(seq[:k], seq[k])` pair with `k >= 1` of every training user once per epoch, in a
  fresh pseudo-random order each epoch.

Each element is a dict of fixed-shape tensors:
  history         [B, L] int32   item ids, right-padded with 0
  history_length  [B]    int32   number of real items (>= 1)
  target          [B]    int32   the next item
  target_category [B]    int32   its category (0 = none)
  user            [B]    int32   the user index (for nearest-neighbour mining)
  user_features   [B, F] int32   user field ids (F may be 0)
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from mic_tf.data.dataset import ProcessedDataset
from mic_tf.errors import ConfigError

SAMPLERS = ("comirec", "all")
COMIREC_MIN_HISTORY = 4  # ComiRec's data_iterator: k = random.choice(range(4, len(seq)))


class _TrainArrays:
    """The training users' sequences as TF tensors (CSR), shared by both samplers."""

    def __init__(self, ds: ProcessedDataset):
        r = ds.split_range("train")
        lo, hi = int(ds.seq_offsets[r.start]), int(ds.seq_offsets[r.stop])
        offsets = ds.seq_offsets[r.start:r.stop + 1] - lo
        self.num_users = len(r)
        self.lengths_np = np.diff(offsets)
        # Variables, not constants: a large catalogue's sequences must not be inlined into the
        # serialised tf.data graph (2 GB protobuf limit).
        self.items = tf.Variable(ds.seq_items[lo:hi], trainable=False, dtype=tf.int32)
        self.offsets = tf.Variable(offsets, trainable=False, dtype=tf.int64)
        self.category = tf.Variable(ds.item_category, trainable=False, dtype=tf.int32)
        self.user_features = tf.Variable(ds.user_features[r.start:r.stop], trainable=False,
                                         dtype=tf.int32)

    def examples(self, users: tf.Tensor, cuts: tf.Tensor, maxlen: int) -> dict:
        """Gathers (history, target) for users `[B]` cut at `cuts` `[B]` (history = seq[:cut])."""
        users = tf.cast(users, tf.int64)
        cuts = tf.cast(cuts, tf.int64)
        start = tf.gather(self.offsets, users)
        hist_len = tf.minimum(cuts, maxlen)
        first = start + cuts - hist_len
        cols = tf.range(maxlen, dtype=tf.int64)
        valid = cols[None, :] < hist_len[:, None]
        idx = tf.where(valid, first[:, None] + cols[None, :], 0)
        history = tf.where(valid, tf.gather(self.items, idx), 0)
        target = tf.gather(self.items, start + cuts)
        return {"history": history,
                "history_length": tf.cast(hist_len, tf.int32),
                "target": target,
                "target_category": tf.gather(self.category, target),
                "user": tf.cast(users, tf.int32),
                "user_features": tf.gather(self.user_features, users)}


def _step_seed(seed: int, step: tf.Tensor, stream: int) -> tf.Tensor:
    """A stateless seed `[2]` for one random stream of one step."""
    base = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, stream)


def steps_per_epoch(ds: ProcessedDataset, sampler: str, batch_size: int) -> int:
    """ComiRec: ceil(train users / batch); `all`: floor(pairs / batch) (full batches only)."""
    lengths = ds.sequence_lengths[ds.split_range("train").start:ds.split_range("train").stop]
    if sampler == "comirec":
        return math.ceil(len(lengths) / batch_size)
    return max(int((lengths - 1).sum()) // batch_size, 1)


def check_sampler(ds: ProcessedDataset, sampler: str, batch_size: int, maxlen: int) -> None:
    """Raises ConfigError when the sampler cannot draw batches of this size from `ds` (called
    before a run writes anything, and again when the pipeline is built)."""
    _validate(ds, sampler, batch_size, maxlen)
    if sampler == "all":
        lengths = ds.sequence_lengths[:len(ds.split_range("train"))]
        num_pairs = int((lengths - 1).sum())
        if num_pairs < batch_size:
            raise ConfigError(f"only {num_pairs} training pairs, fewer than "
                              f"batch_size={batch_size}; pass a smaller --batch_size")


def _validate(ds: ProcessedDataset, sampler: str, batch_size: int, maxlen: int) -> None:
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if maxlen < 1:
        raise ConfigError(f"maxlen must be >= 1, got {maxlen}")
    n_train = len(ds.split_range("train"))
    if sampler == "comirec" and batch_size > n_train:
        raise ConfigError(f"batch_size={batch_size} is larger than the {n_train} training users of "
                          f"{ds.name}; the ComiRec sampler draws distinct users per batch, so pass "
                          f"--batch_size <= {n_train}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    lengths = ds.sequence_lengths[:n_train]
    if sampler == "comirec" and lengths.min() <= COMIREC_MIN_HISTORY:
        raise ConfigError(f"the ComiRec sampler needs training users with > {COMIREC_MIN_HISTORY} "
                          f"interactions; prepare the data with min_user_count >= 5")


def make_train_dataset(ds: ProcessedDataset, *, batch_size: int, maxlen: int, seed: int,
                       sampler: str = "comirec", start_step: int = 0,
                       map_fn=None) -> tf.data.Dataset:
    """An infinite dataset of training batches, starting at global step `start_step`.

    Args:
      ds: the processed dataset.
      batch_size: B; every batch is full (fixed shapes for `tf.function` and XLA).
      maxlen: L, the history length.
      seed: the run seed; batch `s` depends only on `(seed, s)`.
      sampler: `comirec` or `all`.
      start_step: the first global step to produce (resume after a crash).
      map_fn: optional `(batch, step) -> batch` applied in the pipeline (e.g. MIC's field masking).
    """
    _validate(ds, sampler, batch_size, maxlen)
    arrays = _TrainArrays(ds)
    if sampler == "comirec":
        sample = _comirec_sampler(arrays, batch_size, maxlen, seed)
    else:
        sample = _all_pairs_sampler(arrays, ds, batch_size, maxlen, seed)

    def element(step):
        batch = sample(step)
        return map_fn(batch, step) if map_fn is not None else batch

    dataset = tf.data.Dataset.range(start_step, np.iinfo(np.int64).max)
    dataset = dataset.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _comirec_sampler(arrays: _TrainArrays, batch_size: int, maxlen: int, seed: int):
    lengths = tf.constant(arrays.lengths_np, tf.int64)
    max_index = arrays.num_users - 1

    def sample(step):
        users = tf.random.experimental.index_shuffle(
            tf.range(batch_size, dtype=tf.int64), _step_seed(seed, step, 0), max_index)
        span = tf.cast(tf.gather(lengths, users) - COMIREC_MIN_HISTORY, tf.float64)
        u = tf.random.stateless_uniform([batch_size], _step_seed(seed, step, 1), dtype=tf.float64)
        cuts = COMIREC_MIN_HISTORY + tf.minimum(tf.cast(u * span, tf.int64),
                                                tf.cast(span, tf.int64) - 1)
        return arrays.examples(users, cuts, maxlen)

    return sample


def _all_pairs_sampler(arrays: _TrainArrays, ds: ProcessedDataset, batch_size: int, maxlen: int,
                       seed: int):
    pairs_per_user = arrays.lengths_np - 1  # k = 1 .. len-1
    pair_offsets_np = np.concatenate([[0], np.cumsum(pairs_per_user)]).astype(np.int64)
    num_pairs = int(pair_offsets_np[-1])
    spe = steps_per_epoch(ds, "all", batch_size)
    if num_pairs < batch_size:
        raise ConfigError(f"only {num_pairs} training pairs, fewer than batch_size={batch_size}")
    pair_offsets = tf.Variable(pair_offsets_np, trainable=False)

    def sample(step):
        epoch = step // spe
        within = step % spe
        positions = within * batch_size + tf.range(batch_size, dtype=tf.int64)
        pairs = tf.random.experimental.index_shuffle(
            positions, _step_seed(seed, epoch, 2), num_pairs - 1)
        users = tf.searchsorted(pair_offsets[None, :], pairs[None, :], side="right")[0] - 1
        cuts = pairs - tf.gather(pair_offsets, users) + 1
        return arrays.examples(users, cuts, maxlen)

    return sample
