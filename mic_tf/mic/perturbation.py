"""Field-level perturbation (paper 2.4.1), as pure TF functions in the tf.data pipeline.

Each function perturbs every example of a batch independently (the leading axis is the batch), with
stateless randomness from a `[2]` seed, so views are a function of `(seed, step)` like the rest of
the pipeline. Embedding-level dropout, the other half of the perturbation, is in the model.

A view of a user: each history item is masked with probability `p` (never all of them: the most
recent item survives when every item was drawn) and the masked items are *removed*, the rest keeping
their order and the right padding; each user field is masked to 0 ("unknown") with probability `p`.
A view of an item: its id (to the mask row 0) and its category (to 0) are each masked with
probability `p`, never both; an item tower without categories has only its id, which is then never
masked (that view differs from the original by embedding dropout only).

`hash_keep_mask` (below) makes the embedding dropout's masks; the model applies them.
"""

from __future__ import annotations

import tensorflow as tf

VIEW_KEYS = ("history_view", "history_length_view", "user_features_view", "target_view",
             "target_category_view")


def _uniform(shape, seed, stream):
    return tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(seed, stream))


def mask_history(history, p: float, seed):
    """`[B, L]` right-padded ids -> (`[B, L]` view with masked items removed, `[B]` lengths)."""
    real = history > 0
    drop = (_uniform(tf.shape(history), seed, 0) < p) & real
    length = tf.reduce_sum(tf.cast(real, tf.int32), axis=1)
    last = tf.one_hot(length - 1, tf.shape(history)[1], on_value=True, off_value=False)
    all_dropped = tf.reduce_all(drop | ~real, axis=1, keepdims=True)
    keep = real & ~(drop & ~(all_dropped & last))  # the most recent item survives a full drop
    # A stable sort on "not kept" moves the kept items to the front in their original order.
    order = tf.argsort(tf.cast(~keep, tf.int32), axis=1, stable=True)
    kept_sorted = tf.gather(keep, order, batch_dims=1)
    view = tf.where(kept_sorted, tf.gather(history, order, batch_dims=1), tf.zeros_like(history))
    return view, tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)


def mask_fields(fields, p: float, seed):
    """`[B, F]` field ids -> each set to 0 (unknown) with probability `p`."""
    drop = _uniform(tf.shape(fields), seed, 1) < p
    return tf.where(drop, tf.zeros_like(fields), fields)


def mask_item(item, category, p: float, seed, has_category: bool):
    """`[B]` ids and categories -> a view with the id or the category masked, never both."""
    if not has_category:
        return item, category
    u = _uniform(tf.concat([tf.shape(item), [3]], 0), seed, 2)
    drop_id, drop_cat = u[:, 0] < p, u[:, 1] < p
    both = drop_id & drop_cat
    keep_id_instead = u[:, 2] < 0.5  # both drawn: un-mask one of the two at random
    drop_id = drop_id & ~(both & keep_id_instead)
    drop_cat = drop_cat & ~(both & ~keep_id_instead)
    return (tf.where(drop_id, tf.zeros_like(item), item),
            tf.where(drop_cat, tf.zeros_like(category), category))


def make_view_fn(p_mask: float, seed: int, has_category: bool):
    """A `map_fn(batch, step)` for `make_train_dataset` that adds the perturbed view fields."""

    def add_views(batch, step):
        s = tf.random.experimental.stateless_fold_in(
            tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)]), 7)
        history, length = mask_history(batch["history"], p_mask, s)
        item, category = mask_item(batch["target"], batch["target_category"], p_mask, s,
                                   has_category)
        return {**batch, "history_view": history, "history_length_view": length,
                "user_features_view": mask_fields(batch["user_features"], p_mask, s),
                "target_view": item, "target_category_view": category}

    return add_views


def _lowbias32(h):
    """A 32-bit integer hash with good avalanche (C. Wellons' `lowbias32`): `uint32 -> uint32`."""
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))
    h = h * tf.constant(0x7FEB352D, tf.uint32)
    h = tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 15))
    h = h * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(h, tf.bitwise.right_shift(h, 16))


@tf.function(jit_compile=True)
def _hash_keep_mask(x, seed, rate: float, offset):
    key = tf.cast(tf.bitwise.bitwise_and(seed, 0xFFFFFFFF), tf.uint32)
    index = tf.cast(tf.range(tf.size(x)), tf.uint32) + offset
    bits = _lowbias32(tf.bitwise.bitwise_xor(_lowbias32(index + key[0]), key[1]))
    threshold = tf.constant(min(round(rate * 2.0**32), 2**32 - 1), tf.uint32)
    return tf.reshape(bits >= threshold, tf.shape(x))


def hash_keep_mask(x, seed, rate: float, offset=None):
    """Dropout's keep mask for `x` (any shape): True with probability `1 - rate`.

    A counter-based generator: element i keeps when `h(h(i + k0) ^ k1) >= rate * 2^32`, with
    `h = lowbias32` and `(k0, k1)` the low 32 bits of the `[2]` int64 `seed`. Drawing `[B, L, D]`
    uniforms with TF's Philox kernel took 1.2 ms of a ~11 ms MIC step, and XLA's generator was
    slower still; this mask is a few fused integer ops (XLA-compiled here and inside the
    XLA update alike, so both give the same masks). Not for cryptography; for dropout, the
    keep rate and the independence between elements and steps are what matter (tested).

    `offset` (uint32) shifts the element index: a block of a larger tensor that starts at flat
    index `offset` gets the block of that tensor's mask (the rows of one replica, see
    `mic_tf.models.replicas.flat_offset`).
    """
    offset = tf.constant(0, tf.uint32) if offset is None else tf.cast(offset, tf.uint32)
    return _hash_keep_mask(x, seed, float(rate), offset)
