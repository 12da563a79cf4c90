"""Cross-channel contrastive losses (paper 2.5, eq. 6-8): cosine InfoNCE with tau = 0.1.

One primitive, `info_nce`, serves all three channels: each anchor has a few positives (its
"real" positive first: its perturbed view, or its target item in L_uv; then its mined
neighbours) and shares the in-batch negatives (the other anchors' representations, SimCLR
style), optionally plus its own mined hard negatives. Each positive is scored against the
anchor's negatives with the positive itself in the denominator (standard InfoNCE; eq. 7-8 as
printed leave it out, which makes the loss unbounded below).

Two weightings of the positives: `mined_weight=None` averages over every valid (anchor,
positive) pair ("the total loss is computed across all positive pairs", sec. 2.6), so 5 mined
positives carry 5/6 of an anchor's weight; a number w gives the real positive weight 1 and the
mean of the mined ones weight w, per anchor, normalised by 1 + w.

No positive of an anchor may be one of its negatives (spec 3.3): the callers build the
candidate masks with `in_batch_mask(ids, exclude=...)`, which also drops every batch row whose id
is among the anchor's mined positives.
"""

from __future__ import annotations

import tensorflow as tf

from mic_tf.models import replicas

NEG_INF = -1e9


def _unit(x):
    return tf.math.l2_normalize(x, axis=-1)


def _row_dot(a, b):
    """`[B, D]` . `[B, P, D]` -> `[B, P]` (a product and a sum: faster than einsum on the CPU)."""
    return tf.reduce_sum(a[:, None, :] * b, axis=-1)


def info_nce(anchors, positives, positive_mask, candidates, candidate_mask, temperature: float,
             hard_negatives=None, hard_negative_mask=None, unit_inputs: bool = False,
             mined_weight: float | None = None, num_real: int = 1):
    """Multi-positive InfoNCE on cosine similarities.

    Args:
      anchors: `[B, D]`.
      positives: `[B, P, D]`, the first `num_real` (0 or 1) the real positive, the rest mined;
        positive_mask: `[B, P]` bool, which positives exist.
      candidates: `[C, D]` shared in-batch negatives, or None when they are the anchors
        themselves (normalised once); candidate_mask: `[B, C]` bool, which of them
        are negatives for each anchor (exclude the anchor itself and its known positives).
      temperature: tau.
      hard_negatives: optional `[B, H, D]` per-anchor negatives, with `hard_negative_mask [B, H]`.
      unit_inputs: every vector is already unit-length (the caller normalised the rows once,
        before gathering them into lists); skips the normalisations.
      mined_weight: None, or the weight w of the mined positives against the real one (above).
      num_real: how many leading positives are real (1, or 0 when the view is ablated).
    Returns:
      scalar loss, with `l_p = -log(exp(s_p) / (exp(s_p) + sum_negatives exp(s_n)))`,
      `s = cos / tau`: the mean of `l_p` over valid (anchor, positive) pairs (mined_weight None),
      or the mean over anchors of their weighted `l` (see above); 0 if nothing is valid.
    """
    unit = (lambda x: x) if unit_inputs else _unit
    a = unit(anchors)
    # Split over replicas, the in-batch candidates are every replica's rows (`replicas`).
    c = replicas.gather(a if candidates is None else unit(candidates))
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
    if mined_weight is None or positives.shape[1] <= num_real:
        return replicas.global_mean(tf.reduce_sum(per_pair * weight), tf.reduce_sum(weight))
    return _split_weighting(per_pair, weight, float(mined_weight), num_real)


def _split_weighting(per_pair, weight, mined_weight: float, num_real: int):
    """Per anchor `(l_real + w * mean(l_mined)) / (1 + w)` (`mean(l_mined)` alone when there is no
    real positive, `l_real` alone when no mined one is valid); mean over anchors with any."""
    mined, mined_w = per_pair[:, num_real:], weight[:, num_real:]
    count = tf.reduce_sum(mined_w, axis=1)
    has_mined = tf.cast(count > 0, per_pair.dtype)
    mined_mean = tf.math.divide_no_nan(tf.reduce_sum(mined * mined_w, axis=1), count)
    if num_real:
        real, real_w = per_pair[:, 0], weight[:, 0]
        w = mined_weight * has_mined
        per_anchor = tf.math.divide_no_nan(real * real_w + w * mined_mean, real_w + w)
        valid = tf.cast((real_w + has_mined) > 0, per_pair.dtype)
    else:
        per_anchor, valid = mined_mean, has_mined
    return replicas.global_mean(tf.reduce_sum(per_anchor * valid), tf.reduce_sum(valid))


def _mask_bias(mask):
    """bool -> 0 where True, NEG_INF where False."""
    return (1.0 - tf.cast(mask, tf.float32)) * NEG_INF


def in_batch_mask(ids, exclude=None):
    """`[B, B]` bool: batch row j is a negative for anchor i when it has another id than i's and,
    with `exclude` (`[B, P]` ids of each anchor's mined positives, -1 = none), its id is not one
    of anchor i's positives."""
    columns = replicas.gather(ids)  # the candidates: every replica's batch rows
    mask = tf.not_equal(ids[:, None], columns[None, :])
    return mask if exclude is None else mask & _not_listed(columns, exclude)


def _not_listed(ids, lists):
    """`[B, B]` bool: row j's id `ids[j]` is not in anchor i's list `lists[i]` (-1 = empty)."""
    listed = tf.equal(lists[:, :, None], tf.cast(ids, lists.dtype)[None, None, :])
    return ~tf.reduce_any(listed, axis=1)


def user_user_loss(users, user_ids, positives, positive_mask, temperature,
                   hard_negatives=None, hard_negative_mask=None, unit_inputs=False,
                   positive_ids=None, mined_weight=None, num_real=1):
    """Eq. 7: anchor users against their views / mined neighbours, other batch users negative
    (except those among the anchor's mined positives, `positive_ids [B, P]`)."""
    return info_nce(users, positives, positive_mask, None,
                    in_batch_mask(user_ids, exclude=positive_ids), temperature, hard_negatives,
                    hard_negative_mask, unit_inputs, mined_weight, num_real)


def item_item_loss(items, item_ids, positives, positive_mask, temperature,
                   hard_negatives=None, hard_negative_mask=None, unit_inputs=False,
                   positive_ids=None, mined_weight=None, num_real=1):
    """Eq. 8: anchor items against their views / mined neighbours; other batch items (with a
    different id: a repeated target is not its own negative; not a mined positive) negative."""
    return info_nce(items, positives, positive_mask, None,
                    in_batch_mask(item_ids, exclude=positive_ids), temperature, hard_negatives,
                    hard_negative_mask, unit_inputs, mined_weight, num_real)


def user_item_loss(users, items, item_ids, temperature, mined_items=None, mined_items_mask=None,
                   mined_users=None, mined_users_mask=None, unit_inputs=False, user_ids=None,
                   mined_item_ids=None, mined_user_ids=None, mined_weight=None):
    """Eq. 6, both directions summed: user i's positive is its target item i (plus items mined for
    it); item i's positive is user i (plus users mined for it); batch rows with another target
    are the negatives, except rows that are one of the anchor's mined positives (`mined_item_ids
    [B, X]` for a user anchor, `mined_user_ids [B, X]` for an item anchor, compared with the
    batch's `item_ids` and `user_ids`). Inputs are already projected into the joint space."""
    pos_items, pos_items_mask = _with_mined(items[:, None, :], mined_items, mined_items_mask)
    pos_users, pos_users_mask = _with_mined(users[:, None, :], mined_users, mined_users_mask)
    # u -> i: batch item j is a negative of user i unless it is i's target or mined for i;
    # i -> u: batch user j is a negative of item i unless j's target is i or j was mined for i.
    item_negatives = in_batch_mask(item_ids)
    user_negatives = item_negatives
    if mined_item_ids is not None:
        item_negatives = item_negatives & _not_listed(replicas.gather(item_ids), mined_item_ids)
    if mined_user_ids is not None and user_ids is not None:
        user_negatives = user_negatives & _not_listed(replicas.gather(user_ids), mined_user_ids)
    u2i = info_nce(users, pos_items, pos_items_mask, items, item_negatives, temperature,
                   unit_inputs=unit_inputs, mined_weight=mined_weight)
    i2u = info_nce(items, pos_users, pos_users_mask, users, user_negatives, temperature,
                   unit_inputs=unit_inputs, mined_weight=mined_weight)
    return u2i + i2u


def _with_mined(first, mined, mined_mask):
    """Prepends the in-batch positive `[B, 1, D]` to the mined ones `[B, k, D]`."""
    first_mask = tf.ones(tf.shape(first)[:2], tf.bool)
    if mined is None:
        return first, first_mask
    return tf.concat([first, mined], axis=1), tf.concat([first_mask, mined_mask], axis=1)
