"""Basic losses and the hard readout against TF's own sampled softmax and numpy oracles."""

import math

import numpy as np
import tensorflow as tf

from mic_tf.models import losses


def test_sampled_softmax_equals_tf_nn_sampled_softmax_loss():
    rng = np.random.default_rng(0)
    n_items, d, b = 30, 8, 6
    table = rng.normal(size=(n_items + 1, d)).astype(np.float32)
    user = rng.normal(size=(b, d)).astype(np.float32)
    targets = np.array([1, 2, 3, 5, 8, 13], dtype=np.int32)
    # Distinct ids (TF's accidental-hit removal keeps only one position per id, so it is only
    # comparable on a sample without repeats), two of them accidental hits (3 and 13).
    sampled = np.array([3, 4, 6, 7, 9, 10, 13, 17, 20, 22, 25, 30], np.int32)
    expected = losses.expected_count(sampled, 12, n_items)
    true_expected = losses.expected_count(targets, 12, n_items)
    reference = tf.nn.sampled_softmax_loss(
        weights=table, biases=np.zeros(n_items + 1, np.float32),
        labels=targets[:, None].astype(np.int64), inputs=user, num_sampled=12,
        num_classes=n_items + 1, remove_accidental_hits=True,
        sampled_values=(sampled.astype(np.int64), true_expected[:, None], expected))
    ours = losses.sampled_softmax_loss(tf.constant(user), tf.constant(targets), tf.constant(table),
                                       tf.constant(sampled), expected)
    np.testing.assert_allclose(ours.numpy(), tf.reduce_mean(reference).numpy(), rtol=1e-5)


def test_log_uniform_sample_distribution_and_range():
    ids, expected = losses.log_uniform_sample(tf.constant([1, 2], tf.int64), 200000, 9)
    ids = ids.numpy()
    assert ids.min() >= 1 and ids.max() <= 9  # padding row 0 is never a negative
    freq = np.bincount(ids, minlength=10)[1:] / len(ids)
    p = np.array([(math.log(i + 1) - math.log(i)) / math.log(10) for i in range(1, 10)])
    np.testing.assert_allclose(freq, p, atol=0.005)
    np.testing.assert_allclose(expected.numpy()[:5], 200000 * p[ids[:5] - 1], rtol=1e-5)


def test_full_softmax_matches_numpy():
    rng = np.random.default_rng(1)
    table = rng.normal(size=(6, 3)).astype(np.float32)
    user = rng.normal(size=(2, 3)).astype(np.float32)
    targets = np.array([2, 5], np.int32)
    logits = user @ table[1:].T  # items 1..5
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = -(logp[0, 1] + logp[1, 4]) / 2
    got = losses.full_softmax_loss(tf.constant(user), tf.constant(targets), tf.constant(table))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_logistic_loss_matches_hand_computation():
    # Unit vectors so cosines are easy: u = e1; item 1 = e1 (cos 1), item 2 = e2 (cos 0),
    # item 3 = -e1 (cos -1). tau = 0.5 -> logits 2, 0, -2.
    table = np.array([[0, 0], [1, 0], [0, 1], [-1, 0]], np.float32)
    user = np.array([[2.0, 0.0]], np.float32)  # not unit: the loss normalises
    negatives = np.array([[2, 3, 1]], np.int32)  # the last one is the target: dropped
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731  softplus
    # pos: -log sigmoid(2) = softplus(-2); neg: -log(1 - sigmoid(z)) = softplus(z)
    expected = (sp(-2) + sp(0) + sp(-2)) / 3
    got = losses.logistic_loss(tf.constant(user), tf.constant([1]), tf.constant(table),
                               tf.constant(negatives), temperature=0.5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_hard_readout_picks_the_interest_closest_to_the_target():
    interests = np.array([[[1, 0], [0, 3]], [[2, 2], [-1, 0]]], np.float32)  # [B=2, K=2, D=2]
    target = np.array([[0, 1], [1, 0]], np.float32)
    # user 0: scores (0, 3) -> interest 1; user 1: scores (2, -1) -> interest 0
    got = losses.hard_readout(tf.constant(interests), tf.constant(target)).numpy()
    np.testing.assert_array_equal(got, [[0, 3], [2, 2]])
