"""Tests of mic_tf.inference: datastores, the three channels, MIC's score and the greedy pick."""

import collections
import math

import numpy as np
import pytest

from mic_tf.evaluation.retrieval import ItemIndex
from mic_tf.inference import CrossChannelInference, Datastore, InferenceConfig, recommend
from mic_tf.inference import channels
from mic_tf.inference.score import count_candidates, count_softmax, greedy_pick, greedy_pick_one

# --------------------------------------------------------------------------- hand-built datastore
# D = 2, N = 5 unit item vectors; pairwise cosines:
#   1.2 = .8, 1.3 = .6, 1.4 = 0, 1.5 = -1, 2.3 = .96, 2.4 = .6, 2.5 = -.8,
#   3.4 = .8, 3.5 = -.6, 4.5 = 0
ITEMS = np.array([[0, 0], [1, 0], [.8, .6], [.6, .8], [0, 1], [-1, 0]], np.float32)
CATS = np.array([0, 1, 1, 1, 2, 0])  # item 5 has no category (0)
USERS = np.array([[1, 0], [0, 1], [.6, .8]], np.float32)  # training users 0, 1, 2
HIST = [[5, 1, 2], [4], [3, 3, 4, 2]]


def _csr(histories):
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in histories])])
    return np.concatenate([np.asarray(h, np.int64) for h in histories]), offsets


def hand_store(index_type="flat", **params):
    items, offsets = _csr(HIST)
    return Datastore(USERS, ITEMS, items, offsets, CATS, index_type=index_type,
                     index_params=params or None, use_gpu=False)


QUERY = np.array([[.8, .6]], np.float32)  # cos to items 1..5: .8, 1, .96, .6, -.8


def test_u2i_hand():
    ds = hand_store()
    assert channels.u2i(ds, QUERY, 2).tolist() == [[2, 3]]
    assert channels.u2i(ds, QUERY * 3, 9).tolist() == [[2, 3, 1, 4, 5]]  # capped by N; cosine
    # two interests (1, 0) and (0, 1): max cos per item = 1:1, 2:.8, 3:.8, 4:1, 5:0 -> ties by id
    two = np.array([[[1, 0], [0, 1]]], np.float32)
    assert channels.u2i(ds, two, 4).tolist() == [[1, 4, 2, 3]]


def test_u2u_hand_last_items_capped():
    ds = hand_store()
    # query cos to users: u0 .8, u1 .6, u2 .96 -> u2, u0, u1
    items, nbrs = channels.u2u(ds, QUERY, 2, 2)
    assert nbrs.tolist() == [[2, 0]]
    assert items.tolist() == [[4, 2, 1, 2]]  # last two of [3,3,4,2] and of [5,1,2]
    items, nbrs = channels.u2u(ds, QUERY, 5, 3)  # M1 capped by U = 3, user 1 has one item
    assert nbrs.tolist() == [[2, 0, 1]]
    assert items.tolist() == [[3, 4, 2, 5, 1, 2, 0, 0, 4]]


def test_i2i_self_exclusion_and_short_histories():
    ds = hand_store()
    # item 1 -> 2 (.8), 3 (.6); item 3 -> 2 (.96), 4 (.8); never the item itself
    # width min(M, L) * M3 = 3 * 2; the padding slots of the history give empty (0) slots
    assert channels.i2i(ds, np.array([[1, 0, 0]]), 30, 2).tolist() == [[2, 3, 0, 0, 0, 0]]
    assert channels.i2i(ds, np.array([[1, 3]]), 30, 2).tolist() == [[2, 3, 2, 4]]
    # M = 1 keeps only the last real item (3); rows shorter than M give what exists (0-padded)
    out = channels.i2i(ds, np.array([[1, 3, 0], [4, 0, 0]]), 1, 2)
    assert out.tolist() == [[2, 4], [3, 2]]  # item 4 -> 3 (.8), 2 (.6)
    out = channels.i2i(ds, np.array([[1, 3, 0], [4, 0, 0]]), 2, 2)
    assert out.tolist() == [[2, 3, 2, 4], [3, 2, 0, 0]]
    # M3 >= N: every other item, never the item itself
    out = channels.i2i(ds, np.array([[2]]), 30, 50)
    assert out.tolist() == [[3, 1, 4, 5]]
    for row in channels.i2i(ds, np.arange(1, 6)[:, None], 30, 50):
        assert len(set(row.tolist())) == 4
    assert channels.i2i(ds, np.zeros((2, 0), np.int64), 30, 2).shape == (2, 0)


def test_count_and_softmax():
    cands, counts = count_candidates(np.array([[2, 3, 4, 2, 2, 3], [5, 0, 0, 5, 0, 0]]))
    assert cands.tolist() == [[2, 3, 4], [5, 0, 0]]
    assert counts.tolist() == [[3, 2, 1], [2, 0, 0]]
    soft = count_softmax(counts)
    z = math.e ** 3 + math.e ** 2 + math.e
    np.testing.assert_allclose(soft[0], [math.e ** 3 / z, math.e ** 2 / z, math.e / z])
    np.testing.assert_allclose(soft[1], [1, 0, 0])


def test_greedy_pick_hand():
    # base [.9, .85, .8, .3], categories [1, 1, 2, 0], lam_div .2, N = 3:
    # t0: all +.2 (first pick)                       -> 1.1, 1.05, 1.0, .5   -> item 1 (1.1)
    # t1: picked cats {1}: item2 0/1, item3 1, item4 1 -> .85, 1.0, .5       -> item 3 (1.0)
    # t2: picked cats {1,2}: item2 1/2, item4 2/2      -> .85 + .1 = .95, .5 -> item 2 (.95)
    items, scores = greedy_pick(np.array([[.9, .85, .8, .3]]), np.array([[1, 2, 3, 4]]),
                                np.array([[1, 1, 2, 0]]), 3, .2)
    assert items.tolist() == [[1, 3, 2]]
    np.testing.assert_allclose(scores, [[1.1, 1.0, .95]])
    # category 0 is an ordinary value: items 1, 2 both "no category" are the same category.
    # t0 -> 1 (1.1); t1: item2 same (.88), item3 differs (.8 + .2 = 1.0) -> 3; t2: item2 1/2 -> .98
    items, scores = greedy_pick(np.array([[.9, .88, .8]]), np.array([[1, 2, 3]]),
                                np.array([[0, 0, 5]]), 3, .2)
    assert items.tolist() == [[1, 3, 2]]
    np.testing.assert_allclose(scores, [[1.1, 1.0, .98]])
    # fewer candidates than N: empty slots; padding candidates (0) never picked; batched rows
    items, scores = greedy_pick(np.array([[.5, .4, 0.], [.1, .2, .3]]),
                                np.array([[4, 7, 0], [1, 2, 3]]), np.array([[0, 0, 0], [1, 1, 1]]),
                                4, 0.)
    assert items.tolist() == [[4, 7, 0, 0], [3, 2, 1, 0]]
    assert np.isneginf(scores[0, 2:]).all()


def test_full_score_hand():
    ds = hand_store()
    cfg = InferenceConfig(top_n=3, k1=2, m1=1, m2=2, m=30, m3=2, lam_mic=.5, lam_div=.5)
    res = recommend(ds, QUERY, np.array([[1]]), cfg)
    # U2I [2, 3]; U2U: user 2 (.96) -> last two [4, 2]; I2I: item 1 -> [2, 3]
    assert res.channels["u2i"].tolist() == [[2, 3]]
    assert res.channels["u2u"].tolist() == [[4, 2]]
    assert res.channels["i2i"].tolist() == [[2, 3]]
    assert res.candidates.tolist() == [[2, 3, 4]] and res.counts.tolist() == [[3, 2, 1]]
    z = math.e ** 3 + math.e ** 2 + math.e  # softmax of counts 3, 2, 1
    base2 = 1.0 + .5 * math.e ** 3 / z  # 1.33262
    base3 = .96 + .5 * math.e ** 2 / z  # 1.08236
    base4 = .6 + .5 * math.e / z  # 0.64502
    # t0: +.5 each -> item 2 (1.83262); t1: item 3 same cat (1) -> 1.08236, item 4 (cat 2) ->
    # .64502 + .5 = 1.14502 -> item 4; t2: item 3: cats {1, 2}, 1/2 differ -> 1.08236 + .25
    assert res.items.tolist() == [[2, 4, 3]]
    np.testing.assert_allclose(res.scores, [[base2 + .5, base4 + .5, base3 + .25]], rtol=1e-6)
    # without diversity: 2, 3, 4 by base score
    cfg.lam_div = 0.
    assert recommend(ds, QUERY, np.array([[1]]), cfg).items.tolist() == [[2, 3, 4]]


def test_ablation_switches():
    ds = hand_store()
    for ablation, missing in (("-u2u", "u2u"), ("-u2i", "u2i"), ("-i2i", "i2i")):
        cfg = InferenceConfig.for_ablation(ablation, top_n=3, k1=2, m1=1, m2=2, m3=2)
        res = recommend(ds, QUERY, np.array([[1]]), cfg)
        assert set(res.channels) == {"u2i", "u2u", "i2i"} - {missing}
    with pytest.raises(ValueError):
        InferenceConfig.for_ablation("-foo")


# --------------------------------------------------------------------------- random datastores
def random_store(seed=0, n=40, u=30, d=8, index_type="flat", item_score="dot", **params):
    rng = np.random.default_rng(seed)
    hist = [rng.integers(1, n + 1, rng.integers(1, 12)) for _ in range(u)]
    items, offsets = _csr(hist)
    cats = rng.integers(0, 4, n + 1)
    cats[0] = 0
    # item norms spread over [0.2, 3] so that the dot product and the cosine rank differently
    vectors = rng.normal(size=(n + 1, d)) * rng.uniform(0.2, 3.0, size=(n + 1, 1))
    return Datastore(rng.normal(size=(u, d)), vectors, items, offsets, cats,
                     index_type=index_type, index_params=params or None, use_gpu=False,
                     item_score=item_score)


def queries(seed, b, d=8, k=None, n=40, length=10):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(b, d) if k is None else (b, k, d)).astype(np.float32)
    h = np.zeros((b, length), np.int64)
    for i in range(b):
        m = rng.integers(0, length + 1)
        h[i, :m] = rng.integers(1, n + 1, m)
    return q, h


def oracle(ds, q, h, cfg):
    """Per-user loops over full score matrices (independent of the library's code): the basic
    score is the inner product with the raw item vectors for a "dot" datastore, the cosine for a
    "cosine" one; I2I and U2U always search by cosine."""
    raw = ds.item_vectors.astype(np.float64)
    v = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
    out = []
    for b in range(len(q)):
        qs = q[b] if q.ndim == 3 else q[b][None]
        qn = qs / np.linalg.norm(qs, axis=1, keepdims=True)
        if ds.item_score == "cosine":
            basic = (qn @ v[1:].T).max(axis=0)  # cos of items 1..N
        else:
            basic = (qs @ raw[1:].T).max(axis=0)  # inner products of items 1..N
        counter = collections.Counter()
        if cfg.use_u2i:
            counter.update((np.argsort(-basic, kind="stable")[:cfg.k1 or cfg.top_n] + 1).tolist())
        if cfg.use_u2u:
            uq = qn.mean(axis=0)
            uq = uq / np.linalg.norm(uq)
            for user in np.argsort(-(ds.user_vectors @ uq), kind="stable")[:cfg.m1]:
                seq = ds.history_items[ds.history_offsets[user]:ds.history_offsets[user + 1]]
                counter.update(seq[-cfg.m2:].tolist())
        if cfg.use_i2i:
            real = [x for x in h[b] if x != 0][-cfg.m:] if cfg.m else []
            for x in real:
                sims = v[1:] @ v[x]
                sims[x - 1] = -np.inf
                counter.update((np.argsort(-sims, kind="stable")[:cfg.m3] + 1).tolist()[
                    :min(cfg.m3, ds.num_items - 1)])
        cands = sorted(counter)
        top = max(counter.values())
        z = sum(math.exp(counter[c] - top) for c in cands)
        mic = ({c: math.exp(counter[c] - top) / z for c in cands} if cfg.mic_score == "softmax"
               else {c: counter[c] / top for c in cands})
        first = {c: float(basic[c - 1]) for c in cands}
        if cfg.basic_norm == "minmax":
            lo, hi = min(first.values()), max(first.values())
            first = {c: (x - lo) / (hi - lo) if hi > lo else 1.0 for c, x in first.items()}
        score = {c: first[c] + cfg.lam_mic * mic[c] for c in cands}
        picked = []
        while len(picked) < cfg.top_n and len(picked) < len(cands):
            def total(c):
                if not picked:
                    return score[c] + cfg.lam_div
                diff = sum(ds.item_category[p] != ds.item_category[c] for p in picked)
                return score[c] + cfg.lam_div * diff / len(picked)
            rest = [c for c in cands if c not in picked]
            picked.append(max(rest, key=lambda c: (total(c), -c)))
        out.append(picked + [0] * (cfg.top_n - len(picked)))
    return np.array(out)


@pytest.mark.parametrize("item_score", ["dot", "cosine"])
@pytest.mark.parametrize("k", [None, 3])
@pytest.mark.parametrize("ablation", [None, "-u2u", "-u2i", "-i2i"])
def test_batch_matches_oracle(k, ablation, item_score):
    ds = random_store(1, item_score=item_score)
    q, h = queries(2, 9, k=k)
    cfg = InferenceConfig.for_ablation(ablation, top_n=12, m1=5, m2=4, m=3, m3=6)
    np.testing.assert_array_equal(recommend(ds, q, h, cfg).items, oracle(ds, q, h, cfg))


@pytest.mark.parametrize("basic_norm,mic_score", [("minmax", "softmax"), ("none", "max"),
                                                  ("minmax", "max")])
@pytest.mark.parametrize("k", [None, 3])
def test_score_readings_match_oracle(k, basic_norm, mic_score):
    ds = random_store(11)
    q, h = queries(12, 9, k=k)
    cfg = InferenceConfig(top_n=12, m1=5, m2=4, m=3, m3=6, lam_mic=0.7, lam_div=0.3,
                          basic_norm=basic_norm, mic_score=mic_score)
    np.testing.assert_array_equal(recommend(ds, q, h, cfg).items, oracle(ds, q, h, cfg))


def test_dot_and_cosine_geometries_differ_where_norms_do():
    # items 1 (norm 3) and 2 (unit, closer in angle): dot picks 1, cosine picks 2; I2I is cosine
    items = np.array([[0, 0], [3, 0], [.6, .8], [0, 1]], np.float32)
    hist, offsets = _csr([[1], [2]])
    cats = np.zeros(4, np.int64)
    q = np.array([[.5, .5]], np.float32)
    for score, first in (("dot", 1), ("cosine", 2)):
        ds = Datastore(USERS[:2], items, hist, offsets, cats, use_gpu=False, item_score=score)
        assert channels.u2i(ds, q, 1).tolist() == [[first]]
        # item 3's nearest other item by cosine is 2 (.8), though item 1 has the larger dot
        assert channels.i2i(ds, np.array([[3]]), 1, 1).tolist() == [[2]]
        assert ds.build_item_neighbours(1)[3].tolist() == [2]
    np.testing.assert_array_equal(
        Datastore(USERS[:2], items, hist, offsets, cats, use_gpu=False).item_vectors, items)


def test_defaults_match_oracle():
    ds = random_store(3)
    q, h = queries(4, 6, length=40)
    cfg = InferenceConfig()  # M1 = 40 > U, M3 = 50 > N - 1, N = 50 > some candidate sets
    res = recommend(ds, q, h, cfg)
    np.testing.assert_array_equal(res.items, oracle(ds, q, h, cfg))


@pytest.mark.parametrize("table", [False, True])
@pytest.mark.parametrize("k", [None, 2])
def test_single_user_path_identical(k, table):
    ds = random_store(5)
    if table:
        ds.build_item_neighbours(7)
    q, h = queries(6, 8, k=k)
    h[0] = 0  # empty history
    h[1, 1:] = 0  # history of length 1
    engine = CrossChannelInference(ds, InferenceConfig(top_n=15, m1=6, m2=5, m=4, m3=7))
    batch = engine.recommend(q, h)
    for b in range(len(q)):
        items, scores = engine.recommend_one(q[b], h[b][h[b] != 0])
        np.testing.assert_array_equal(items, batch.items[b])
        np.testing.assert_array_equal(scores, batch.scores[b])


@pytest.mark.parametrize("item_score", ["dot", "cosine"])
@pytest.mark.parametrize("k", [None, 3])
def test_u2i_only_equals_item_index(k, item_score):
    """U2I alone with lam 0 is exactly ComiRec's evaluation (`ItemIndex`) in the same geometry."""
    ds = random_store(7, n=60, item_score=item_score)
    q, h = queries(8, 10, k=k, n=60)
    cfg = InferenceConfig(top_n=20, lam_mic=0., lam_div=0., use_u2u=False, use_i2i=False)
    res = recommend(ds, q, h, cfg)
    qn = q / np.linalg.norm(q, axis=-1, keepdims=True) if item_score == "cosine" else q
    _, expected = ItemIndex(ds.item_vectors, use_gpu=False).search(qn, 20)
    np.testing.assert_array_equal(res.items, expected)


@pytest.mark.parametrize("index_type,params", [("flat", {}), ("ivf", {"nlist": 4, "nprobe": 2}),
                                               ("hnsw", {"M": 8, "efSearch": 16,
                                                         "efConstruction": 20})])
@pytest.mark.parametrize("item_score", ["dot", "cosine"])
def test_save_load_same_answers(tmp_path, index_type, params, item_score):
    ds = random_store(9, n=200, u=100, index_type=index_type, item_score=item_score, **params)
    q, h = queries(10, 7, n=200)
    cfg = InferenceConfig(top_n=20, m1=8, m2=5, m=4, m3=6)
    before = recommend(ds, q, h, cfg)
    folder = ds.save(tmp_path / "store")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["datastore.json", "history_items.npy", "history_offsets.npy", "item_category.npy",
         "item_vectors.npy", "user_vectors.npy", "items.faiss", "users.faiss"]
        + (["items_unit.faiss"] if item_score == "dot" else []))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left behind
    loaded = Datastore.load(folder, use_gpu=False)
    assert loaded.index_type == index_type and loaded.index_params == ds.index_params
    assert loaded.item_score == item_score
    assert loaded.settings()["built_params"] == ds.settings()["built_params"]  # e.g. IVF nlist
    after = recommend(loaded, q, h, cfg)
    np.testing.assert_array_equal(after.items, before.items)
    np.testing.assert_array_equal(after.scores, before.scores)
    for name in before.channels:
        np.testing.assert_array_equal(after.channels[name], before.channels[name])
    np.testing.assert_array_equal(loaded.search_items(q, 9)[1], ds.search_items(q, 9)[1])
    # overwrite in place: still loads
    ds.save(folder)
    assert Datastore.load(folder, use_gpu=False).num_items == 200


def test_multi_interest_training_users_stored_as_renormalised_mean():
    rng = np.random.default_rng(0)
    users = rng.normal(size=(4, 3, 5))
    ds = Datastore(users, rng.normal(size=(6, 5)), np.array([1, 2]), np.array([0, 1, 2, 2, 2]),
                   np.zeros(6, np.int64), use_gpu=False)
    unit = users / np.linalg.norm(users, axis=-1, keepdims=True)
    mean = unit.mean(axis=1)
    np.testing.assert_allclose(ds.user_vectors, mean / np.linalg.norm(mean, axis=1,
                                                                         keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ds.item_unit[1:], axis=1), 1, rtol=1e-5)
    assert (ds.item_vectors[0] == 0).all() and (ds.item_unit[0] == 0).all()


def test_bad_inputs():
    with pytest.raises(ValueError):
        hand_store("annoy")
    with pytest.raises(ValueError):
        Datastore(USERS, ITEMS, np.array([1, 9]), np.array([0, 1, 2, 2]), CATS, use_gpu=False)
    ds = hand_store()
    with pytest.raises(ValueError):
        recommend(ds, QUERY, np.array([[7]]))


def test_repeats_counted_and_empty_batch():
    ds = hand_store()
    # history [2, 2]: item 2 searched twice -> each of its 4 neighbours retrieved twice
    cfg = InferenceConfig(top_n=3, use_u2i=False, use_u2u=False)
    res = recommend(ds, np.ones((1, 3, 2), np.float32), np.array([[2, 2, 0]]), cfg)
    assert res.candidates.tolist() == [[1, 3, 4, 5]] and res.counts.tolist() == [[2, 2, 2, 2]]
    res = recommend(ds, np.zeros((0, 2), np.float32), np.zeros((0, 3), np.int64))
    assert res.items.shape == (0, 50)


def test_candidate_recall_counts_targets_found_per_user():
    from mic_tf.data.dataset import EvalSplit
    from mic_tf.inference.evaluator import candidate_recall

    # user 0 targets [3, 4, 4] with candidates {4, 9}: 2 of 3 found; user 1 targets [7] with
    # candidates {1}: 0 of 1 -> mean (2/3 + 0) / 2 = 1/3
    split = EvalSplit(users=np.arange(2), histories=np.zeros((2, 1), np.int32),
                      history_lengths=np.ones(2, np.int32), targets=np.array([3, 4, 4, 7]),
                      target_offsets=np.array([0, 3, 4]), user_features=np.zeros((2, 0)))
    retrieved = np.array([[4, 9, 0], [1, 0, 0]])
    assert candidate_recall(retrieved, split) == pytest.approx(1 / 3)


def test_pruned_greedy_pick_equals_the_full_scan():
    rng = np.random.default_rng(5)
    for trial in range(200):
        b, c, n = rng.integers(1, 5), rng.integers(1, 300), rng.integers(1, 40)
        base = rng.normal(scale=rng.choice([0.01, 0.1, 1.0]), size=(b, c))
        if trial % 3 == 0:
            base = np.round(base, 1)  # many ties
        cands = rng.choice(np.arange(1, 4000), size=(b, c))
        cands[rng.random((b, c)) < 0.2] = 0
        cands = np.sort(cands, axis=1)
        cats = rng.integers(0, 5, (b, c))
        lam = float(rng.choice([0.0, 0.2, 1.0, -0.3]))
        full = greedy_pick(base, cands, cats, n, lam, prune=False)
        pruned = greedy_pick(base, cands, cats, n, lam, prune=True)
        np.testing.assert_array_equal(pruned[0], full[0])
        np.testing.assert_allclose(pruned[1], full[1])


def test_single_row_greedy_pick_equals_the_batch_scan():
    """The heap-per-pick-count pick of one row (online path) equals the vectorised full scan."""
    rng = np.random.default_rng(6)
    for trial in range(300):
        c, n = int(rng.integers(1, 300)), int(rng.integers(1, 60))
        base = rng.normal(scale=rng.choice([0.01, 0.1, 1.0]), size=c)
        if trial % 3 == 0:
            base = np.round(base, 1)  # many ties, within and across categories
        cands = np.sort(rng.choice(np.arange(1, 4000), size=c, replace=False))
        cands[rng.random(c) < 0.2] = 0
        order = np.argsort(cands == 0, kind="stable")  # padding at the end, ids ascending
        base, cands = base[order], cands[order]
        cats = rng.integers(0, int(rng.choice([1, 3, 20])), c)
        lam = float(rng.choice([0.0, 0.2, 1.0, -0.3]))
        full = greedy_pick(base[None], cands[None], cats[None], n, lam, prune=False)
        one = greedy_pick_one(base, cands, cats, n, lam)
        np.testing.assert_array_equal(one[0], full[0][0])
        np.testing.assert_array_equal(one[1], full[1][0])


def test_single_row_greedy_pick_hand():
    # base .9 (cat 1), .85 (cat 1), .8 (cat 2), lam .2: t0 picks 1 (.9 + .2); t1: item 2 gives
    # .85 + .2 * 0 = .85, item 3 gives .8 + .2 * 1 = 1.0 -> 3; t2: item 2 gives .85 + .2 * 1/2.
    items, scores = greedy_pick_one(np.array([.9, .85, .8, 0.]), np.array([1, 2, 3, 0]),
                                    np.array([1, 1, 2, 0]), 4, 0.2)
    np.testing.assert_array_equal(items, [1, 3, 2, 0])
    np.testing.assert_allclose(scores[:3], [1.1, 1.0, 0.95])
    assert scores[3] == -np.inf


def test_precomputed_i2i_table_hand_and_same_as_search(tmp_path):
    ds = hand_store()
    table = ds.build_item_neighbours(2)
    # item 1 -> 2 (.8), 3 (.6); item 3 -> 2 (.96), 4 (.8); row 0 (padding) empty
    assert table.shape == (6, 2) and table[0].tolist() == [0, 0]
    assert table[1].tolist() == [2, 3] and table[3].tolist() == [2, 4]
    assert channels.i2i(ds, np.array([[1, 3, 0], [4, 0, 0]]), 2, 2).tolist() == \
        [[2, 3, 2, 4], [3, 2, 0, 0]]
    # a wider table serves any M3 up to its width, identically to the on-the-fly search
    big = random_store(11, n=300, u=50)
    _, h = queries(12, 9, n=300)
    searched = {m3: channels.i2i(big, h, 5, m3) for m3 in (1, 7, 20)}
    big.build_item_neighbours(20, batch=64)
    for m3, expected in searched.items():
        np.testing.assert_array_equal(channels.i2i(big, h, 5, m3), expected)
    assert not (big.item_neighbours[1:] == np.arange(1, 301)[:, None]).any()  # never itself
    # persisted with the datastore and read back; a table narrower than M3 falls back to search
    loaded = Datastore.load(big.save(tmp_path / "s"), use_gpu=False)
    np.testing.assert_array_equal(loaded.item_neighbours, big.item_neighbours)
    big.build_item_neighbours(3)
    np.testing.assert_array_equal(channels.i2i(big, h, 5, 7), searched[7])


def test_comirec_count_penalty_hand_and_pruned():
    # ComiRec: base - coef * (picked items of the same category); coef .1:
    # t0 item 1 (.9); t1 item 2 .85 - .1 = .75 < item 3 .8; t2 item 2 .75 > item 4 .5 - .1;
    # t3 item 4 .5 - .2 = .3
    items, scores = greedy_pick(np.array([[.9, .85, .8, .5]]), np.array([[1, 2, 3, 4]]),
                                np.array([[1, 1, 2, 1]]), 4, 0.1, penalty="count")
    assert items.tolist() == [[1, 3, 2, 4]]
    np.testing.assert_allclose(scores, [[.9, .8, .75, .3]])
    rng = np.random.default_rng(8)
    for _ in range(100):
        b, c, n = rng.integers(1, 4), rng.integers(1, 200), rng.integers(1, 30)
        base = np.round(rng.normal(size=(b, c)), int(rng.integers(1, 4)))
        cands = np.sort(rng.choice(np.arange(1, 1000), size=(b, c)), axis=1)
        cats = rng.integers(0, 4, (b, c))
        lam = float(rng.choice([0.05, 0.5, 2.0]))
        full = greedy_pick(base, cands, cats, n, lam, prune=False, penalty="count")
        pruned = greedy_pick(base, cands, cats, n, lam, prune=True, penalty="count")
        np.testing.assert_array_equal(pruned[0], full[0])
    with pytest.raises(ValueError, match="penalty"):
        greedy_pick(base, cands, cats, 3, 0.1, penalty="ratio")
