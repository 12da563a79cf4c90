"""The Python inference API refuses bad input instead of answering something (issue 15, item 4):
non-finite settings, non-integer ids, and saved datastores whose files disagree."""

import json

import numpy as np
import pytest

from mic_tf.errors import DataError, UsageError
from mic_tf.inference import CrossChannelInference, Datastore, InferenceConfig, recommend
from tests.test_inference import QUERY, hand_store, random_store

NAN = float("nan")


@pytest.mark.parametrize("settings", [{"lam_mic": NAN}, {"lam_div": NAN}, {"lam_mic": np.inf},
                                      {"k1": -3}, {"m3": -1}, {"top_n": 0}, {"m1": 2.5},
                                      {"use_u2u": "yes"}])
def test_bad_settings_are_refused_by_recommend(settings):
    ds = hand_store()
    cfg = InferenceConfig(**{"top_n": 3, **settings})
    name = next(iter(settings))
    with pytest.raises(UsageError, match=f"--{name}="):
        recommend(ds, QUERY, np.array([[1, 2]]), cfg)
    with pytest.raises(UsageError, match=f"--{name}="):
        CrossChannelInference(ds, cfg)


def test_nan_weights_used_to_return_zeros_now_finite_ones_still_rank():
    ds = hand_store()
    res = recommend(ds, QUERY, np.array([[1, 2]]), InferenceConfig(top_n=3, lam_mic=0.0))
    assert (res.items > 0).all() and np.isfinite(res.scores).all()


@pytest.mark.parametrize("history, what", [
    ([[2.7, 1]], "2.7"),                   # used to be truncated to item 2
    ([["1", "2"]], "str"),                 # used to be parsed as ids 1 and 2
    ([[True, False]], "bool"),
    ([[1, np.nan]], "nan"),
])
def test_history_ids_must_be_integers(history, what):
    ds = hand_store()
    with pytest.raises(UsageError, match="integer item ids") as info:
        recommend(ds, QUERY, history)
    assert what in str(info.value)
    engine = CrossChannelInference(ds, InferenceConfig(top_n=3))
    with pytest.raises(UsageError, match="integer item ids"):
        engine.recommend_one(QUERY[0], history[0])


def test_integral_float_ids_and_empty_histories_are_accepted():
    ds = hand_store()
    cfg = InferenceConfig(top_n=3)
    as_float = recommend(ds, QUERY, np.array([[2.0, 1.0]]), cfg)
    as_int = recommend(ds, QUERY, np.array([[2, 1]]), cfg)
    np.testing.assert_array_equal(as_float.items, as_int.items)
    items, _ = CrossChannelInference(ds, cfg).recommend_one(QUERY[0], [])
    assert (items > 0).any()


@pytest.mark.parametrize("query", [[["0.8", "0.6"]], [[True, False]], [[0.8, np.nan]]])
def test_query_vectors_must_be_finite_numbers(query):
    with pytest.raises(UsageError, match="queries"):
        recommend(hand_store(), query, np.array([[1]]))


# ------------------------------------------------------------------------ saved datastores
def saved(tmp_path, name="store", **kwargs):
    return random_store(**kwargs).save(tmp_path / name)


def test_item_vectors_and_item_index_that_disagree_are_refused(tmp_path):
    folder = saved(tmp_path, n=40)
    other = saved(tmp_path, "other", n=41)
    (folder / "item_vectors.npy").write_bytes((other / "item_vectors.npy").read_bytes())
    with pytest.raises(DataError, match=r"items\.faiss.*40.*item_vectors\.npy.*41|"
                                        r"item_vectors\.npy.*41.*items\.faiss.*40"):
        Datastore.load(folder, use_gpu=False)


def test_user_vectors_and_user_index_that_disagree_are_refused(tmp_path):
    folder = saved(tmp_path, u=30)
    other = saved(tmp_path, "other", u=31)
    for name in ("user_vectors.npy", "history_offsets.npy", "history_items.npy"):
        (folder / name).write_bytes((other / name).read_bytes())
    with pytest.raises(DataError, match=r"users\.faiss"):
        Datastore.load(folder, use_gpu=False)


def test_settings_that_disagree_with_the_arrays_are_refused(tmp_path):
    folder = saved(tmp_path)
    meta = json.loads((folder / "datastore.json").read_text())
    meta["dim"] = 16
    (folder / "datastore.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="datastore.json"):
        Datastore.load(folder, use_gpu=False)


def test_a_missing_or_unreadable_file_is_a_data_error_naming_it(tmp_path):
    folder = saved(tmp_path)
    (folder / "item_category.npy").unlink()
    with pytest.raises(DataError, match="item_category.npy"):
        Datastore.load(folder, use_gpu=False)
    folder = saved(tmp_path, "b")
    (folder / "items.faiss").write_bytes(b"not an index")
    with pytest.raises(DataError, match="items.faiss"):
        Datastore.load(folder, use_gpu=False)
    with pytest.raises(DataError, match="datastore.json"):
        Datastore.load(tmp_path / "nothing", use_gpu=False)


def test_an_i2i_table_with_foreign_ids_is_refused(tmp_path):
    ds = random_store(n=40)
    ds.build_item_neighbours(3)
    folder = ds.save(tmp_path / "s")
    table = np.load(folder / "item_neighbours.npy")
    table[5, 0] = 99
    np.save(folder / "item_neighbours.npy", table)
    with pytest.raises(DataError, match="item_neighbours.npy"):
        Datastore.load(folder, use_gpu=False)


def test_a_unit_item_index_from_another_datastore_is_refused(tmp_path):
    folder = saved(tmp_path, n=40)
    other = saved(tmp_path, "other", n=41)
    assert (folder / "items_unit.faiss").exists()  # dot-product datastores keep both indexes
    (folder / "items_unit.faiss").write_bytes((other / "items_unit.faiss").read_bytes())
    with pytest.raises(DataError, match=r"items_unit\.faiss"):
        Datastore.load(folder, use_gpu=False)
