"""Steam (UCSD) loader: Python-literal lines, regex fast path + literal fallback, downloads."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from localhost_server import serve
from mic_tf.data.prepare import prepare_dataset
from mic_tf.data.protocol import ProtocolParams
from mic_tf.data.sources import get_source, steam
from mic_tf.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "steam"
REVIEWS, GAMES = "steam_reviews.json", "steam_games.json"
DAY = 86400
D_2017_12_17 = 1513468800  # 2018-01-01 (1514764800) minus 15 days


def gz_folder(tmp_path: Path, reviews: str | None = None, games: str | None = None) -> Path:
    folder = tmp_path / "steam"
    folder.mkdir(exist_ok=True)
    for name, text in ((REVIEWS, reviews), (GAMES, games)):
        data = (FIXTURE / name).read_bytes() if text is None else text.encode("utf-8")
        (folder / (name + ".gz")).write_bytes(gzip.compress(data))
    return folder


def read_folder(folder: Path):
    return steam.read(steam.locate(Path("/x"), {"raw_path": str(folder)}), {})


def replace_line(line_no: int, content: str) -> str:
    lines = (FIXTURE / REVIEWS).read_text(encoding="utf-8").splitlines()
    lines[line_no - 1] = content
    return "\n".join(lines) + "\n"


def test_registered():
    assert get_source("steam") is steam
    assert steam.OPTIONS == ("raw_path", "raw_url")


def test_parse_fixture(tmp_path):
    raw = read_folder(gz_folder(tmp_path))
    assert raw.num_rows == 34
    assert raw.users[:5].tolist() == ["Chaos Syren"] * 5
    assert raw.items[:5].tolist() == ["725280", "328100", "35140", "631920", "304390"]
    assert raw.timestamps[0] == D_2017_12_17
    assert raw.timestamps[1] == D_2017_12_17 + 10 * DAY
    assert raw.timestamps[4] == 1515024000  # 2018-01-04
    assert raw.timestamps.dtype == np.int64
    # Line 11: keys in another order; line 12: apostrophe in the name (double-quoted literal);
    # line 17: an escaped character (literal fallback); line 22: fake keys inside the text.
    assert (raw.users[10], raw.items[10]) == ("Ariman1", "631920")
    assert raw.users[11] == "Dr. Hack's"
    assert raw.users[16] == "CaféLover"
    assert (raw.users[21], raw.items[21], raw.timestamps[21]) == ("Bob", "252490", 1388534400)
    assert raw.item_category.to_dict() == {
        "761140": "Action", "725280": "Action", "328100": "Casual", "35140": "Action",
        "631920": None, "304390": None, "252490": "Action", "440": "Action"}
    titles = raw.item_title.to_dict()
    assert titles["35140"] == "Batman: Arkham Asylum Game of the Year Edition"
    assert titles["304390"] == "FOR HONOR"      # no app_name: title
    assert titles["440"] == "Team Fortress 2"   # the duplicate id line is ignored
    assert "No Id Game" not in titles.values()
    assert raw.user_features is None


def test_plain_files_and_fast_path_agree(tmp_path):
    plain = read_folder(FIXTURE)  # uncompressed copies are accepted too
    packed = read_folder(gz_folder(tmp_path))
    assert plain.users.tolist() == packed.users.tolist()
    assert np.array_equal(plain.timestamps, packed.timestamps)


def test_prepare_end_to_end(tmp_path):
    # By hand (min_item_count=1): Tiny has 3 reviews -> dropped; 6 users keep 5+6+5+5+5+5 = 31.
    # Item counts: 252490 has 4, every other item 5 -> 252490 is numbered last.
    ds = prepare_dataset("steam", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                         params=ProtocolParams(min_item_count=1),
                         source_options={"raw_path": str(gz_folder(tmp_path))}, verbose=False)
    assert ds.counts() == {"users": 6, "items": 7, "interactions": 31, "train_users": 4,
                           "valid_users": 1, "test_users": 1}
    assert ds.item_raw_ids.tolist() == ["", "725280", "328100", "35140", "631920", "304390",
                                        "440", "252490"]
    seq = lambda u: ds.item_raw_ids[ds.sequence(ds.user_raw_ids.tolist().index(u))].tolist()
    assert seq("Chaos Syren") == ["35140", "725280", "631920", "328100", "304390"]
    assert seq("CaféLover") == ["304390", "631920", "35140", "328100", "725280"]
    assert seq("Bob") == ["252490", "440", "725280", "328100", "304390"]  # same-day: file order
    names = [ds.category_names[c] for c in ds.item_category]
    assert names == ["", "Action", "Casual", "Action", "", "", "Action", "Action"]


def test_prepare_default_thresholds(tmp_path):
    # 252490 (4 reviews) is dropped; Dr. Hack's, Bob and Alice fall to 4 -> 3 users remain.
    ds = prepare_dataset("steam", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                         source_options={"raw_path": str(gz_folder(tmp_path))}, verbose=False)
    assert ds.counts() == {"users": 3, "items": 6, "interactions": 15, "train_users": 2,
                           "valid_users": 0, "test_users": 1}
    assert sorted(ds.user_raw_ids.tolist()) == ["Ariman1", "CaféLover", "Chaos Syren"]


def test_download_from_localhost(tmp_path):
    blobs = {name: gzip.compress((FIXTURE / name).read_bytes()) for name in (REVIEWS, GAMES)}
    with serve() as server:
        for name, blob in blobs.items():
            server.files[f"/~wckang/{name}.gz"] = blob
        raw_dir = tmp_path / "raw"
        files = steam.locate(raw_dir, {"raw_url": server.url("/~wckang/")})
        assert files == [raw_dir / (REVIEWS + ".gz"), raw_dir / (GAMES + ".gz")]
        assert [f.read_bytes() for f in files] == [blobs[REVIEWS], blobs[GAMES]]
        assert not list(raw_dir.glob("*.part"))
        n = len(server.requests)
        assert steam.locate(raw_dir, {"raw_url": server.url("/~wckang")}) == files
        assert len(server.requests) == n  # nothing fetched twice
        assert steam.read(files, {}).num_rows == 34


def test_download_resumes(tmp_path):
    blob = gzip.compress((FIXTURE / REVIEWS).read_bytes())
    with serve() as server:
        server.files[f"/{REVIEWS}.gz"] = blob
        server.files[f"/{GAMES}.gz"] = gzip.compress((FIXTURE / GAMES).read_bytes())
        server.truncate_at[f"/{REVIEWS}.gz"] = 300
        raw_dir = tmp_path / "raw"
        with pytest.raises(DataError, match="resume"):
            steam.locate(raw_dir, {"raw_url": server.url("/")})
        assert not (raw_dir / (REVIEWS + ".gz")).exists()
        steam.locate(raw_dir, {"raw_url": server.url("/")})
        assert (f"/{REVIEWS}.gz", "bytes=300-") in server.requests
        assert (raw_dir / (REVIEWS + ".gz")).read_bytes() == blob


def test_download_of_corrupt_gzip_is_deleted(tmp_path):
    blob = gzip.compress((FIXTURE / REVIEWS).read_bytes())
    with serve() as server:
        server.files[f"/{REVIEWS}.gz"] = blob[:-20] + b"\0" * 20
        raw_dir = tmp_path / "raw"
        with pytest.raises(DataError, match="truncated or corrupt gzip") as err:
            steam.locate(raw_dir, {"raw_url": server.url("/")})
        assert REVIEWS in str(err.value)
        assert not (raw_dir / (REVIEWS + ".gz")).exists()


@pytest.mark.parametrize("line_no,content,message", [
    (3, "{u'username': u'Chaos Syren', u'product_id': u'35140', u'date': u'2017-10-16'",
     "not a Python-literal or JSON dict"),
    (6, "{u'username': u'Ariman1', u'product_id': u'328100', u'text': u'no date'}",
     "'date' is missing"),
    (7, "{u'username': u'Ariman1', u'product_id': u'35140', u'date': u'27/12/2017'}",
     "'date' is '27/12/2017', not YYYY-MM-DD"),
    (8, "{u'username': u'Ariman1', u'product_id': u'252490', u'date': u'2017-02-30'}",
     "not YYYY-MM-DD"),
    (9, "{u'username': u'', u'product_id': u'440', u'date': u'2017-12-01'}",
     "'username' is ''"),
    (10, "{u'username': u'Ariman1', u'product_id': 725280, u'date': u'2017-12-30'}",
     "'product_id' is 725280"),
])
def test_malformed_review_line(tmp_path, line_no, content, message):
    folder = gz_folder(tmp_path, reviews=replace_line(line_no, content))
    with pytest.raises(DataError, match=message) as err:
        read_folder(folder)
    assert f"{folder / (REVIEWS + '.gz')}, line {line_no}:" in str(err.value)


def test_malformed_game_line(tmp_path):
    lines = (FIXTURE / GAMES).read_text().splitlines()
    lines[2] = "{u'genres': u'Casual', u'id': u'328100'}"
    folder = gz_folder(tmp_path, games="\n".join(lines) + "\n")
    with pytest.raises(DataError, match="'genres' is 'Casual', not a list") as err:
        read_folder(folder)
    assert f"{folder / (GAMES + '.gz')}, line 3:" in str(err.value)
    lines[2] = "not a dict"
    folder = gz_folder(tmp_path, games="\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 3: not a Python-literal"):
        read_folder(folder)


def test_truncated_gz(tmp_path):
    folder = gz_folder(tmp_path)
    path = folder / (REVIEWS + ".gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt gzip") as err:
        read_folder(folder)
    assert str(path) in str(err.value)


def test_missing_files(tmp_path):
    folder = tmp_path / "steam"
    folder.mkdir()
    with pytest.raises(DataError, match="cseweb.ucsd.edu") as err:
        steam.locate(Path("/x"), {"raw_path": str(folder)})
    assert REVIEWS in str(err.value)
    with pytest.raises(DataError, match="must be a folder"):
        steam.locate(Path("/x"), {"raw_path": str(tmp_path / "nope")})


def test_filtering_empties(tmp_path):
    lines = (FIXTURE / REVIEWS).read_text().splitlines()
    folder = gz_folder(tmp_path, reviews="\n".join(lines[-3:]) + "\n")
    with pytest.raises(DataError, match="no item has >= 5 interactions"):
        prepare_dataset("steam", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                        source_options={"raw_path": str(folder)}, verbose=False)
    with pytest.raises(DataError, match="no user has >= 5 interactions"):
        prepare_dataset("steam", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                        params=ProtocolParams(min_item_count=1),
                        source_options={"raw_path": str(folder)}, verbose=False)
