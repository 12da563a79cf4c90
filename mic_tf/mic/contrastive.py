"""Cross-channel contrastive losses (paper 2.5, eq. 6-8): cosine InfoNCE with tau = 0.1.

One primitive, `info_nce`, serves all three channels: each anchor has a few positives (its
perturbed view and its mined neighbours) and shares the in-batch negatives (the other anchors'
representations, SimCLR style), optionally plus its own mined hard negatives. Each positive is
scored against the anchor's negatives with the positive itself in the denominator (standard
InfoNCE; eq. 7-8 as printed leave it out, which makes the loss unbounded below), and the loss is
the mean over all valid (anchor, positive) pairs.
"""

from __future__ import annotations

import tensorflow as tf

NEG_INF = -1e9


def _unit(x):
    return tf.math.l2_normalize(x, axis=-1)


def _row_dot(a, b):
    """`[B, D]` . `[B, P, D]` -> `[B, P]` (a product and a sum: faster than einsum on the CPU)."""
    return tf.reduce_sum(a[:, None, :] * b, axis=-1)


def info_nce(anchors, positives, positive_mask, candidates, candidate_mask, temperature: float,
             hard_negatives=None, hard_negative_mask=None, unit_inputs: bool = False):
    """Multi-positive InfoNCE on cosine similarities.

    Args:
      anchors: `[B, D]`.
      positives: `[B, P, D]`; positive_mask: `[B, P]` bool, which positives exist.
      candidates: `[C, D]` shared in-batch negatives, or None when they are the anchors
        themselves (normalised once); candidate_mask: `[B, C]` bool, which of them
        are negatives for each anchor (exclude the anchor itself and its known positives).
      temperature: tau.
      hard_negatives: optional `[B, H, D]` per-anchor negatives, with `hard_negative_mask [B, H]`.
      unit_inputs: every vector is already unit-length (the caller normalised the rows once,
        before gathering them into lists); skips the normalisations.
    Returns:
      scalar: mean over valid (anchor, positive) pairs of
      `-log(exp(s_p) / (exp(s_p) + sum_negatives exp(s_n)))`, `s = cos / tau`; 0 if none is valid.
    """
    unit = (lambda x: x) if unit_inputs else _unit
    a = unit(anchors)
    c = a if candidates is None else unit(candidates)
    scale = 1.0 / temperature
    pos = _row_dot(a, unit(positives)) * scale
    # Masks are added as 0 / -1e9 biases: same values as a `where`, cheaper in both directions.
    neg = tf.matmul(a, c, transpose_b=True) * scale + _mask_bias(candidate_mask)
    if hard_negatives is not None:
        hard = _row_dot(a, unit(hard_negatives)) * scale + _mask_bias(hard_negative_mask)
        neg = tf.concat([neg, hard], axis=1)
    neg_lse = tf.reduce_logsumexp(neg, axis=1, keepdims=True)  # [B, 1]
    per_pair = tf.nn.softplus(neg_lse - pos)  # = -pos + log(exp(pos) + exp(neg_lse))
    weight = tf.cast(positive_mask, per_pair.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_pair * weight), tf.reduce_sum(weight))


def _mask_bias(mask):
    """bool -> 0 where True, NEG_INF where False."""
    return (1.0 - tf.cast(mask, tf.float32)) * NEG_INF


def in_batch_mask(ids):
    """`[B]` ids -> `[B, B]` bool: j is a negative for i when it is another row with another id."""
    return tf.not_equal(ids[:, None], ids[None, :])


def user_user_loss(users, user_ids, positives, positive_mask, temperature,
                   hard_negatives=None, hard_negative_mask=None, unit_inputs=False):
    """Eq. 7: anchor users against their views / mined neighbours, other batch users negative."""
    return info_nce(users, positives, positive_mask, None, in_batch_mask(user_ids), temperature,
                    hard_negatives, hard_negative_mask, unit_inputs)


def item_item_loss(items, item_ids, positives, positive_mask, temperature,
                   hard_negatives=None, hard_negative_mask=None, unit_inputs=False):
    """Eq. 8: anchor items against their views / mined neighbours; other batch items (with a
    different id: a repeated target is not its own negative) are negatives."""
    return info_nce(items, positives, positive_mask, None, in_batch_mask(item_ids), temperature,
                    hard_negatives, hard_negative_mask, unit_inputs)


def user_item_loss(users, items, item_ids, temperature, mined_items=None, mined_items_mask=None,
                   mined_users=None, mined_users_mask=None, unit_inputs=False):
    """Eq. 6, both directions summed: user i's positive is its target item i (plus items mined for
    it); item i's positive is user i (plus users mined for it); batch rows with another target are
    the negatives. Inputs are already projected into the joint space: `[B, D']`."""
    negatives = in_batch_mask(item_ids)
    pos_items, pos_items_mask = _with_mined(items[:, None, :], mined_items, mined_items_mask)
    pos_users, pos_users_mask = _with_mined(users[:, None, :], mined_users, mined_users_mask)
    u2i = info_nce(users, pos_items, pos_items_mask, items, negatives, temperature,
                   unit_inputs=unit_inputs)
    i2u = info_nce(items, pos_users, pos_users_mask, users, negatives, temperature,
                   unit_inputs=unit_inputs)
    return u2i + i2u


def _with_mined(first, mined, mined_mask):
    """Prepends the in-batch positive `[B, 1, D]` to the mined ones `[B, k, D]`."""
    first_mask = tf.ones(tf.shape(first)[:2], tf.bool)
    if mined is None:
        return first, first_mask
    return tf.concat([first, mined], axis=1), tf.concat([first_mask, mined_mask], axis=1)
