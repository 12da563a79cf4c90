"""ComiRec's pooled candidates and greedy coefficient used to re-evaluate checkpoints."""

import numpy as np

from mic_tf.evaluation.checkpoint import comirec_pool
from mic_tf.inference.score import greedy_pick


def test_comirec_pool_merges_interests_by_best_score():
    # items 1..4 in D = 2; interest a = (1, 0), interest b = (0, 1); top 2 each:
    # a: 1 (.9), 2 (.5); b: 3 (.8), 2 (.7) -> pool {1: .9, 2: .7, 3: .8} in id order
    items = np.array([[0, 0], [.9, .1], [.5, .7], [.2, .8], [.1, .1]], np.float32)
    scores, ids = comirec_pool(np.array([[[1, 0], [0, 1]]], np.float32), items, 2)
    real = ids[0] != 0
    assert ids[0][real].tolist() == [1, 2, 3]
    np.testing.assert_allclose(scores[0][real], [.9, .7, .8], rtol=1e-6)
    # single-vector users: the plain top-N
    scores, ids = comirec_pool(np.array([[1, 0]], np.float32), items, 3)
    assert ids[0][ids[0] != 0].tolist() == [1, 2, 3]


def test_comirec_coefficient_trades_accuracy_for_categories():
    # pool 1 (.9, cat 1), 2 (.85, cat 1), 3 (.7, cat 2): coef 0 keeps the score order; coef .2
    # penalises the second cat-1 item (.85 - .2 = .65 < .7), so item 3 comes second
    base, cands, cats = np.array([[.9, .85, .7]]), np.array([[1, 2, 3]]), np.array([[1, 1, 2]])
    assert greedy_pick(base, cands, cats, 3, 0.0, penalty="count")[0].tolist() == [[1, 2, 3]]
    assert greedy_pick(base, cands, cats, 3, 0.2, penalty="count")[0].tolist() == [[1, 3, 2]]
