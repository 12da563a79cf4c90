"""The pieces of `mic_tf.inference.score` the online service shares with `recommend`:
`rank_retrieved` (the merge of given retrievals) and U2U's `exclude` (a query user who is in the
user datastore is not its own neighbour)."""

import numpy as np

from mic_tf.inference import InferenceConfig, channels, recommend
from mic_tf.inference.score import rank_retrieved, retrieve
from tests.test_inference import QUERY, hand_store


def test_u2u_exclude_drops_the_query_user_and_keeps_the_width():
    ds = hand_store()
    # query cos to users: u2 .96, u0 .8, u1 .6
    _, nbrs = channels.u2u(ds, QUERY, 2, 2, exclude=np.array([2]))
    assert nbrs.tolist() == [[0, 1]]
    _, nbrs = channels.u2u(ds, QUERY, 2, 2, exclude=np.array([1]))  # not among the top 2
    assert nbrs.tolist() == [[2, 0]]
    _, nbrs = channels.u2u(ds, QUERY, 5, 2, exclude=np.array([0]))  # M1 >= U: U - 1 real
    assert nbrs.tolist() == [[2, 1, -1]]
    items, nbrs = channels.u2u(ds, np.repeat(QUERY, 2, 0), 2, 2,
                               exclude=np.array([-1, 2]))
    assert nbrs.tolist() == [[2, 0], [0, 1]]
    assert items.tolist() == [[4, 2, 1, 2], [1, 2, 0, 4]]  # user 1 has one item: [0, 4]


def test_rank_retrieved_equals_recommend_on_the_same_retrievals():
    ds = hand_store()
    rng = np.random.default_rng(0)
    cfg = InferenceConfig(top_n=4, m1=2, m2=2, m=2, m3=2)
    for _ in range(20):
        q = rng.normal(size=(3, 2)).astype(np.float32)
        h = rng.integers(0, 6, (3, 4))
        exclude = rng.integers(-1, 3, 3)
        want = recommend(ds, q, h, cfg, exclude_users=exclude)
        got = rank_retrieved(ds, q, retrieve(ds, q, h, cfg, exclude), cfg)
        assert np.array_equal(want.items, got.items) and np.array_equal(want.scores, got.scores)
        online = rank_retrieved(ds, q, retrieve(ds, q, h, cfg, exclude), cfg, online=True)
        assert np.array_equal(want.items, online.items)
        assert np.array_equal(want.scores, online.scores)


def test_rank_retrieved_with_no_channel_gives_empty_lists():
    ds = hand_store()
    result = rank_retrieved(ds, QUERY, {}, InferenceConfig(top_n=3))
    assert result.items.tolist() == [[0, 0, 0]]
