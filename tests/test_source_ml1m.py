"""MovieLens-1M loader: parsing, zip handling, the downloader (localhost) and bad inputs."""

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from localhost_server import serve
from mic_tf.data.prepare import prepare_dataset
from mic_tf.data.protocol import ProtocolParams
from mic_tf.data.sources import get_source, ml1m
from mic_tf.errors import DataError, MicError

FIXTURE = Path(__file__).parent / "fixtures" / "ml1m"


def make_zip(path: Path, folder: Path = FIXTURE, top: str = "ml-1m") -> bytes:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in ("ratings.dat", "users.dat", "movies.dat"):
            zf.write(folder / name, f"{top}/{name}")
        zf.writestr(f"{top}/README", "MovieLens 1M fixture\n")
    return path.read_bytes()


def copy_fixture(dest: Path) -> Path:
    shutil.copytree(FIXTURE, dest)
    return dest


@pytest.fixture
def published(monkeypatch, tmp_path):
    """Serves a fixture zip and makes it the 'published' ml-1m.zip (checksums patched)."""
    data = make_zip(tmp_path / "served.zip")
    monkeypatch.setattr(ml1m, "ZIP_SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(ml1m, "ZIP_MD5", hashlib.md5(data).hexdigest())
    with serve() as server:
        server.files["/ml-1m.zip"] = data
        yield server, data


def test_registered():
    assert get_source("ml-1m") is ml1m
    assert ml1m.OPTIONS == ("raw_path", "raw_url")


def test_parse_fixture():
    files = ml1m.locate(Path("/nonexistent"), {"raw_path": str(FIXTURE)})
    raw = ml1m.read(files, {})
    assert raw.num_rows == 37
    # First lines of ratings.dat, read off the file.
    assert raw.users[:3].tolist() == [1, 1, 1]
    assert raw.items[:3].tolist() == [3, 1, 2]
    assert raw.timestamps[:3].tolist() == [978300760, 978300100, 978300500]
    assert raw.users[-1] == 7 and raw.items[-1] == 1 and raw.timestamps[-1] == 978240010
    # movies.dat: first genre, titles (latin-1, with ':' inside the title).
    assert raw.item_category[1] == "Animation"
    assert raw.item_category[4] == "Action"
    assert raw.item_category[5] == "Drama"
    assert raw.item_category[8] == "Drama"
    assert raw.item_title[4] == "Star Wars: Episode IV - A New Hope (1977)"
    assert raw.item_title[5] == "Misérables, Les (1995)"
    # users.dat: gender, age, occupation as raw codes.
    assert list(raw.user_features.columns) == ["gender", "age", "occupation"]
    assert raw.user_features.loc[4].tolist() == ["M", "45", "7"]
    assert raw.user_features.loc[1].tolist() == ["F", "1", "10"]
    assert len(raw.user_features) == 7


def test_prepare_end_to_end_from_zip(tmp_path):
    make_zip(tmp_path / "ml-1m.zip")
    ds = prepare_dataset("ml-1m", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                         source_options={"raw_path": str(tmp_path / "ml-1m.zip")}, verbose=False)
    # By hand: movie 7 has 3 ratings (< 5) and is dropped; movies 1-6 have 6,6,6,6,5,5.
    # User 3 keeps 3 ratings (< 5) and is dropped; users 1,2,4,5,6 keep 5 and user 7 keeps 6.
    assert ds.counts() == {"users": 6, "items": 6, "interactions": 31, "train_users": 4,
                           "valid_users": 1, "test_users": 1}
    assert sorted(ds.user_raw_ids.tolist()) == ["1", "2", "4", "5", "6", "7"]
    assert sorted(ds.item_raw_ids[1:].tolist()) == ["1", "2", "3", "4", "5", "6"]
    # Items 1-4 tie at 6 ratings: ids by first appearance in ratings.dat (3, 1, 2, 4), then 5, 6.
    assert ds.item_raw_ids.tolist() == ["", "3", "1", "2", "4", "5", "6"]
    # User 1 sorted by time: 1 (..100), 2 (..500), 4 (..500, tie keeps file order), 3, 5.
    u1 = ds.user_raw_ids.tolist().index("1")
    assert ds.item_raw_ids[ds.sequence(u1)].tolist() == ["1", "2", "4", "3", "5"]
    # User 7 rated in reverse time order; item 7 dropped.
    u7 = ds.user_raw_ids.tolist().index("7")
    assert ds.item_raw_ids[ds.sequence(u7)].tolist() == ["1", "2", "3", "4", "5", "6"]
    cats = {ds.item_raw_ids[i]: ds.category_names[ds.item_category[i]] for i in range(1, 7)}
    assert cats == {"1": "Animation", "2": "Adventure", "3": "Comedy", "4": "Action",
                    "5": "Drama", "6": "Action"}
    assert ds.user_feature_names == ["gender", "age", "occupation"]
    assert ds.num_categories == 5
    # The zip was extracted atomically, with a marker naming its checksum.
    assert (tmp_path / "raw" / "ml-1m" / ml1m.MARKER).read_text().strip() == hashlib.sha256(
        (tmp_path / "ml-1m.zip").read_bytes()).hexdigest()
    assert not [p for p in (tmp_path / "raw").iterdir() if p.name.startswith(".")]


def test_zip_is_extracted_once(tmp_path):
    zpath = tmp_path / "ml-1m.zip"
    make_zip(zpath)
    files = ml1m.locate(tmp_path / "raw", {"raw_path": str(zpath)})
    mtime = files[0].stat().st_mtime_ns
    again = ml1m.locate(tmp_path / "raw", {"raw_path": str(zpath)})
    assert again == files and files[0].stat().st_mtime_ns == mtime


def test_zip_with_other_top_folder(tmp_path):
    zpath = tmp_path / "other.zip"
    make_zip(zpath, top="movielens")
    files = ml1m.locate(tmp_path / "raw", {"raw_path": str(zpath)})
    assert [f.name for f in files] == ["ratings.dat", "users.dat", "movies.dat"]


def test_download_verify_extract(published, tmp_path):
    server, data = published
    raw_dir = tmp_path / "raw"
    files = ml1m.locate(raw_dir, {"raw_url": server.url("/ml-1m.zip")})
    assert (raw_dir / "ml-1m.zip").read_bytes() == data
    assert not (raw_dir / "ml-1m.zip.part").exists()
    assert [f.read_bytes() for f in files] == [
        (FIXTURE / n).read_bytes() for n in ("ratings.dat", "users.dat", "movies.dat")]
    # A second run neither downloads nor extracts again.
    n_requests = len(server.requests)
    assert ml1m.locate(raw_dir, {"raw_url": server.url("/ml-1m.zip")}) == files
    assert len(server.requests) == n_requests


def test_download_checksum_mismatch_deletes_partial(published, tmp_path, monkeypatch):
    server, _ = published
    monkeypatch.setattr(ml1m, "ZIP_SHA256", "0" * 64)
    raw_dir = tmp_path / "raw"
    with pytest.raises(DataError, match="sha256 checksum mismatch") as err:
        ml1m.locate(raw_dir, {"raw_url": server.url("/ml-1m.zip")})
    assert "ml-1m.zip.part" in str(err.value)
    assert not (raw_dir / "ml-1m.zip.part").exists()
    assert not (raw_dir / "ml-1m.zip").exists()
    assert not (raw_dir / "ml-1m").exists()


def test_download_resumes_with_range(published, tmp_path):
    server, data = published
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    (raw_dir / "ml-1m.zip.part").write_bytes(data[:100])
    ml1m.locate(raw_dir, {"raw_url": server.url("/ml-1m.zip")})
    assert server.requests[0] == ("/ml-1m.zip", "bytes=100-")
    assert (raw_dir / "ml-1m.zip").read_bytes() == data


def test_download_restarts_when_server_ignores_range(published, tmp_path):
    server, data = published
    server.allow_range = False
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    (raw_dir / "ml-1m.zip.part").write_bytes(b"garbage" * 10)
    ml1m.locate(raw_dir, {"raw_url": server.url("/ml-1m.zip")})
    assert (raw_dir / "ml-1m.zip").read_bytes() == data


def test_truncated_download_keeps_part_then_resumes(published, tmp_path):
    server, data = published
    server.truncate_at["/ml-1m.zip"] = 200
    raw_dir = tmp_path / "raw"
    with pytest.raises(DataError, match="run the same command again to resume"):
        ml1m.locate(raw_dir, {"raw_url": server.url("/ml-1m.zip")})
    assert not (raw_dir / "ml-1m.zip").exists()
    assert (raw_dir / "ml-1m.zip.part").read_bytes() == data[:200]
    ml1m.locate(raw_dir, {"raw_url": server.url("/ml-1m.zip")})
    assert server.requests[-1] == ("/ml-1m.zip", "bytes=200-")
    assert (raw_dir / "ml-1m.zip").read_bytes() == data


def test_download_http_error(published, tmp_path):
    server, _ = published
    with pytest.raises(DataError, match="HTTP 404"):
        ml1m.locate(tmp_path / "raw", {"raw_url": server.url("/missing.zip")})


def test_downloaded_zip_modified_later_is_rejected(published, tmp_path):
    server, _ = published
    raw_dir = tmp_path / "raw"
    ml1m.locate(raw_dir, {"raw_url": server.url("/ml-1m.zip")})
    with open(raw_dir / "ml-1m.zip", "ab") as f:
        f.write(b"x")
    with pytest.raises(DataError, match="checksum mismatch") as err:
        ml1m.locate(raw_dir, {"raw_url": server.url("/ml-1m.zip")})
    assert "ml-1m.zip" in str(err.value)


def test_truncated_zip(tmp_path):
    data = make_zip(tmp_path / "full.zip")
    bad = tmp_path / "ml-1m.zip"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="not a readable zip") as err:
        ml1m.locate(tmp_path / "raw", {"raw_path": str(bad)})
    assert str(bad) in str(err.value)
    assert not (tmp_path / "raw" / "ml-1m").exists()


def test_corrupt_member_crc(tmp_path):
    bad = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in ("ratings.dat", "users.dat", "movies.dat"):
            zf.write(FIXTURE / name, f"ml-1m/{name}")
    blob = bytearray(bad.read_bytes())
    pos = blob.index(b"1::3::4::978300760")
    blob[pos] = ord("9")  # change stored bytes: the CRC no longer matches
    bad.write_bytes(bytes(blob))
    with pytest.raises(DataError) as err:
        ml1m.locate(tmp_path / "raw", {"raw_path": str(bad)})
    assert str(bad) in str(err.value) and "ratings.dat" in str(err.value)
    assert not (tmp_path / "raw" / "ml-1m").exists()


def test_zip_without_the_files(tmp_path):
    bad = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("ml-1m/ratings.dat", "1::1::5::1\n")
    with pytest.raises(DataError, match=r"has no \['users.dat', 'movies.dat'\]"):
        ml1m.locate(tmp_path / "raw", {"raw_path": str(bad)})


def test_missing_files(tmp_path):
    folder = tmp_path / "incomplete"
    folder.mkdir()
    shutil.copy(FIXTURE / "ratings.dat", folder)
    with pytest.raises(DataError, match="prepare.py --dataset=ml-1m") as err:
        ml1m.locate(tmp_path / "raw", {"raw_path": str(folder)})
    assert str(folder) in str(err.value)
    with pytest.raises(DataError, match="raw_path does not exist"):
        ml1m.locate(tmp_path / "raw", {"raw_path": str(tmp_path / "nope.zip")})
    with pytest.raises(DataError, match="raw file not found") as err:
        ml1m.read([folder / "ratings.dat", folder / "users.dat", folder / "movies.dat"], {})
    assert "users.dat" in str(err.value)


@pytest.mark.parametrize("name,line,content,message", [
    ("ratings.dat", 4, "1::4::4\n", "3 fields separated by '::' instead of 4"),
    ("ratings.dat", 2, "1::x::5::978300100\n", "field 2 is 'x', not an integer"),
    ("ratings.dat", 6, "2:1::3::978290000\n", "instead of 4"),
    ("users.dat", 3, "3::M::25::15\n", "4 fields separated by '::' instead of 5"),
    ("users.dat", 1, "one::F::1::10::48067\n", "not an integer"),
    ("movies.dat", 2, "2::Jumanji (1995)\n", "fewer than 3 fields"),
    ("movies.dat", 7, "seven::Sabrina (1995)::Comedy\n", "MovieID 'seven' is not an integer"),
])
def test_malformed_lines(tmp_path, name, line, content, message):
    folder = copy_fixture(tmp_path / "ml-1m")
    lines = (folder / name).read_bytes().split(b"\n")
    lines[line - 1] = content.rstrip("\n").encode("latin-1")
    (folder / name).write_bytes(b"\n".join(lines))
    files = ml1m.locate(tmp_path / "raw", {"raw_path": str(folder)})
    with pytest.raises(DataError, match=message) as err:
        ml1m.read(files, {})
    assert f"{folder / name}, line {line}:" in str(err.value)


def test_filtering_empties(tmp_path):
    folder = copy_fixture(tmp_path / "ml-1m")
    # Keep only user 3's three ratings: no movie reaches 5 ratings.
    lines = (folder / "ratings.dat").read_text().splitlines()
    (folder / "ratings.dat").write_text("\n".join(l for l in lines if l.startswith("3::")) + "\n")
    with pytest.raises(DataError, match="no item has >= 5 interactions"):
        prepare_dataset("ml-1m", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                        source_options={"raw_path": str(folder)}, verbose=False)
    with pytest.raises(DataError, match="no user has >= 5 interactions"):
        prepare_dataset("ml-1m", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                        params=ProtocolParams(min_item_count=1),
                        source_options={"raw_path": str(folder)}, verbose=False)
    assert not (tmp_path / "data" / "ml-1m").exists()


def test_published_checksums_are_pinned():
    # sha256/size from TensorFlow Datasets' url_checksums/movielens.txt; md5 = ml-1m.zip.md5.
    assert ml1m.ZIP_SHA256 == "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"
    assert ml1m.ZIP_MD5 == "c4d9eecfca2ab87c1945afe126590906"
    assert ml1m.DEFAULT_URL == "https://files.grouplens.org/datasets/movielens/ml-1m.zip"


def test_foreign_folder_where_the_extraction_goes_is_left_intact(tmp_path):
    """Issue 15 item 1 for the zip route: `RAW_DIR/ml-1m` holding a user's own files is refused
    before anything is extracted, and its content is untouched."""
    zpath = tmp_path / "ml-1m.zip"
    make_zip(zpath)
    foreign = tmp_path / "raw" / "ml-1m"
    (foreign / "sub").mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    (foreign / "sub" / "draft.tex").write_text("also mine")
    with pytest.raises(MicError, match=r"not a ml-1m extraction folder.*notes\.txt"):
        ml1m.locate(tmp_path / "raw", {"raw_path": str(zpath)})
    assert sorted(p.relative_to(foreign).as_posix() for p in foreign.rglob("*")) == [
        "notes.txt", "sub", "sub/draft.tex"]
    assert (foreign / "notes.txt").read_text() == "mine"
    assert not [p for p in foreign.parent.iterdir() if p.name != "ml-1m"]  # no temporaries
