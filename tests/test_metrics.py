"""Ranking metrics and alignment / uniformity against values worked out by hand."""

import itertools
import math

import numpy as np
import pytest

from mic_tf.evaluation.metrics import alignment, ranking_metrics, uniformity

L2 = math.log2

# Category of items 0..9 (item 0 = padding). Items 4 and 7 have category 0 ("no category"),
# which is an ordinary value: the two of them count as the same category.
CATS = np.array([0, 1, 1, 2, 0, 3, 2, 0, 1, 3])


def run(rows, target_lists, cutoffs=(4,), cats=CATS, per_user=True):
    ranked = np.array(rows, dtype=np.int64)
    targets = np.concatenate([np.array(t, dtype=np.int32) for t in target_lists])
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in target_lists])]).astype(np.int64)
    return ranking_metrics(ranked, targets, offsets, cats, cutoffs=cutoffs, per_user=per_user)


def test_hit_at_rank_0_vs_rank_3():
    means, per = run([[5, 1, 2, 3], [1, 2, 3, 5]], [[5], [5]])
    # User 0: the target at rank 0: DCG = 1/log2(2) = 1; IDCG(1) = 1.
    # User 1: the target at rank 3: DCG = 1/log2(5) ~ 0.4307; IDCG(1) = 1.
    np.testing.assert_allclose(per["recall@4"], [1.0, 1.0])
    np.testing.assert_allclose(per["hit_rate@4"], [1.0, 1.0])
    np.testing.assert_allclose(per["ndcg@4"], [1.0, 1 / L2(5)])
    np.testing.assert_allclose(per["ndcg_comirec@4"], [1.0, 1 / L2(5)])
    # The paper variant discounts by the position in the TARGET list (0 for both): 1/1 = 1.
    np.testing.assert_allclose(per["ndcg_comirec_paper@4"], [1.0, 1.0])
    assert means["ndcg@4"] == pytest.approx((1 + 1 / L2(5)) / 2)


def test_three_ndcg_variants_differ():
    # R = [1, 9, 2, 8]; T = [3, 2, 2, 8, 6] (5 targets, 4 distinct: 3, 2, 8, 6).
    # Hits: item 2 at rank 2, item 8 at rank 3 -> hits = 2, recall = 2/5.
    # DCG = 1/log2(4) + 1/log2(5) = 0.5 + 0.4307 = 0.9307.
    _, per = run([[1, 9, 2, 8]], [[3, 2, 2, 8, 6]])
    dcg = 1 / L2(4) + 1 / L2(5)
    # IDCG(4) = 1 + 0.6309 + 0.5 + 0.4307 = 2.5616 -> ndcg = 0.9307 / 2.5616 = 0.3633
    assert per["ndcg@4"][0] == pytest.approx(dcg / (1 + 1 / L2(3) + 1 / L2(4) + 1 / L2(5)))
    # ComiRec master: IDCG over hits = 2: 1 + 0.6309 -> 0.9307 / 1.6309 = 0.5707
    assert per["ndcg_comirec@4"][0] == pytest.approx(dcg / (1 + 1 / L2(3)))
    # Paper branch: walk T: no=1 (2 in R), no=2 (2 again), no=3 (8) -> h = 3,
    # dcg = 1/log2(3) + 1/log2(4) + 1/log2(5) = 1.5616; IDCG(3) = 2.1309 -> 0.7328
    assert per["ndcg_comirec_paper@4"][0] == pytest.approx(
        (1 / L2(3) + 1 / L2(4) + 1 / L2(5)) / (1 + 1 / L2(3) + 1 / L2(4)))
    assert per["recall@4"][0] == pytest.approx(2 / 5)
    assert per["hit_rate@4"][0] == 1.0
    assert len({per[k][0] for k in ("ndcg@4", "ndcg_comirec@4", "ndcg_comirec_paper@4")}) == 3
    # Categories of [1, 9, 2, 8] = [1, 3, 1, 1]: 6 pairs, 3 same-category pairs among the 1s
    # -> diversity = 3/6.
    assert per["diversity@4"][0] == pytest.approx(3 / 6)


def test_duplicate_targets():
    # R = [4, 2, 7, 1]; T = [4, 4, 7]: hits at ranks 0 and 2 -> hits = 2, recall = 2/3 (the
    # denominator counts the repeated 4).
    # DCG = 1 + 1/log2(4) = 1.5. Standard IDCG over min(2 distinct, 4) = 2 positions = 1.6309.
    # Perfect ranking [4, 7, ...] (second row): DCG = 1 + 1/log2(3) = IDCG -> exactly 1.
    _, per = run([[4, 2, 7, 1], [4, 7, 1, 2]], [[4, 4, 7], [4, 4, 7]])
    np.testing.assert_allclose(per["recall@4"], [2 / 3, 2 / 3])
    np.testing.assert_allclose(per["ndcg@4"], [1.5 / (1 + 1 / L2(3)), 1.0])
    np.testing.assert_allclose(per["ndcg_comirec@4"], [1.5 / (1 + 1 / L2(3)), 1.0])
    # Paper branch: every element of T is in R: h = 3, dcg = 1 + 1/log2(3) + 1/log2(4) = IDCG(3).
    np.testing.assert_allclose(per["ndcg_comirec_paper@4"], [1.0, 1.0])
    # Categories of [4, 2, 7, 1] = [0, 1, 0, 1]: same pairs (4, 7) and (2, 1) -> 4/6 differ.
    # Category 0 is an ordinary value, so items 4 and 7 do NOT differ.
    assert per["diversity@4"][0] == pytest.approx(4 / 6)


def test_zero_hits_count_as_zero_in_the_mean():
    means, per = run([[1, 2, 3, 5], [5, 1, 2, 3]], [[6, 9], [5]])
    for name in ("recall", "hit_rate", "ndcg", "ndcg_comirec", "ndcg_comirec_paper"):
        assert per[f"{name}@4"][0] == 0.0
    # User 1 has recall 1, so the mean over BOTH users is (0 + 1) / 2.
    assert means["recall@4"] == pytest.approx(0.5)
    assert means["hit_rate@4"] == pytest.approx(0.5)
    # Categories of [1, 2, 3, 5] = [1, 1, 2, 3]: one same pair (1, 2) of 6 -> 5/6.
    assert per["diversity@4"][0] == pytest.approx(5 / 6)


def test_fewer_recommendations_than_slots():
    _, per = run([[6, 3, 0, 0], [5, 0, 0, 0], [1, 0, 4, 0]], [[3, 8], [5], [9]])
    # Row 0: hit at rank 1 -> recall 1/2; DCG = 1/log2(3) = 0.6309;
    # standard IDCG(min(2, 4)) = 1 + 1/log2(3) -> 0.3869; ComiRec IDCG(1) = 1 -> 0.6309;
    # paper: T[0] = 3 is in R -> dcg = 1/log2(2) = 1, h = 1 -> 1.
    assert per["recall@4"][0] == pytest.approx(1 / 2)
    assert per["ndcg@4"][0] == pytest.approx((1 / L2(3)) / (1 + 1 / L2(3)))
    assert per["ndcg_comirec@4"][0] == pytest.approx(1 / L2(3))
    assert per["ndcg_comirec_paper@4"][0] == pytest.approx(1.0)
    # Row 0 diversity: items 6 and 3 are both category 2 -> 0/1 = 0.
    # Row 1: one item -> no pair -> 0.
    # Row 2: empty slots ignored even mid-list: items 1 (cat 1) and 4 (cat 0) -> 1/1 = 1
    # (counting the 0s as category-0 items would give 3/6).
    np.testing.assert_allclose(per["diversity@4"], [0.0, 0.0, 1.0])


def test_cutoff_20_vs_50():
    cats = np.arange(201) % 5  # items 101..150 -> categories 1,2,3,4,0,1,...
    row = np.arange(101, 151)  # 50 distinct items
    targets = [row[5], row[30], 200]  # ranks 5 and 30, plus one never retrieved
    means = run([row], [targets], cutoffs=(20, 50), cats=cats, per_user=False)
    # @20: one hit at rank 5 -> recall 1/3, DCG = 1/log2(7), IDCG(min(3, 20) = 3).
    # @50: hits at ranks 5 and 30 -> recall 2/3, DCG = 1/log2(7) + 1/log2(32) = 0.3562 + 0.2.
    idcg3 = 1 + 1 / L2(3) + 1 / L2(4)
    assert means["recall@20"] == pytest.approx(1 / 3)
    assert means["recall@50"] == pytest.approx(2 / 3)
    assert means["ndcg@20"] == pytest.approx((1 / L2(7)) / idcg3)
    assert means["ndcg@50"] == pytest.approx((1 / L2(7) + 1 / 5) / idcg3)
    assert means["ndcg_comirec@20"] == pytest.approx(1 / L2(7))
    assert means["ndcg_comirec@50"] == pytest.approx((1 / L2(7) + 1 / 5) / (1 + 1 / L2(3)))
    # Paper: @20, T[0] found -> 1/1; @50, T[0], T[1] found -> (1 + 1/log2(3)) / IDCG(2) = 1.
    assert means["ndcg_comirec_paper@20"] == pytest.approx(1.0)
    assert means["ndcg_comirec_paper@50"] == pytest.approx(1.0)
    # Diversity: 20 items = 4 per category -> same pairs 5 * C(4,2) = 30 of C(20,2) = 190;
    # 50 items = 10 per category -> 5 * C(10,2) = 225 of 1225.
    assert means["diversity@20"] == pytest.approx(160 / 190)
    assert means["diversity@50"] == pytest.approx(1000 / 1225)
    assert set(means) == {f"{m}@{k}" for k in (20, 50) for m in (
        "recall", "hit_rate", "ndcg", "ndcg_comirec", "ndcg_comirec_paper", "diversity")}


def test_means_are_plain_floats_in_unit_interval():
    means = run([[4, 2, 7, 1], [1, 2, 3, 5]], [[4, 4, 7], [6]], per_user=False)
    assert all(type(v) is float and 0.0 <= v <= 1.0 for v in means.values())


@pytest.mark.parametrize("rows, targets, offsets, match", [
    ([[1, 2, 3, 4], [1, 2, 3, 4]], [1], [0, 1, 1], "no target"),
    ([[1, 2, 2, 4]], [1], [0, 1], "same item twice"),
    ([[1, 2, 3]], [1], [0, 1], "columns"),
    ([[1, 2, 3, 4]], [0], [0, 1], "targets must be item ids"),
    ([[1, 2, 3, 10]], [1], [0, 1], "ranked must hold item ids"),
    ([[1, 2, 3, 4]], [1, 2], [0, 1], "target_offsets"),
])
def test_bad_inputs_raise(rows, targets, offsets, match):
    with pytest.raises(ValueError, match=match):
        ranking_metrics(np.array(rows), np.array(targets), np.array(offsets), CATS, cutoffs=(4,))


def test_alignment_hand_vectors():
    x = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])  # normalised: (.6,.8), (1,0), (0,1)
    y = np.array([[4.0, 3.0], [0.0, 5.0], [0.0, -1.0]])  # normalised: (.8,.6), (0,1), (0,-1)
    # Squared distances: (-.2, .2) -> 0.08; (1, -1) -> 2; (0, 2) -> 4. Mean = 6.08 / 3.
    assert alignment(x, y) == pytest.approx(6.08 / 3)
    # alpha = 1: mean of the distances sqrt(.08), sqrt(2), 2.
    assert alignment(x, y, alpha=1) == pytest.approx((math.sqrt(0.08) + math.sqrt(2) + 2) / 3)
    assert alignment(x, x) == pytest.approx(0.0)


def _uniformity_oracle(rows, t=2.0):
    """Independent oracle: explicit loop over the pairs i < j of normalised rows."""
    unit = [np.asarray(r, float) / np.linalg.norm(r) for r in rows]
    vals = [math.exp(-t * float(np.sum((a - b) ** 2))) for a, b in itertools.combinations(unit, 2)]
    return math.log(sum(vals) / len(vals))


def test_uniformity_hand_vectors():
    x = np.array([[3.0, 4.0], [2.0, 0.0], [0.0, 5.0], [-7.0, 0.0]])
    # Normalised a=(.6,.8), b=(1,0), c=(0,1), d=(-1,0); squared distances of the 6 pairs:
    # ab .8, ac .4, ad 3.2, bc 2, bd 4, cd 2.
    by_hand = math.log(sum(math.exp(-2 * s) for s in (0.8, 0.4, 3.2, 2, 4, 2)) / 6)
    assert uniformity(x) == pytest.approx(by_hand)
    assert uniformity(x) == pytest.approx(_uniformity_oracle(x))
    assert uniformity(x, t=1) == pytest.approx(_uniformity_oracle(x, t=1))


def test_uniformity_subsamples_deterministically():
    x = np.random.default_rng(3).normal(size=(6, 3))
    value = uniformity(x, max_rows=4, seed=7)
    assert value == uniformity(x, max_rows=4, seed=7)  # same seed, same rows
    # The value is the uniformity of SOME 4-row subset (distinct pairs of those rows only).
    subsets = [_uniformity_oracle(x[list(s)]) for s in itertools.combinations(range(6), 4)]
    assert min(abs(value - s) for s in subsets) < 1e-9


def test_alignment_uniformity_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        alignment(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        uniformity(np.ones((1, 3)))
