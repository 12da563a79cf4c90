"""Batch-wide reductions that also hold when the batch is split over replicas (`tf.distribute`).

The losses call these helpers instead of `reduce_mean` and instead of using their own batch as
the in-batch candidates. Alone (no strategy, or one replica: `fit`, tests, benchmarks) each is
the identity or the plain mean, so a single process computes exactly what it always did. Inside
`strategy.run` with N replicas, each replica holds rows `[r * b, (r + 1) * b)` of the global
batch (`b = B / N`, see `mic_tf.distributed.loop`), and:

- `gather(x)` is `all_gather` along the batch axis, in replica order: every replica sees the
  whole global batch (the in-batch contrastive candidates); its gradient sums the upstream
  gradients of every replica and keeps this replica's rows (TensorFlow's own gradient);
- `global_mean(total, count)` divides this replica's sum by the count summed over replicas, so
  the replicas' losses add up to the global batch's mean, and the gradients the optimizer sums
  over replicas (Keras 3 all-reduces with SUM) are the gradients of that mean;
- `local_rows(x)` takes this replica's rows of a tensor drawn for the global batch (per-example
  random negatives), and `flat_offset(x)` is where this replica's block starts in the global
  batch's flattened index space (the embedding-dropout hash), so every random draw is the one a
  single process with the global batch makes.

With these, N replicas with global batch B compute the loss (and the update) of one process with
batch B, up to float summation order.
"""

from __future__ import annotations

import tensorflow as tf


def _context():
    """The replica context when the batch is split over more than one replica, else None."""
    ctx = tf.distribute.get_replica_context()  # None in a cross-replica context
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return None
    return ctx


def num_replicas() -> int:
    ctx = _context()
    return 1 if ctx is None else ctx.num_replicas_in_sync


def replica_index():
    """This replica's position in the global batch (0 alone), an int32 scalar."""
    ctx = _context()
    if ctx is None:
        return tf.constant(0, tf.int32)
    return tf.cast(ctx.replica_id_in_sync_group, tf.int32)


def gather(x):
    """`[b, ...]` -> `[N * b, ...]`: every replica's rows, in replica order (identity alone)."""
    ctx = _context()
    return x if ctx is None else ctx.all_gather(x, axis=0)


def global_sum(x):
    """Sum over replicas (identity alone)."""
    ctx = _context()
    return x if ctx is None else ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def global_mean(total, count):
    """`total / count` alone; across replicas `total / sum_r count_r` (0 when nothing counts), so
    that the replicas' results add up to the mean over the global batch."""
    count = tf.cast(count, total.dtype)
    if _context() is None:
        return tf.math.divide_no_nan(total, count)
    return tf.math.divide_no_nan(total, global_sum(tf.stop_gradient(count)))


def local_rows(x, rows: int):
    """This replica's `rows` rows of `x`, a tensor drawn for the global batch `[N * rows, ...]`."""
    if _context() is None:
        return x
    return tf.gather(tf.reshape(x, [num_replicas(), rows, *x.shape[1:]]), replica_index())


def flat_offset(x):
    """Where this replica's `x` (its block of a global-batch tensor) starts in the flattened
    global tensor: `replica * size(x)`, uint32 (0 alone)."""
    if _context() is None:
        return tf.constant(0, tf.uint32)
    return tf.cast(replica_index(), tf.uint32) * tf.cast(tf.size(x), tf.uint32)
