"""Taobao UserBehavior.csv loader: pv filtering, categories, fast reader and its strict fallback."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from mic_tf.data.prepare import prepare_dataset
from mic_tf.data.protocol import ProtocolParams
from mic_tf.data.sources import get_source, taobao
from mic_tf.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "taobao" / "UserBehavior.csv"
A, B, C, D, E, F, G = 2268318, 2333346, 2576651, 3830808, 4365585, 4606018, 230380


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def fixture_lines() -> list[str]:
    return FIXTURE.read_text().splitlines()


def test_registered():
    assert get_source("taobao") is taobao
    assert taobao.OPTIONS == ("raw_path",)


def test_parse_keeps_pv_rows_only():
    raw = taobao.read(taobao.locate(Path("/nonexistent"), {"raw_path": str(FIXTURE)}), {})
    assert raw.num_rows == 36  # 43 lines, 7 of them buy/cart/fav
    assert raw.users.dtype == np.int64 and raw.items.dtype == np.int64
    assert raw.users[:5].tolist() == [1] * 5
    assert raw.items[:5].tolist() == [A, B, C, D, E]
    assert raw.timestamps[:2].tolist() == [1511544070, 1511561733]
    # Line 9 is the first line of user 2 (after user 1's 3 non-pv lines).
    assert (raw.users[5], raw.items[5], raw.timestamps[5]) == (2, A, 1511800000)
    assert (raw.users[-1], raw.items[-1], raw.timestamps[-1]) == (119, G, 1511900006)
    # Categories from pv rows; the last pv row wins (E), non-pv rows are ignored (A's buy row).
    assert raw.item_category.to_dict() == {A: 2520377, B: 2520771, C: 149192, D: 4181361,
                                           E: 9999999, F: 2735466, G: 411153}
    assert raw.user_features is None


def test_locate_folder_and_gz(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "UserBehavior.csv")
    assert taobao.locate(Path("/x"), {"raw_path": str(tmp_path)}) == [tmp_path / "UserBehavior.csv"]
    assert taobao.locate(tmp_path, {}) == [tmp_path / "UserBehavior.csv"]
    gz_dir = tmp_path / "gz"
    gz_dir.mkdir()
    with gzip.open(gz_dir / "UserBehavior.csv.gz", "wb") as f:
        f.write(FIXTURE.read_bytes())
    files = taobao.locate(Path("/x"), {"raw_path": str(gz_dir)})
    assert files == [gz_dir / "UserBehavior.csv.gz"]
    plain = taobao.read([FIXTURE], {})
    packed = taobao.read(files, {})
    assert np.array_equal(plain.items, packed.items)
    assert np.array_equal(plain.timestamps, packed.timestamps)


def test_prepare_end_to_end(tmp_path):
    ds = prepare_dataset("taobao", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                         source_options={"raw_path": str(FIXTURE)}, verbose=False)
    # By hand: pv counts A 6, B 6, C 5, D 6, E 5, F 5, G 3 (its buy/cart/fav rows do not count)
    # -> G dropped. User 100 has 2 pv rows -> dropped. Users 1, 2, 115, 117, 118 keep 5 and
    # user 119 keeps 6.
    assert ds.counts() == {"users": 6, "items": 6, "interactions": 31, "train_users": 4,
                           "valid_users": 1, "test_users": 1}
    # Ties at 6 (A, B, D) and at 5 (C, E, F) in order of first pv appearance.
    assert ds.item_raw_ids.tolist() == ["", str(A), str(B), str(D), str(C), str(E), str(F)]
    assert sorted(ds.user_raw_ids.tolist()) == ["1", "115", "117", "118", "119", "2"]
    seq = lambda u: ds.item_raw_ids[ds.sequence(ds.user_raw_ids.tolist().index(u))].tolist()
    assert seq("2") == [str(C), str(F), str(B), str(A), str(D)]       # sorted by time
    assert seq("115") == [str(E), str(A), str(B), str(D), str(F)]     # ties keep file order
    names = [ds.category_names[c] for c in ds.item_category[1:]]
    assert names == ["2520377", "2520771", "4181361", "149192", "9999999", "2735466"]


@pytest.mark.parametrize("line_no,content,message", [
    (3, "1,2576651,149192,pv", "4 fields instead of 5"),
    (5, "1,4365585,2520377,pv,1511596146,extra", "6 fields instead of 5"),
    (10, "2,B2333346,2520771,pv,1511700000", "item 'B2333346' is not an integer"),
    (12, "2,3830808,4181361,pv,", "timestamp '' is not an integer"),
    (20, "115,2333346,,pv,1511550000", "category '' is not an integer"),
    (7, "1,2333346,2520771,,1511616482", "empty behavior_type"),
])
def test_bad_line_is_located(tmp_path, line_no, content, message):
    lines = fixture_lines()
    lines[line_no - 1] = content
    path = write_lines(tmp_path / "UserBehavior.csv", lines)
    with pytest.raises(DataError, match=message) as err:
        taobao.read([path], {})
    assert f"{path}, line {line_no}:" in str(err.value)


def test_truncated_gz(tmp_path):
    data = gzip.compress(FIXTURE.read_bytes() * 50)
    path = tmp_path / "UserBehavior.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt gzip") as err:
        taobao.read([path], {})
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="tianchi.aliyun.com/dataset/649") as err:
        taobao.locate(tmp_path, {})
    assert "UserBehavior.csv" in str(err.value)
    with pytest.raises(DataError, match="no UserBehavior.csv in this folder"):
        taobao.locate(tmp_path, {"raw_path": str(tmp_path)})
    with pytest.raises(DataError, match="raw file not found"):
        taobao.locate(tmp_path, {"raw_path": str(tmp_path / "nope.csv")})


def test_no_pv_rows(tmp_path):
    path = write_lines(tmp_path / "UserBehavior.csv",
                       [l for l in fixture_lines() if ",pv," not in l])
    with pytest.raises(DataError, match="no 'pv' rows") as err:
        taobao.read([path], {})
    assert str(path) in str(err.value)


def test_filtering_empties(tmp_path):
    path = write_lines(tmp_path / "UserBehavior.csv", fixture_lines()[:20])
    with pytest.raises(DataError, match="no item has >= 5 interactions"):
        prepare_dataset("taobao", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                        source_options={"raw_path": str(path)}, verbose=False)
    with pytest.raises(DataError, match="no user has >= 5 interactions"):
        prepare_dataset("taobao", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                        params=ProtocolParams(min_item_count=1),
                        source_options={"raw_path": str(write_lines(
                            tmp_path / "few.csv", fixture_lines()[15:18]))}, verbose=False)


def test_chunked_reading_matches(tmp_path, monkeypatch):
    lines = fixture_lines() * 7
    path = write_lines(tmp_path / "UserBehavior.csv", lines)
    whole = taobao.read([path], {})
    monkeypatch.setattr(taobao, "CHUNK_ROWS", 10)  # many chunks, some without a pv row
    chunked = taobao.read([path], {})
    assert np.array_equal(whole.users, chunked.users)
    assert np.array_equal(whole.items, chunked.items)
    assert np.array_equal(whole.timestamps, chunked.timestamps)
    assert whole.item_category.to_dict() == chunked.item_category.to_dict()


def test_fast_user_time_sort_equals_two_pass_sort():
    """protocol._user_time_order (one composite-key sort, used at Taobao scale) must give the
    same order as the stable two-pass sort it replaced, for int, float (NaN, -0.0) and wide
    timestamps."""
    from mic_tf.data.protocol import _user_time_order
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(0, 300))
        users = rng.integers(0, int(rng.integers(1, 30)), n)
        kind = trial % 5
        if kind == 0:
            ts = rng.integers(-5, 5, n)
        elif kind == 1:
            ts = rng.integers(0, 3, n).astype(float)
            ts[rng.random(n) < 0.2] = np.nan
            ts[rng.random(n) < 0.2] = -0.0
        elif kind == 2:
            ts = rng.integers(-2 ** 62, 2 ** 62, n)  # too wide for a composite key
        elif kind == 3:
            ts = rng.random(n).round(2)
        else:
            ts = rng.integers(0, 2 ** 40, n).astype(np.uint64)
        ref = np.argsort(ts, kind="stable")
        ref = ref[np.argsort(users[ref], kind="stable")]
        assert np.array_equal(_user_time_order(users, ts), ref), trial
