"""The ComiRec protocol (spec 2.2) against a plain-Python transcription of ComiRec's data.py."""

import json
import random
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from mic_tf.data.protocol import ProtocolParams, apply_comirec_protocol
from mic_tf.data.raw import RawDataset
from mic_tf.errors import DataError


def comirec_oracle(rows, filter_size=5, seed=1230):
    """ComiRec preprocess/data.py, line by line, on (user, item, ts) rows in file order."""
    users = defaultdict(list)
    item_count = defaultdict(int)
    for uid, iid, ts in rows:
        item_count[iid] += 1
        users[uid].append((iid, ts))
    items = sorted(item_count.items(), key=lambda x: x[1], reverse=True)
    kept = [iid for iid, n in items if n >= filter_size]
    item_map = {iid: j + 1 for j, iid in enumerate(kept)}
    user_ids = [u for u in users if sum(i in item_map for i, _ in users[u]) >= filter_size]
    random.Random(seed).shuffle(user_ids)
    seqs = []
    for u in user_ids:
        seq = sorted(users[u], key=lambda x: x[1])
        seqs.append([item_map[i] for i, _ in seq if i in item_map])
    n = len(user_ids)
    return item_map, user_ids, seqs, int(n * 0.8), int(n * 0.9)


def random_rows(num_rows=3000, num_users=120, num_items=90, seed=0):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, num_users, num_rows)
    items = (rng.zipf(1.6, num_rows) % num_items)
    ts = rng.integers(0, 50, num_rows)  # few distinct times: many ties
    return [(f"u{u}", f"i{i}", int(t)) for u, i, t in zip(users, items, ts)]


def to_raw(rows, categories=None):
    u, i, t = zip(*rows)
    return RawDataset(name="toy", users=np.array(u, dtype=object), items=np.array(i, dtype=object),
                      timestamps=np.array(t, dtype=np.int64), item_category=categories)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_comirec_transcription(seed):
    rows = random_rows(seed=seed)
    item_map, user_ids, seqs, s1, s2 = comirec_oracle(rows)
    ds = apply_comirec_protocol(to_raw(rows))
    assert ds.num_items == len(item_map)
    assert list(ds.item_raw_ids[1:]) == list(item_map)  # popularity order, ties by first appearance
    assert list(ds.user_raw_ids) == user_ids  # the same shuffle as random.seed(1230); shuffle
    assert ds.num_train_users == s1 and ds.num_valid_users == s2 - s1
    for u, seq in enumerate(seqs):
        np.testing.assert_array_equal(ds.sequence(u), seq)  # stable time sort, kept items only


def test_hand_example_renumbering_filters_and_stable_sort():
    # Item counts: a=6, b=6, c=6, d=4 (dropped). Ties go by first appearance: a -> 1, b -> 2, c -> 3.
    rows = []
    for u in ["x", "y"]:  # x and y: 3 a, 3 b each at the same time (ties keep file order)
        rows += [(u, "a", 7), (u, "b", 7), (u, "a", 7), (u, "b", 7), (u, "a", 7), (u, "b", 7)]
    rows += [("z", "c", 5 - k) for k in range(5)]  # z: 5 x c with decreasing times
    rows += [("w", "d", 1)] * 4 + [("w", "c", 2)]  # w: only 1 kept interaction -> dropped
    ds = apply_comirec_protocol(to_raw(rows), ProtocolParams(split_seed=3))
    assert list(ds.item_raw_ids) == ["", "a", "b", "c"]
    assert sorted(ds.user_raw_ids) == ["x", "y", "z"]
    seq_of = {ds.user_raw_ids[u]: list(ds.sequence(u)) for u in range(ds.num_users)}
    assert seq_of["x"] == [1, 2, 1, 2, 1, 2]  # all ties: file order kept
    assert seq_of["z"] == [3, 3, 3, 3, 3]
    assert ds.num_interactions == 6 + 6 + 5


def test_split_is_80_10_10_and_disjoint():
    rows = random_rows(num_rows=20000, num_users=400, num_items=60)
    ds = apply_comirec_protocol(to_raw(rows))
    n = ds.num_users
    sizes = [len(ds.split_range(s)) for s in ("train", "valid", "test")]
    assert sizes == [int(0.8 * n), int(0.9 * n) - int(0.8 * n), n - int(0.9 * n)]
    sets = [set(ds.user_raw_ids[list(ds.split_range(s))]) for s in ("train", "valid", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert len(set(ds.user_raw_ids)) == n


def test_eval_split_cut_and_maxlen_truncation():
    # One user of 12 items [1..12]: cut = int(0.8 * 12) = 9 -> history 1..9, targets 10, 11, 12.
    rows = [("u%d" % u, "i%d" % i, i) for u in range(10) for i in range(1, 13)]
    ds = apply_comirec_protocol(to_raw(rows))
    split = ds.eval_split("test", maxlen=4)
    j = 0
    seq = ds.sequence(split.users[j])
    assert split.history_lengths[j] == 4
    np.testing.assert_array_equal(split.histories[j], seq[5:9])  # last 4 of the first 9
    np.testing.assert_array_equal(split.target_lists()[j], seq[9:])
    long = ds.eval_split("test", maxlen=15)
    assert long.history_lengths[j] == 9
    np.testing.assert_array_equal(long.histories[j], list(seq[:9]) + [0] * 6)  # right padding


def test_categories_and_user_features_follow_new_ids():
    rows = [("u%d" % u, it, t) for u in range(10) for t, it in enumerate(["p", "q", "p", "r", "q", "p"])]
    cats = pd.Series({"p": "Drama", "q": "Comedy"})  # r has no category
    raw = to_raw(rows, categories=cats)
    raw.user_features = pd.DataFrame({"gender": ["F", "M"] * 5},
                                     index=["u%d" % u for u in range(10)])
    ds = apply_comirec_protocol(raw)
    # counts: p=30, q=20, r=10 -> ids 1, 2, 3; categories numbered by first appearance in id order
    assert list(ds.item_raw_ids) == ["", "p", "q", "r"]
    assert list(ds.item_category) == [0, 1, 2, 0]
    assert ds.category_names == ["", "Drama", "Comedy"]
    assert ds.user_feature_vocab == [["F", "M"]]
    for u in range(ds.num_users):
        expected = 1 if int(ds.user_raw_ids[u][1:]) % 2 == 0 else 2
        assert ds.user_features[u, 0] == expected


def test_filtering_that_empties_the_data_names_the_source():
    rows = [("u1", "i%d" % k, k) for k in range(30)]  # every item seen once
    with pytest.raises(DataError, match="no item has >= 5"):
        apply_comirec_protocol(to_raw(rows))
    rows = [("u%d" % k, "i1", k) for k in range(30)]  # one item, every user once
    with pytest.raises(DataError, match="no user has >= 5"):
        apply_comirec_protocol(to_raw(rows))


# ------------------------------------------------ exact duplicate rows (issue 15, item 5)
def test_exact_duplicates_are_kept_by_default_as_comirec_and_reported(capsys):
    rows = random_rows(num_rows=600, num_users=40, num_items=30)
    twice = rows + rows  # a file of 600 rows pasted twice: 1,200 interactions
    logged = []
    ds = apply_comirec_protocol(to_raw(twice), log=logged.append)
    item_map, user_ids, seqs, s1, s2 = comirec_oracle(twice)  # ComiRec keeps repeats
    assert ds.num_interactions == sum(map(len, seqs)) and list(ds.user_raw_ids) == user_ids
    distinct = len(dict.fromkeys(twice))
    assert any(f"{len(twice) - distinct} exact duplicate rows" in m and "--dedup_interactions" in m
               for m in logged), logged


def test_dedup_interactions_drops_exact_duplicates_before_the_filters():
    rows = random_rows(num_rows=600, num_users=40, num_items=30)
    twice = rows + rows
    unique = list(dict.fromkeys(twice))  # first occurrence of each (user, item, time)
    assert len(unique) < len(rows)  # random_rows repeats some rows by itself
    item_map, user_ids, seqs, s1, s2 = comirec_oracle(unique)
    ds = apply_comirec_protocol(to_raw(twice), ProtocolParams(dedup_interactions=True))
    assert list(ds.item_raw_ids[1:]) == list(item_map) and list(ds.user_raw_ids) == user_ids
    for u, seq in enumerate(seqs):
        np.testing.assert_array_equal(ds.sequence(u), seq)
    # duplicates can lift an item over the >= 5 filter: 3 distinct rows, each twice
    lifted = [("u%d" % u, "rare", u) for u in range(3)] * 2
    base = [("u%d" % u, "i%d" % k, 10 + k) for u in range(10) for k in range(6)]
    kept = apply_comirec_protocol(to_raw(base + lifted))
    deduped = apply_comirec_protocol(to_raw(base + lifted), ProtocolParams(dedup_interactions=True))
    assert "rare" in set(kept.item_raw_ids) and "rare" not in set(deduped.item_raw_ids)


def test_dedup_interactions_is_in_the_cache_key_and_a_flag(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    log = tmp_path / "log.csv"
    rows = ["user,item,timestamp"] + [f"u{u},i{i},{i}" for u in range(6) for i in range(5)]
    log.write_text("\n".join(rows + rows[1:]) + "\n")  # every row twice
    counts = []
    for extra in ([], ["--dedup_interactions"]):
        result = subprocess.run([sys.executable, str(REPO / "datasets" / "prepare.py"),
                                 "--dataset=custom", f"--raw_path={log}",
                                 f"--data_dir={tmp_path / 'data'}", *extra],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        counts.append(json.loads(result.stdout.strip().splitlines()[-1])["interactions"])
    assert counts == [60, 30]
    assert "rebuilding" in result.stderr  # the second call did not reuse the first folder


# ----------------------------------------------------- non-finite timestamps (item 5)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_timestamps_are_refused(bad):
    with pytest.raises(DataError, match=r"timestamp.*row 3"):
        RawDataset(name="toy", users=np.array(["a", "b", "c"], dtype=object),
                   items=np.array(["x", "y", "z"], dtype=object),
                   timestamps=np.array([1.0, 2.0, bad]))


def test_boolean_timestamps_are_refused():
    with pytest.raises(DataError, match="boolean"):
        RawDataset(name="toy", users=np.array(["a", "b"], dtype=object),
                   items=np.array(["x", "y"], dtype=object), timestamps=np.array([True, True]))
