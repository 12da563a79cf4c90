"""Item-based CF baseline: cosine co-occurrence and the summed-history ranking (numpy oracles)."""

import math

import numpy as np

from mic_tf.evaluation.baselines import item_cf_rank, item_cf_similarity


def _csr(seqs):
    return (np.concatenate([np.asarray(s) for s in seqs]),
            np.concatenate([[0], np.cumsum([len(s) for s in seqs])]))


def test_item_cf_by_hand():
    # users A [1, 2, 3], B [1, 2, 1] (a repeat counts once), C [2, 4]
    items, offsets = _csr([[1, 2, 3], [1, 2, 1], [2, 4]])
    sim = item_cf_similarity(items, offsets, 4).toarray()
    assert sim.shape == (5, 5) and np.allclose(np.diag(sim), 0) and not sim[0].any()
    np.testing.assert_allclose(sim[1, 2], 2 / math.sqrt(2 * 3), rtol=1e-6)  # C12 = 2, C11 2, C22 3
    np.testing.assert_allclose(sim[1, 3], 1 / math.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(sim[2, 4], 1 / math.sqrt(3), rtol=1e-6)
    assert sim[1, 4] == 0 and sim[3, 4] == 0
    np.testing.assert_allclose(sim, sim.T)
    # history [1]: 2 (.816), 3 (.707), then the zero scores by id: 1, 4
    ranked = item_cf_rank(item_cf_similarity(items, offsets, 4), np.array([[1, 0, 0]]), 4)
    assert ranked.tolist() == [[2, 3, 1, 4]]
    # history [3, 4] (padding ignored): 2 = S32 + S42 = 2 / sqrt(3) = 1.155, 1 = S31 = .707
    ranked = item_cf_rank(item_cf_similarity(items, offsets, 4), np.array([[3, 4, 0]]), 2)
    assert ranked.tolist() == [[2, 1]]


def test_item_cf_matches_dense_numpy():
    rng = np.random.default_rng(0)
    n = 30
    seqs = [rng.integers(1, n + 1, rng.integers(2, 15)) for _ in range(50)]
    items, offsets = _csr(seqs)
    x = np.zeros((len(seqs), n + 1))
    for u, s in enumerate(seqs):
        x[u, s] = 1.0
    co = x.T @ x
    d = np.sqrt(np.diag(co))
    with np.errstate(divide="ignore", invalid="ignore"):
        oracle = np.where(np.outer(d, d) > 0, co / np.outer(d, d), 0.0)
    np.fill_diagonal(oracle, 0.0)
    sim = item_cf_similarity(items, offsets, n)
    np.testing.assert_allclose(sim.toarray(), oracle, rtol=1e-5, atol=1e-7)
    hist = np.zeros((20, 6), np.int64)
    for i in range(20):
        m = rng.integers(1, 7)
        hist[i, :m] = rng.integers(1, n + 1, m)
    ranked = item_cf_rank(sim, hist, 10, batch_size=7)
    for i, h in enumerate(hist):
        scores = sum(oracle[x, 1:] for x in h if x)  # a repeated item votes twice
        scores = np.round(scores.astype(np.float32), 5)  # float32 sums: compare ranks, not bits
        expected = np.lexsort((np.arange(1, n + 1), -scores))[:10] + 1
        got = ranked[i]
        np.testing.assert_allclose(np.round(scores[got - 1], 4), np.round(scores[expected - 1], 4))
