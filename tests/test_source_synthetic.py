"""Synthetic source: determinism, planted clusters/categories/fields, popularity skew, scale."""

import numpy as np
import pytest

from mic_tf.data.prepare import prepare_dataset
from mic_tf.data.sources import get_source, synthetic
from mic_tf.errors import ConfigError, DataError, MicError

SMALL = {"synthetic_users": 600, "synthetic_items": 400, "synthetic_clusters": 8,
         "synthetic_categories": 16, "synthetic_mean_length": 25, "synthetic_seed": 3}


def test_registered():
    assert get_source("synthetic") is synthetic
    assert synthetic.locate(None, {}) == []
    assert set(synthetic.OPTIONS) == set(synthetic.DEFAULTS)


def test_deterministic_by_seed():
    a, b = synthetic.generate(SMALL), synthetic.generate(SMALL)
    for x, y in ((a.raw.users, b.raw.users), (a.raw.items, b.raw.items),
                 (a.raw.timestamps, b.raw.timestamps), (a.item_cluster, b.item_cluster),
                 (a.user_cluster, b.user_cluster)):
        assert np.array_equal(x, y)
    assert a.raw.item_category.equals(b.raw.item_category)
    assert a.raw.user_features.equals(b.raw.user_features)
    c = synthetic.generate({**SMALL, "synthetic_seed": 4})
    assert len(c.raw.items) != len(a.raw.items) or not np.array_equal(c.raw.items, a.raw.items)
    assert not np.array_equal(c.user_cluster, a.user_cluster)


def test_shapes_and_ranges():
    d = synthetic.generate(SMALL)
    raw = d.raw
    assert raw.users.min() == 1 and raw.users.max() == 600
    assert raw.items.min() >= 1 and raw.items.max() <= 400
    lengths = np.bincount(raw.users)[1:]
    assert lengths.min() >= 3
    assert 20 < lengths.mean() < 30
    assert np.mean(lengths >= 5) > 0.85
    # Each user's times increase, so file order is time order.
    same_user = raw.users[1:] == raw.users[:-1]
    assert np.all(np.diff(raw.timestamps)[same_user] > 0)
    assert set(raw.user_features.columns) == {"segment", "activity", "region"}
    assert len(raw.item_category) == 400 and raw.item_category.nunique() <= 16


def test_planted_clusters():
    d = synthetic.generate(SMALL)
    raw = d.raw
    item_cluster = d.item_cluster[raw.items - 1]
    prim = d.user_cluster[raw.users - 1]
    sec = d.user_secondary[raw.users - 1]
    in_own = (item_cluster == prim) | (item_cluster == sec)
    assert in_own.mean() > 0.85            # chance level would be ~1/8 to 2/8
    per_user = np.bincount(raw.users, weights=in_own)[1:] / np.bincount(raw.users)[1:]
    assert np.median(per_user) > 0.85
    # Sequential structure: consecutive items share a cluster far above chance.
    same_user = raw.users[1:] == raw.users[:-1]
    assert np.mean((item_cluster[1:] == item_cluster[:-1])[same_user]) > 0.6
    # Categories follow clusters: the majority category of each cluster covers most items.
    agree = [np.bincount(d.item_category[d.item_cluster == k]).max() /
             np.sum(d.item_cluster == k) for k in range(8)]
    assert np.mean(agree) > 0.35  # 2 home categories per cluster share ~80%
    # The planted user field: segment equals the primary cluster for ~80% of users.
    seg = raw.user_features["segment"].str[3:].astype(int).to_numpy()
    assert 0.75 < np.mean(seg == d.user_cluster) < 0.9
    assert raw.user_features["region"].nunique() == synthetic.N_REGIONS


def test_popularity_skew():
    d = synthetic.generate({**SMALL, "synthetic_users": 2000, "synthetic_items": 1000})
    counts = np.sort(np.bincount(d.raw.items, minlength=1001)[1:])[::-1]
    top10 = counts[:100].sum() / counts.sum()
    assert top10 > 0.25                    # uniform would give 0.10
    assert counts[0] > 10 * np.median(counts)


def test_prepare_end_to_end(tmp_path):
    opts = {**SMALL}
    ds = prepare_dataset("synthetic", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                         source_options=opts, verbose=False)
    raw = synthetic.generate(opts).raw
    lengths = np.bincount(raw.users)[1:]
    # Every item is frequent here, so the kept users are exactly those with >= 5 interactions.
    item_counts = np.bincount(raw.items)[1:]
    assert item_counts[item_counts > 0].min() >= 5
    assert ds.counts()["users"] == int(np.sum(lengths >= 5))
    assert ds.counts()["interactions"] == int(lengths[lengths >= 5].sum())
    assert ds.counts()["items"] == int(np.count_nonzero(item_counts))
    assert ds.user_feature_names == ["segment", "activity", "region"]
    assert ds.num_categories <= 16
    # Cached by options: same options reuse the folder, another seed rebuilds.
    again = prepare_dataset("synthetic", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                            source_options=opts, verbose=False)
    assert again.meta["cache_key"] == ds.meta["cache_key"]
    other = prepare_dataset("synthetic", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                            source_options={**opts, "synthetic_seed": 9}, verbose=False)
    assert other.meta["cache_key"] != ds.meta["cache_key"]


def test_defaults_and_bad_options():
    d = synthetic.generate({})
    assert d.raw.users.max() == synthetic.DEFAULTS["synthetic_users"]
    for bad in ({"synthetic_users": 0}, {"synthetic_mean_length": 4},
                {"synthetic_clusters": 50, "synthetic_items": 10}):
        with pytest.raises(ConfigError):
            synthetic.generate(bad)
    assert issubclass(ConfigError, MicError)


def test_single_cluster_and_category():
    d = synthetic.generate({"synthetic_users": 50, "synthetic_items": 20, "synthetic_clusters": 1,
                            "synthetic_categories": 1, "synthetic_mean_length": 6})
    assert (d.user_secondary == -1).all()
    assert d.raw.item_category.nunique() == 1


def test_filtering_empties(tmp_path):
    with pytest.raises(DataError, match="no user has >= 5 interactions|too few"):
        prepare_dataset("synthetic", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                        source_options={"synthetic_users": 2, "synthetic_items": 3,
                                        "synthetic_clusters": 1, "synthetic_mean_length": 5},
                        verbose=False)
