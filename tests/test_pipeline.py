"""tf.data training samplers (spec 2.3): shapes, ComiRec semantics, determinism, resumption."""

import numpy as np
import pytest

from mic_tf.data.pipeline import make_train_dataset, steps_per_epoch
from mic_tf.errors import ConfigError
from tests.toy_data import toy_dataset

B, L = 16, 5


@pytest.fixture(scope="module")
def ds():
    return toy_dataset(num_users=80, num_items=40)


def take(dataset, n):
    it = iter(dataset)
    return [{k: v.numpy() for k, v in next(it).items()} for _ in range(n)]


def check_against_numpy(ds, batch, min_cut):
    """Every example equals seq[:k][-L:] right-padded, target seq[k], with k >= min_cut."""
    for j in range(B):
        seq = ds.sequence(batch["user"][j])
        n = batch["history_length"][j]
        hist = batch["history"][j]
        assert 1 <= n <= L and (hist[n:] == 0).all()
        cuts = [k for k in range(min_cut, len(seq))
                if seq[k] == batch["target"][j] and min(k, L) == n
                and (seq[:k][-L:] == hist[:n]).all()]
        assert cuts, f"example {j} is not a (seq[:k][-L:], seq[k]) pair with k >= {min_cut}"
        assert batch["target_category"][j] == ds.item_category[batch["target"][j]]


def test_comirec_sampler_semantics(ds):
    batches = take(make_train_dataset(ds, batch_size=B, maxlen=L, seed=3), 20)
    n_train = len(ds.split_range("train"))
    for batch in batches:
        assert batch["history"].shape == (B, L) and batch["history"].dtype == np.int32
        assert len(set(batch["user"])) == B  # distinct users in a batch
        assert batch["user"].max() < n_train  # training users only
        check_against_numpy(ds, batch, min_cut=4)
    # cuts spread over [4, len): some example uses a cut well beyond the minimum
    assert max(b["history_length"].max() for b in batches) == L


def test_all_sampler_covers_every_pair_once_per_epoch(ds):
    spe = steps_per_epoch(ds, "all", B)
    lengths = ds.sequence_lengths[:len(ds.split_range("train"))]
    assert spe == int((lengths - 1).sum()) // B
    batches = take(make_train_dataset(ds, batch_size=B, maxlen=L, seed=3, sampler="all"), spe)
    seen = set()
    for batch in batches:
        check_against_numpy(ds, batch, min_cut=1)
        for u, t, n, h in zip(batch["user"], batch["target"], batch["history_length"],
                              batch["history"]):
            seen.add((int(u), int(t), tuple(h)))
    assert len(seen) == spe * B  # no pair twice within an epoch


def test_same_seed_same_batches_and_resume_from_step(ds):
    a = take(make_train_dataset(ds, batch_size=B, maxlen=L, seed=5), 6)
    b = take(make_train_dataset(ds, batch_size=B, maxlen=L, seed=5), 6)
    resumed = take(make_train_dataset(ds, batch_size=B, maxlen=L, seed=5, start_step=4), 2)
    other = take(make_train_dataset(ds, batch_size=B, maxlen=L, seed=6), 1)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    for x, y in zip(a[4:], resumed):
        np.testing.assert_array_equal(x["history"], y["history"])
    assert not np.array_equal(a[0]["user"], other[0]["user"])


def test_bad_configuration_is_named(ds):
    with pytest.raises(ConfigError, match="batch_size=1000 is larger"):
        make_train_dataset(ds, batch_size=1000, maxlen=L, seed=0)
    with pytest.raises(ConfigError, match="unknown sampler"):
        make_train_dataset(ds, batch_size=B, maxlen=L, seed=0, sampler="bogus")
