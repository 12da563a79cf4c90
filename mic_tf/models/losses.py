"""Basic retrieval losses (spec 3.2) and the multi-interest readout.

All three take the user vector `[B, D]` (after the readout for multi-interest encoders), the
target ids `[B]` and the item table, and return a scalar. Negative sampling is *stateless*: the
candidates of step `s` depend only on `(seed, s)`, so a resumed run draws the same negatives as an
uninterrupted one, and no sampler op blocks XLA.

Means are over the global batch (`replicas.global_mean`): with the batch split over replicas,
each replica returns its share and the shares add up to the mean. The sampled-softmax candidates
depend on `(seed, step)` alone, so every replica draws the same ones: the candidates are shared
across replicas without any communication.
"""

from __future__ import annotations

import math

import tensorflow as tf

from mic_tf.models import replicas

BASIC_LOSSES = ("sampled_softmax", "logistic", "full_softmax")


def score_geometry(basic_loss: str) -> str:
    """The score each basic loss trains, which retrieval must use (spec 4): the inner product for
    the softmax losses, the cosine for eq. 9's logistic loss."""
    if basic_loss not in BASIC_LOSSES:
        raise ValueError(f"unknown basic_loss {basic_loss!r}; choose one of {BASIC_LOSSES}")
    return "cosine" if basic_loss == "logistic" else "dot"


def hard_readout(interests, target_emb):
    """ComiRec's training readout: the interest with the largest dot product with the target.

    Args:
      interests: `[B, K, D]`.
      target_emb: `[B, D]`.
    Returns:
      `[B, D]`, the selected interest (gradients flow into that interest only).
    """
    scores = tf.einsum("bkd,bd->bk", interests, target_emb)
    best = tf.argmax(scores, axis=1, output_type=tf.int32)
    return tf.gather(interests, best, axis=1, batch_dims=1)


def log_uniform_sample(seed, num_sampled: int, num_items: int):
    """Stateless log-uniform (Zipfian) sample of item ids in `1..N`, with replacement.

    `P(id) = (log(id + 1) - log(id)) / log(N + 1)` for id in 1..N: TF's log-uniform sampler on
    the range `[0, N)` shifted by one, so the padding row 0 is never a negative. Items are numbered
    by descending popularity, so this approximates popularity sampling as in ComiRec.

    Args:
      seed: `[2]` int stateless seed.
    Returns:
      ids `[S]` int32 and their expected counts `[S]` float32 (`S * P(id)`).
    """
    u = tf.random.stateless_uniform([num_sampled], seed, dtype=tf.float64)
    log_range = math.log(num_items + 1.0)
    ids = tf.cast(tf.floor(tf.exp(u * log_range)), tf.int32)  # in [1, N + 1)
    ids = tf.clip_by_value(ids, 1, num_items)
    return ids, expected_count(ids, num_sampled, num_items)


def expected_count(ids, num_sampled: int, num_items: int):
    """`S * P(id)` under `log_uniform_sample`, float32 `[...]`."""
    idf = tf.cast(ids, tf.float64)
    p = (tf.math.log(idf + 1.0) - tf.math.log(idf)) / math.log(num_items + 1.0)
    return tf.cast(p * tf.cast(num_sampled, tf.float64), tf.float32)


def sampled_softmax_loss(user, targets, table, sampled, sampled_expected):
    """Softmax over the target and shared sampled negatives, as `tf.nn.sampled_softmax_loss`.

    Logits are dot products (zero biases, as ComiRec), each corrected by `- log(expected count)`;
    a sampled candidate equal to the row's target gets `-FLT_MAX` added (accidental hits
    removed), exactly as TF does with `remove_accidental_hits=True`.

    Args:
      user: `[B, D]`; targets: `[B]` int; table: `[N + 1, D]` item vectors;
      sampled: `[S]` int ids; sampled_expected: `[S]` float.
    Returns:
      scalar mean loss over the batch.
    """
    num_items = table.shape[0] - 1
    num_sampled = sampled.shape[0]
    true_logit = tf.reduce_sum(user * tf.gather(table, targets), axis=-1, keepdims=True)
    true_logit -= tf.math.log(expected_count(targets, num_sampled, num_items))[:, None]
    sampled_logit = tf.matmul(user, tf.gather(table, sampled), transpose_b=True)  # [B, S]
    sampled_logit -= tf.math.log(sampled_expected)[None, :]
    hits = tf.cast(tf.equal(targets[:, None], sampled[None, :]), sampled_logit.dtype)
    sampled_logit += hits * tf.cast(-3.4028235e38, sampled_logit.dtype)
    logits = tf.concat([true_logit, sampled_logit], axis=1)
    return batch_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.zeros_like(targets), logits=logits))


def batch_mean(per_example):
    """The mean over the (global) batch of `[B]` per-example losses (`replicas.global_mean`)."""
    return replicas.global_mean(tf.reduce_sum(per_example), tf.size(per_example))


def full_softmax_loss(user, targets, table):
    """Softmax cross-entropy over every real item (rows 1..N of the table)."""
    logits = tf.matmul(user, table[1:], transpose_b=True)  # [B, N]
    return batch_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=targets - 1, logits=logits))


def logistic_loss(user, targets, table, negatives, temperature: float):
    """The paper's eq. 9: binary cross-entropy on `sigmoid(cos(u, v) / tau_b)`.

    Each example contributes its target (label 1) and its own sampled negatives `[B, M]`
    (label 0; a negative equal to the target is dropped from the mean); the loss is the mean
    over all these pairs, as eq. 9 averages over the N labelled pairs.
    """
    u = tf.math.l2_normalize(user, axis=-1)
    pos = tf.reduce_sum(u * tf.math.l2_normalize(tf.gather(table, targets), axis=-1), axis=-1)
    neg = tf.einsum("bd,bmd->bm", u, tf.math.l2_normalize(tf.gather(table, negatives), axis=-1))
    keep = tf.cast(tf.not_equal(negatives, targets[:, None]), neg.dtype)
    pos_loss = tf.nn.sigmoid_cross_entropy_with_logits(tf.ones_like(pos), pos / temperature)
    neg_loss = tf.nn.sigmoid_cross_entropy_with_logits(tf.zeros_like(neg), neg / temperature)
    total = tf.reduce_sum(pos_loss) + tf.reduce_sum(neg_loss * keep)
    return replicas.global_mean(total, tf.cast(tf.size(pos), neg.dtype) + tf.reduce_sum(keep))
