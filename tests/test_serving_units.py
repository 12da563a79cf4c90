"""Fast serving tests without a trained model: the bundle writer (atomic, refuses non-bundles),
the key layout and encodings, the settings checks and the bind guard."""

import dataclasses
import json

import numpy as np
import pytest

from mic_tf.inference import InferenceConfig
from mic_tf.serving.bundle import (Bundle, BundleParts, inference_config_from_dict, new_version,
                                   write_bundle)
from mic_tf.serving.errors import BundleError, ServingConfigError, UnknownIdsError
from mic_tf.serving.export import index_choice, last_items_csr, popular_items
from mic_tf.serving.keys import (VERSION_RE, Keys, decode_event, decode_ids, encode_event,
                                 encode_ids)
from mic_tf.serving.loader import _csr_blobs, _row_blobs
from mic_tf.serving.security import check_bind, is_loopback, key_matches
from tests.test_inference import hand_store


def _fake_tower(folder):
    folder.mkdir()
    (folder / "saved_model.pb").write_bytes(b"not a model")


def _parts(**changes):
    ds = hand_store()
    ds.build_item_neighbours(2)
    parts = BundleParts(
        datastore=ds, write_tower=_fake_tower, user_raw_ids=["u0", "u1", "u2", "q0"],
        item_raw_ids=np.array(["", "a", "b", "c", "d", "e"], dtype=object),
        other_history_items=np.array([1, 2], np.int32),
        other_history_offsets=np.array([0, 2], np.int64),
        similar_users=np.array([[2, 1], [2, 0], [0, 1]], np.int32),
        popular=np.array([[1, 9], [2, 5]]), inference=InferenceConfig(m=2, m2=3), maxlen=3,
        history_cap=3)
    return dataclasses.replace(parts, **changes)


def test_bundle_round_trip(tmp_path):
    out = write_bundle(tmp_path / "b", _parts(), version="v1")
    b = Bundle(out)
    assert b.version == "v1" and b.inference == InferenceConfig(m=2, m2=3)
    assert b.user_ids() == ["u0", "u1", "u2", "q0"]
    assert b.item_ids().tolist() == ["", "a", "b", "c", "d", "e"]
    items, offsets = b.histories()  # training users (hand_store) then the other user
    assert [items[offsets[u]:offsets[u + 1]].tolist() for u in range(4)] == [
        [5, 1, 2], [4], [3, 3, 4, 2], [1, 2]]
    assert b.load_datastore().item_neighbours.shape == (6, 2)
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind


def test_bundle_write_is_atomic_and_refuses_other_folders(tmp_path):
    def crash(folder):
        raise RuntimeError("killed while writing the tower")

    with pytest.raises(RuntimeError):
        write_bundle(tmp_path / "b", _parts(write_tower=crash))
    assert not (tmp_path / "b").exists() and not list(tmp_path.iterdir())
    write_bundle(tmp_path / "b", _parts(), version="v1")
    with pytest.raises(RuntimeError):  # a crashed re-export keeps the old bundle whole
        write_bundle(tmp_path / "b", _parts(write_tower=crash), version="v2")
    assert Bundle(tmp_path / "b").version == "v1"
    write_bundle(tmp_path / "b", _parts(), version="v2")  # a bundle may be replaced
    assert Bundle(tmp_path / "b").version == "v2"
    other = tmp_path / "results"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a serving bundle"):
        write_bundle(other, _parts())
    assert (other / "precious.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    write_bundle(tmp_path / "empty", _parts())  # an empty folder is fine


def test_bundle_checks_its_parts_and_format(tmp_path):
    with pytest.raises(BundleError, match="item_raw_ids"):
        write_bundle(tmp_path / "b", _parts(item_raw_ids=np.array(["", "a"], dtype=object)))
    with pytest.raises(BundleError, match="duplicates"):
        write_bundle(tmp_path / "b", _parts(user_raw_ids=["u0", "u1", "u1", "q0"]))
    with pytest.raises(BundleError, match="line breaks"):
        write_bundle(tmp_path / "b", _parts(user_raw_ids=["u0", "u\n1", "u2", "q0"]))
    with pytest.raises(BundleError, match="version"):
        write_bundle(tmp_path / "b", _parts(), version="v 1/../x")
    with pytest.raises(BundleError, match="not a serving bundle"):
        Bundle(tmp_path)
    write_bundle(tmp_path / "b", _parts(), version="v1")
    meta = json.loads((tmp_path / "b" / "bundle.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="unsupported bundle format"):
        Bundle(tmp_path / "b")


def test_inference_settings_are_stored_generically():
    cfg = InferenceConfig(top_n=7, basic_norm="minmax", mic_score="max", use_u2u=False)
    assert inference_config_from_dict(dataclasses.asdict(cfg)) == cfg
    older = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "mic_score"}
    assert inference_config_from_dict(older).mic_score == InferenceConfig().mic_score
    with pytest.raises(BundleError, match="future_knob"):
        inference_config_from_dict({**dataclasses.asdict(cfg), "future_knob": 1})


def test_keys_and_encodings():
    k = Keys("mic", "20261201T000000Z-abcdef")
    assert k.history("u 1") == "mic:20261201T000000Z-abcdef:h:u 1"
    assert k.events("u 1") == "mic:ev:u 1"  # shared by every version
    assert k.similar_items(7).endswith(":si:7") and k.version_pattern.endswith(":*")
    assert VERSION_RE.match(new_version())
    for bad in ("", "a*b", "a:b", "x" * 65):
        with pytest.raises(ValueError):
            Keys("mic", bad)
    assert decode_ids(encode_ids([3, 0, 1_000_000])).tolist() == [3, 0, 1_000_000]
    assert decode_ids(None).tolist() == [] and decode_ids(b"").tolist() == []
    assert decode_event(encode_event(1.5e9, "item\u00e9 7").encode()) == (1.5e9, "item\u00e9 7")


def test_loader_blobs_match_rows():
    items = np.array([5, 1, 2, 4, 3, 3], np.int64)
    offsets = np.array([0, 3, 4, 4, 6])
    blobs = _csr_blobs(items, offsets, 1, 4)
    assert [decode_ids(b).tolist() for b in blobs] == [[4], [], [3, 3]]
    table = np.array([[1, 2], [-1, 3], [4, -1]])
    assert [decode_ids(b).tolist() for b in _row_blobs(table, 0, 3, drop_negative=True)] == [
        [1, 2], [3], [4]]
    assert [decode_ids(b).tolist() for b in _row_blobs(table[[0]], 0, 1)] == [[1, 2]]


def test_export_helpers():
    items = np.arange(1, 11)
    offsets = np.array([0, 4, 10])
    got, offs = last_items_csr(items, offsets, np.array([1, 0]), 3)
    assert got.tolist() == [8, 9, 10, 2, 3, 4] and offs.tolist() == [0, 3, 6]
    assert popular_items(np.array([0, 3, 5, 5, 0])).tolist() == [[2, 5], [3, 5], [1, 3]]
    assert index_choice("auto", 1000) == ("flat", {})
    assert index_choice("auto", 1_000_000) == ("ivf", {"nprobe": 32})
    assert index_choice("ivf", 10, {"nprobe": 8}) == ("ivf", {"nprobe": 8})


def test_bind_guard_and_errors():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "secret")
    assert key_matches(None, None) and key_matches("k", "k") and not key_matches("j", "k")
    assert not key_matches(None, "k") and not key_matches("", "k")
    with pytest.raises(ServingConfigError, match="--api_key"):
        check_bind("0.0.0.0", None)
    err = UnknownIdsError("item", [str(i) for i in range(25)])
    assert "'0'" in str(err) and "5 more" in str(err) and len(err.ids) == 25
