"""Writers of mic_tf.utils.io and their callers: nothing the project did not write is ever
deleted (issue 15, item 1), and every file gets the umask's usual mode (item 10)."""

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from mic_tf.data import store
from mic_tf.data.prepare import prepare_dataset
from mic_tf.errors import ConfigError
from mic_tf.inference import Datastore
from mic_tf.utils.io import (atomic_dir, atomic_path, atomic_write_json, atomic_write_text,
                             ours_if)
from tests.toy_data import toy_dataset

CUSTOM = Path(__file__).parent / "fixtures" / "custom" / "interactions.csv"
CUSTOM_OPTIONS = {"raw_path": str(CUSTOM), "custom_user_col": "user_id",
                  "custom_item_col": "item_id", "custom_time_col": "ts"}


def tiny_datastore() -> Datastore:
    items = np.array([[0, 0], [1, 0], [0, 1], [.6, .8]], np.float32)
    return Datastore(np.array([[1, 0], [0, 1]], np.float32), items, np.array([1, 2, 3]),
                     np.array([0, 2, 3]), np.array([0, 1, 1, 2]), use_gpu=False)


def user_folder(path: Path) -> dict:
    """A folder of someone else's files (with a sub-folder); returns its content to compare."""
    (path / "notes").mkdir(parents=True)
    (path / "thesis.tex").write_text("months of work")
    (path / "notes" / "todo.txt").write_text("a sub-folder too")
    return snapshot(path)


def snapshot(path: Path) -> dict:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(path.rglob("*"))}


def no_temporaries(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------------- item 1
@pytest.mark.parametrize("writer", ["store", "datastore"])
def test_a_folder_that_is_not_ours_is_refused_and_left_intact(tmp_path, writer):
    target = tmp_path / "out"
    before = user_folder(target)
    with pytest.raises(ConfigError, match=r"not .* written by mic-tf.*thesis\.tex"):
        if writer == "store":
            store.save(toy_dataset(), target, {"dataset": "toy", "cache_key": "k"})
        else:
            tiny_datastore().save(target)
    assert snapshot(target) == before and no_temporaries(tmp_path)


@pytest.mark.parametrize("writer", ["store", "datastore"])
def test_a_regular_file_is_refused_and_left_intact(tmp_path, writer):
    target = tmp_path / "out"
    target.write_text("a user's file")
    with pytest.raises(ConfigError, match="is a file"):
        if writer == "store":
            store.save(toy_dataset(), target, {"dataset": "toy", "cache_key": "k"})
        else:
            tiny_datastore().save(target)
    assert target.read_text() == "a user's file" and no_temporaries(tmp_path)


@pytest.mark.parametrize("writer", ["store", "datastore"])
def test_one_of_ours_with_a_foreign_file_inside_is_refused(tmp_path, writer):
    target = tmp_path / "out"
    save = ((lambda: store.save(toy_dataset(), target, {"dataset": "toy", "cache_key": "k"}))
            if writer == "store" else (lambda: tiny_datastore().save(target)))
    save()
    (target / "my_analysis.ipynb").write_text("{}")
    before = snapshot(target)
    with pytest.raises(ConfigError, match="my_analysis.ipynb"):
        save()
    assert snapshot(target) == before


@pytest.mark.parametrize("writer", ["store", "datastore"])
def test_ours_and_empty_folders_are_replaced(tmp_path, writer):
    target = tmp_path / "out"
    target.mkdir()  # an empty folder holds nothing to lose
    if writer == "store":
        store.save(toy_dataset(), target, {"dataset": "toy", "cache_key": "a"})
        store.save(toy_dataset(), target, {"dataset": "toy", "cache_key": "b"})
        assert store.read_meta(target)["cache_key"] == "b"
    else:
        tiny_datastore().save(target)
        ds = tiny_datastore()
        ds.build_item_neighbours(1)
        ds.save(target)
        assert Datastore.load(target, use_gpu=False).item_neighbours is not None
    assert no_temporaries(tmp_path)


def test_prepare_refuses_a_foreign_data_folder_before_reading_anything(tmp_path):
    target = tmp_path / "data" / "custom"
    before = user_folder(target)
    options = {**CUSTOM_OPTIONS, "raw_path": str(tmp_path / "not_read_yet.csv")}
    (tmp_path / "not_read_yet.csv").write_text("this file is not a valid CSV at all\n\"")
    with pytest.raises(ConfigError, match=r"--data_dir"):
        prepare_dataset("custom", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                        source_options=options, verbose=False)
    assert snapshot(target) == before


def test_prepare_replaces_its_own_folder(tmp_path):
    first = prepare_dataset("custom", data_dir=tmp_path, source_options=CUSTOM_OPTIONS,
                            verbose=False)
    again = prepare_dataset("custom", data_dir=tmp_path, source_options=CUSTOM_OPTIONS,
                            force=True, verbose=False)
    assert again.meta["cache_key"] == first.meta["cache_key"] and no_temporaries(tmp_path)


def test_atomic_dir_keeps_its_crash_safety(tmp_path):
    target = tmp_path / "out"
    ours = ours_if(lambda folder: (folder / "mark").is_file(), ("mark",))
    with atomic_dir(target, is_ours=ours, what="test folder") as tmp:
        (tmp / "mark").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, is_ours=ours, what="test folder") as tmp:
            (tmp / "mark").write_text("2")
            raise RuntimeError("crash while writing")
    assert (target / "mark").read_text() == "1" and no_temporaries(tmp_path)


# ------------------------------------------------------------------------------------ item 10
def expected_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_files_get_the_umask_mode_of_an_ordinary_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_write_text(tmp_path / "b.txt", "x")
        with atomic_path(tmp_path / "c.bin") as tmp:
            tmp.write_bytes(b"x")
        (tmp_path / "plain.txt").write_text("x")  # what open() gives
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    finally:
        os.umask(old)
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_files_written_by_the_run_writers_share_one_mode(tmp_path):
    from mic_tf.evaluation.report import write_metrics, write_recommendations

    write_metrics(tmp_path / "metrics.json", {"test": {"recall@50": 0.5}})
    write_recommendations(tmp_path / "recommendations.jsonl", ["u"], np.array([[1]]), ["", "i"])
    atomic_write_json(tmp_path / "flags.json", {"seed": 0})
    modes = {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {expected_file_mode()}
    assert json.loads((tmp_path / "flags.json").read_text()) == {"seed": 0}
