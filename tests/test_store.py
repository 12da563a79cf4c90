"""The processed format: byte-identical rebuilds, cache keys, atomic replacement."""

import filecmp
import numpy as np
import pytest

from mic_tf.data import store
from mic_tf.data.prepare import prepare_dataset
from mic_tf.data.protocol import ProtocolParams
from mic_tf.errors import DataError
from tests.toy_data import toy_dataset

def test_round_trip(tmp_path):
    ds = toy_dataset()
    store.save(ds, tmp_path / "toy", {"dataset": "toy", "cache_key": "k"})
    back = store.load(tmp_path / "toy")
    for name in ("seq_items", "seq_offsets", "item_category", "user_features", "user_raw_ids",
                 "item_raw_ids", "item_titles"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    assert back.counts() == ds.counts()


def test_save_twice_gives_identical_bytes(tmp_path):
    for out in ("a", "b"):
        store.save(toy_dataset(), tmp_path / out, {"dataset": "toy", "cache_key": "k"})
    cmp = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    assert cmp.left_list == cmp.right_list and len(cmp.left_list) == 9
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", cmp.left_list,
                                           shallow=False)
    assert mismatch == [] and errors == []


def test_crash_while_saving_leaves_old_folder_intact(tmp_path, monkeypatch):
    ds = toy_dataset()
    store.save(ds, tmp_path / "toy", {"dataset": "toy", "cache_key": "old"})
    calls = []

    def failing_save(path, arr, allow_pickle=False):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        np.lib.format.write_array(open(path, "wb"), arr)

    monkeypatch.setattr(store.np, "save", failing_save)
    with pytest.raises(OSError):
        store.save(ds, tmp_path / "toy", {"dataset": "toy", "cache_key": "new"})
    assert store.read_meta(tmp_path / "toy")["cache_key"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]  # no temporary folder left behind


def test_load_without_meta_says_what_to_run(tmp_path):
    with pytest.raises(DataError, match="prepare.py"):
        store.load(tmp_path / "nothing")


def test_cache_key_tracks_params(tmp_path, capsys, ml100k_raw_dir):
    ML100K_RAW = ml100k_raw_dir
    first = prepare_dataset("ml-100k", data_dir=tmp_path, raw_dir=ML100K_RAW)
    key = first.meta["cache_key"]
    again = prepare_dataset("ml-100k", data_dir=tmp_path, raw_dir=ML100K_RAW)
    assert again.meta["cache_key"] == key and "up to date" in capsys.readouterr().err
    other = prepare_dataset("ml-100k", data_dir=tmp_path, raw_dir=ML100K_RAW,
                            params=ProtocolParams(split_seed=7))
    assert other.meta["cache_key"] != key and "rebuilding" in capsys.readouterr().err
    assert list(other.user_raw_ids) != list(first.user_raw_ids)


def test_unknown_dataset_name_lists_the_choices(tmp_path):
    from mic_tf.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown dataset 'movielens'.*ml-100k"):
        prepare_dataset("movielens", data_dir=tmp_path)


def test_prepare_script_reports_an_unknown_dataset_without_a_traceback():
    import subprocess
    import sys

    from tests.conftest import REPO

    result = subprocess.run([sys.executable, str(REPO / "datasets" / "prepare.py"),
                             "--dataset=movielens"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "movielens" in result.stderr and "ml-100k" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------- checksums (issue 15, items 3, 8)
import hashlib  # noqa: E402
import json  # noqa: E402

from tests.test_io import CUSTOM_OPTIONS  # noqa: E402

PROCESSED_FILES = ["categories.tsv", "item_category.npy", "items.tsv", "seq_items.npy",
                   "seq_offsets.npy", "user_features.npy", "user_fields.tsv", "users.tsv"]


def saved_toy(tmp_path):
    folder = tmp_path / "toy"
    store.save(toy_dataset(), folder, {"dataset": "toy", "cache_key": "k"})
    return folder


def test_meta_holds_the_sha256_of_every_processed_file(tmp_path):
    folder = saved_toy(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    assert sorted(meta["files"]) == PROCESSED_FILES
    for name, entry in meta["files"].items():
        data = (folder / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert meta["format_version"] >= 2
    # the fingerprint depends on the content only, not on where the folder lives
    other = tmp_path / "elsewhere" / "toy"
    store.save(toy_dataset(), other, {"dataset": "toy", "cache_key": "k"})
    assert store.read_meta(other)["data_fingerprint"] == meta["data_fingerprint"]


def _shuffle_seq_items(folder):
    seq = np.load(folder / "seq_items.npy")
    np.save(folder / "seq_items.npy", np.random.default_rng(0).permutation(seq))


def _edit_train_users(folder):
    meta = json.loads((folder / "meta.json").read_text())
    meta["counts"]["train_users"] -= 5
    (folder / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _truncate(name):
    def cut(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    return cut


def _delete(name):
    return lambda folder: (folder / name).unlink()


@pytest.mark.parametrize("tamper", [_shuffle_seq_items, _edit_train_users, _truncate("items.tsv"),
                                    _truncate("users.tsv"), _delete("categories.tsv")],
                         ids=["shuffled-seq_items", "edited-train_users", "truncated-items.tsv",
                              "truncated-users.tsv", "missing-categories.tsv"])
def test_a_tampered_folder_is_an_error_that_says_to_rebuild(tmp_path, tamper):
    folder = saved_toy(tmp_path)
    tamper(folder)
    with pytest.raises(DataError, match="--force"):
        store.load(folder)


def test_prepare_does_not_serve_a_tampered_folder_as_up_to_date(tmp_path):
    first = prepare_dataset("custom", data_dir=tmp_path, source_options=CUSTOM_OPTIONS,
                            verbose=False)
    _edit_train_users(tmp_path / "custom")
    with pytest.raises(DataError, match=r"prepare\.py --dataset=custom --force"):
        prepare_dataset("custom", data_dir=tmp_path, source_options=CUSTOM_OPTIONS, verbose=False)
    again = prepare_dataset("custom", data_dir=tmp_path, source_options=CUSTOM_OPTIONS,
                            force=True, verbose=False)
    assert again.counts() == first.counts()
    assert store.load(tmp_path / "custom").counts() == first.counts()


def test_a_folder_of_the_previous_format_is_rebuilt(tmp_path, capsys):
    prepare_dataset("custom", data_dir=tmp_path, source_options=CUSTOM_OPTIONS, verbose=False)
    meta_path = tmp_path / "custom" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 1
    for key in ("files", "data_fingerprint"):
        meta.pop(key)
    meta["cache_key"] = "an old key"
    meta_path.write_text(json.dumps(meta))
    ds = prepare_dataset("custom", data_dir=tmp_path, source_options=CUSTOM_OPTIONS)
    assert "rebuilding" in capsys.readouterr().err
    assert store.read_meta(tmp_path / "custom")["format_version"] == store.FORMAT_VERSION
    assert ds.counts()["interactions"] == 31
