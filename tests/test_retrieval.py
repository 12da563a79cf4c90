"""ItemIndex against numpy brute force, MostPopular through the model path, report files."""

import json
import pathlib

import faiss
import numpy as np
import pytest

from mic_tf.data.dataset import EvalSplit
from mic_tf.evaluation.baselines import most_popular_vectors
from mic_tf.evaluation.evaluate import evaluate
from mic_tf.evaluation.report import write_metrics, write_recommendations
from mic_tf.evaluation.retrieval import ItemIndex


def brute_force_top(scores, n):
    """numpy oracle: `[B, N]` float64 scores of items 1..N -> top-n ids (1-based) and scores."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    return order + 1, np.take_along_axis(scores, order, 1)


def test_single_vector_matches_brute_force():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(201, 8)).astype(np.float32)
    queries = rng.normal(size=(30, 8)).astype(np.float32)
    scores, ids = ItemIndex(items, use_gpu=False).search(queries, 10, batch_size=7)
    exact = queries.astype(np.float64) @ items[1:].astype(np.float64).T
    want_ids, want_scores = brute_force_top(exact, 10)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert scores.dtype == np.float32 and ids.dtype == np.int64


def test_many_batches_match_brute_force():
    # 4500 queries of D = 64: batches are at least Faiss's BLAS threshold (2000 rows at D = 64 in
    # faiss 1.15), so several Faiss calls are made; the result must not depend on the cut.
    rng = np.random.default_rng(2)
    items = rng.normal(size=(301, 64)).astype(np.float32)
    queries = rng.normal(size=(4500, 64)).astype(np.float32)
    _, ids = ItemIndex(items, use_gpu=False).search(queries, 5, batch_size=1)
    want_ids, _ = brute_force_top(queries.astype(np.float64) @ items[1:].astype(np.float64).T, 5)
    np.testing.assert_array_equal(ids, want_ids)


def test_multi_interest_matches_brute_force_max():
    rng = np.random.default_rng(1)
    items = rng.normal(size=(101, 6)).astype(np.float32)
    queries = rng.normal(size=(20, 4, 6)).astype(np.float32)
    scores, ids = ItemIndex(items, use_gpu=False).search(queries, 15, batch_size=13)
    # Oracle: f(u, i) = max_k <q_k, e_i>, ranked over the whole catalogue.
    exact = np.einsum("bkd,nd->bkn", queries.astype(np.float64), items[1:].astype(np.float64))
    want_ids, want_scores = brute_force_top(exact.max(axis=1), 15)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert all(len(set(r)) == 15 for r in ids)


def test_multi_interest_merge_keeps_max_and_dedupes():
    # Items 1..5: e1=(1,0) e2=(0,1) e3=(.8,.8) e4=(-1,0) e5=(0,-1); row 0 = padding.
    items = np.array([[9, 9], [1, 0], [0, 1], [.8, .8], [-1, 0], [0, -1]], np.float32)
    queries = np.array([[[1, 0], [0, 2]]], np.float32)  # two interests of one user
    # Interest 1 scores: e1 1, e2 0, e3 .8, e4 -1, e5 0 -> top3 [1, 3, 2].
    # Interest 2 scores: e1 0, e2 2, e3 1.6, e4 0, e5 -2 -> top3 [2, 3, 1].
    # Item 3 comes from both interests (.8 and 1.6) and keeps 1.6; max scores: e2 2, e3 1.6, e1 1.
    scores, ids = ItemIndex(items, use_gpu=False).search(queries, 3)
    np.testing.assert_array_equal(ids, [[2, 3, 1]])
    np.testing.assert_allclose(scores, [[2.0, 1.6, 1.0]], rtol=1e-6)


def test_padding_row_never_returned_and_top_n_above_catalogue():
    # Row 0 would win every query if it were indexed.
    items = np.array([[100, 100], [1, 0], [0, 1], [1, 1]], np.float32)
    index = ItemIndex(items, use_gpu=False)
    assert index.num_items == 3
    scores, ids = index.search(np.array([[1, 0], [1, 2]], np.float32), 5)
    # Query (1,0): e1 1, e2 0, e3 1 -> tie 1 vs 3 broken by smaller id: [1, 3, 2].
    # Query (1,2): e1 1, e2 2, e3 3 -> [3, 2, 1]. Slots 4 and 5 are empty (N = 3).
    np.testing.assert_array_equal(ids, [[1, 3, 2, 0, 0], [3, 2, 1, 0, 0]])
    assert np.isneginf(scores[:, 3:]).all() and np.isfinite(scores[:, :3]).all()
    _, multi = index.search(np.array([[[1, 0], [0, 1]]], np.float32), 5)
    # max over (1,0) and (0,1): e1 1, e2 1, e3 1 -> all tied -> [1, 2, 3], then empty.
    np.testing.assert_array_equal(multi, [[1, 2, 3, 0, 0]])


def test_ties_prefer_smaller_item_id():
    items = np.zeros((8, 1), np.float32)
    items[1:] = [[1], [2], [2], [1], [2], [0], [2]]  # items 2, 3, 5, 7 tie at 2
    index = ItemIndex(items, use_gpu=False)
    # 25 queries take Faiss's BLAS path, a single query its direct path: same rule for both.
    for num_queries in (25, 1):
        _, ids = index.search(np.ones((num_queries, 1), np.float32), 3)
        assert (ids == [2, 3, 5]).all()


@pytest.mark.parametrize("queries", [np.ones((2, 3)), np.ones((2, 2, 3)), np.ones(2)])
def test_wrong_query_shapes_raise(queries):
    index = ItemIndex(np.ones((4, 2)), use_gpu=False)
    with pytest.raises(ValueError, match="queries must be"):
        index.search(queries, 2)


def test_bad_index_inputs_raise():
    with pytest.raises(ValueError, match="N >= 1"):
        ItemIndex(np.ones((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        ItemIndex(np.array([[0.0], [np.nan]]))
    with pytest.raises(ValueError, match="top_n"):
        ItemIndex(np.ones((3, 2)), use_gpu=False).search(np.ones((1, 2)), 0)


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="only meaningful without a GPU")
def test_use_gpu_true_without_gpu_raises():
    with pytest.raises(ValueError, match="no GPU"):
        ItemIndex(np.ones((3, 2)), use_gpu=True)


def _split(target_lists, histories):
    offsets = np.concatenate([[0], np.cumsum([len(t) for t in target_lists])]).astype(np.int64)
    hist = np.array(histories, np.int32)
    return EvalSplit(users=np.arange(len(target_lists)), histories=hist,
                     history_lengths=(hist != 0).sum(1).astype(np.int32),
                     targets=np.concatenate(target_lists).astype(np.int32),
                     target_offsets=offsets,
                     user_features=np.zeros((len(target_lists), 0), np.int32))


def test_most_popular_through_the_model_path():
    popularity = np.array([0, 5, 9, 9, 1, 0])  # items 1..5
    user_vectors, item_vectors = most_popular_vectors(popularity)
    assert item_vectors.shape == (6, 1)
    split = _split([[3, 5], [1]], [[2, 0], [3, 1]])
    cats = np.array([0, 1, 1, 2, 2, 0])
    index = ItemIndex(item_vectors, use_gpu=False)
    metrics, ranked = evaluate(user_vectors(2), index, split, cats, top_n=4, cutoffs=(2, 4))
    # Popularity order: 2 and 3 (9, tie -> smaller id first), 1 (5), 4 (1); same for everyone.
    np.testing.assert_array_equal(ranked, [[2, 3, 1, 4], [2, 3, 1, 4]])
    # User 0, T = [3, 5]: item 3 at rank 1 -> recall@2 = recall@4 = 1/2.
    # User 1, T = [1]: item 1 at rank 2 -> recall@2 = 0, recall@4 = 1, ndcg@4 = 1/log2(4) = .5.
    assert metrics["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert metrics["recall@4"] == pytest.approx((1 / 2 + 1) / 2)
    assert metrics["hit_rate@2"] == pytest.approx(1 / 2)
    # User 0 ndcg@4: DCG = 1/log2(3), IDCG(min(2, 4)) = 1 + 1/log2(3).
    u0 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert metrics["ndcg@4"] == pytest.approx((u0 + 0.5) / 2)
    # Categories of [2, 3, 1, 4] = [1, 2, 1, 2]: same pairs (2,1), (3,4) -> 4/6 for both users.
    assert metrics["diversity@4"] == pytest.approx(4 / 6)
    assert all(isinstance(v, float) for v in metrics.values())


def test_evaluate_exclude_history():
    _, item_vectors = most_popular_vectors(np.array([0, 5, 9, 8, 1, 0]))
    split = _split([[3], [1]], [[2, 0], [3, 1]])
    index = ItemIndex(item_vectors, use_gpu=False)
    _, ranked = evaluate(np.ones((2, 1)), index, split, np.zeros(6, int), top_n=4, cutoffs=(4,),
                         exclude_history=True)
    # Full order [2, 3, 1, 4, 5]. User 0 drops 2; user 1 drops 3 and 1 and runs out -> a 0 slot.
    np.testing.assert_array_equal(ranked, [[3, 1, 4, 5], [2, 4, 5, 0]])


def test_evaluate_rejects_wrong_user_count():
    index = ItemIndex(np.ones((4, 2)), use_gpu=False)
    with pytest.raises(ValueError, match="U = 2"):
        evaluate(np.ones((3, 2)), index, _split([[1], [2]], [[0], [0]]), np.zeros(4, int),
                 top_n=3, cutoffs=(3,))


def test_metrics_json_round_trip(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    valid = {"recall@50": np.float64(0.25), "ndcg@50": 0.125}
    write_metrics(path, {"valid": valid, "test": {"recall@50": 0.5}},
                  extra={"alignment": {"user_item": np.float32(0.75)}, "basic_loss": "sampled"})
    assert json.loads(path.read_text()) == {
        "valid": {"recall@50": 0.25, "ndcg@50": 0.125}, "test": {"recall@50": 0.5},
        "alignment": {"user_item": 0.75}, "basic_loss": "sampled"}


def test_metrics_json_rejects_values_outside_unit_interval(tmp_path):
    path = tmp_path / "metrics.json"
    with pytest.raises(ValueError, match=r"not in \[0, 1\]"):
        write_metrics(path, {"test": {"timing_sec": 12.0}})
    assert list(tmp_path.iterdir()) == []


def test_failing_metrics_writer_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    path.write_text("old")

    def crash(self, text, *args, **kwargs):  # writes half the content, then dies
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_text", crash)
    with pytest.raises(OSError, match="disk full"):
        write_metrics(path, {"test": {"recall@50": 0.5}})
    monkeypatch.undo()
    assert path.read_text() == "old"  # the previous complete file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp file left


def test_recommendations_round_trip(tmp_path):
    path = tmp_path / "recommendations.jsonl"
    item_raw = np.array(["", "i10", "i20", "é30"], dtype=object)
    write_recommendations(path, np.array(["u7", 8]), np.array([[2, 1, 0], [3, 0, 0]]), item_raw)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"user": "u7", "items": ["i20", "i10"]}, {"user": "8", "items": ["é30"]}]


def test_failing_recommendations_writer_leaves_no_file(tmp_path):
    class Unprintable:
        def __str__(self):
            raise RuntimeError("bad id")

    path = tmp_path / "recommendations.jsonl"
    with pytest.raises(RuntimeError, match="bad id"):
        # The first line is written before the second user's id fails.
        write_recommendations(path, np.array(["u1", Unprintable()], dtype=object),
                              np.array([[1], [2]]), np.array(["", "a", "b"]))
    assert list(tmp_path.iterdir()) == []
