"""Amazon Books (2014) loader: JSON reviews + Python-literal metadata, plain or gzip."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from mic_tf.data.prepare import prepare_dataset
from mic_tf.data.protocol import ProtocolParams
from mic_tf.data.sources import amazon_book, get_source
from mic_tf.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "book"
REVIEWS, META = "reviews_Books_5.json", "meta_Books.json"
I0, I1, I2, I3, I4, I5, I6 = ("000100039X", "0001055178", "0001473123", "0001473727",
                              "0002007770", "0002051850", "B00000JOWZ")
U0, U1 = "A10000012B7CGYKOMPQ4L", "A2S166WSCFIFP5"


def folder_with(tmp_path: Path, reviews: str | None = None, meta: str | None = None,
                gz: bool = False) -> Path:
    folder = tmp_path / "book"
    folder.mkdir(exist_ok=True)
    for name, text in ((REVIEWS, reviews), (META, meta)):
        data = (FIXTURE / name).read_bytes() if text is None else text.encode("utf-8")
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def read_folder(folder: Path):
    return amazon_book.read(amazon_book.locate(Path("/x"), {"raw_path": str(folder)}), {})


def replace_line(name: str, line_no: int, content: str) -> str:
    lines = (FIXTURE / name).read_text(encoding="utf-8").splitlines()
    lines[line_no - 1] = content
    return "\n".join(lines) + "\n"


def test_registered():
    assert get_source("book") is amazon_book
    assert amazon_book.OPTIONS == ("raw_path",)


def test_parse_fixture():
    raw = read_folder(FIXTURE)
    assert raw.num_rows == 35
    assert raw.users[:2].tolist() == [U0, U0]
    assert raw.items[:3].tolist() == [I0, I1, I2]
    assert raw.timestamps[:3].tolist() == [1355616000, 1355616000, 1290643200]
    assert raw.timestamps.dtype == np.int64
    assert (raw.users[5], raw.items[5], raw.timestamps[5]) == (U1, I0, 1330214400)
    assert (raw.users[-1], raw.items[-1], raw.timestamps[-1]) == ("AMLNOHR4AK93M", I2, 1300345600)
    cats = raw.item_category.to_dict()
    assert cats == {I0: "Poetry", I1: "Animals", I2: "Arts & Photography", I3: None, I4: None,
                    I5: "Thrillers", I6: "Arts"}  # 9999999999 has no review: skipped
    titles = raw.item_title.to_dict()
    assert titles[I0] == "The Prophet"          # not the fake key inside the description
    assert titles[I2] == "Café Society"         # first line of a duplicated asin; \xe9 escape
    assert titles[I5] == "Late Key"             # asin not the first key
    assert titles[I6] == "A JSON Line"
    assert raw.user_features is None
    assert [f.name for f in raw.files] == [REVIEWS, META]


def test_gz_files(tmp_path):
    folder = folder_with(tmp_path, gz=True)
    files = amazon_book.locate(Path("/x"), {"raw_path": str(folder)})
    assert [f.name for f in files] == [REVIEWS + ".gz", META + ".gz"]
    plain, packed = read_folder(FIXTURE), amazon_book.read(files, {})
    assert plain.users.tolist() == packed.users.tolist()
    assert plain.items.tolist() == packed.items.tolist()
    assert np.array_equal(plain.timestamps, packed.timestamps)
    assert plain.item_category.to_dict() == packed.item_category.to_dict()


def test_prepare_end_to_end(tmp_path):
    # By hand, min_item_count=1: reviewer A1BM81XB4QHOA3 has 4 reviews -> dropped; 6 users keep
    # 5+6+5+5+5+5 = 31 reviews; all 7 items are kept. Counts: I2 6; I0, I1, I3, I4, I5 5; I6 4.
    ds = prepare_dataset("book", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                         params=ProtocolParams(min_item_count=1),
                         source_options={"raw_path": str(FIXTURE)}, verbose=False)
    assert ds.counts() == {"users": 6, "items": 7, "interactions": 31, "train_users": 4,
                           "valid_users": 1, "test_users": 1}
    assert ds.item_raw_ids.tolist() == ["", I2, I0, I1, I3, I4, I5, I6]
    seq = lambda u: ds.item_raw_ids[ds.sequence(ds.user_raw_ids.tolist().index(u))].tolist()
    assert seq(U1) == [I4, I0, I2, I6, I3, I5]  # three reviews on one day keep file order
    assert seq("A3SF1O3H2N1KUT") == [I1, I2, I3, I4, I5]
    names = [ds.category_names[c] for c in ds.item_category]
    assert names == ["", "Arts & Photography", "Poetry", "Animals", "", "", "Thrillers", "Arts"]
    assert ds.user_feature_names == []


def test_prepare_default_thresholds(tmp_path):
    # min_item_count=5 drops I6 (4 reviews); then only 3 reviewers keep >= 5 reviews.
    ds = prepare_dataset("book", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                         source_options={"raw_path": str(FIXTURE)}, verbose=False)
    assert ds.counts() == {"users": 3, "items": 6, "interactions": 15, "train_users": 2,
                           "valid_users": 0, "test_users": 1}
    assert sorted(ds.user_raw_ids.tolist()) == sorted([U0, U1, "A3SF1O3H2N1KUT"])


def test_float_time_uses_strict_reader(tmp_path):
    line = (FIXTURE / REVIEWS).read_text().splitlines()[3].replace(
        '"unixReviewTime": 1384387200', '"unixReviewTime": 1384387200.0')
    raw = read_folder(folder_with(tmp_path, reviews=replace_line(REVIEWS, 4, line)))
    assert raw.timestamps.dtype == np.int64
    assert np.array_equal(raw.timestamps, read_folder(FIXTURE).timestamps)


@pytest.mark.parametrize("line_no,content,message", [
    (3, '{"reviewerID": "A1", "asin": "0001473123", "unixReviewTime": 1290643200',
     "not valid JSON"),
    (7, '{"reviewerID": "A2S166WSCFIFP5", "unixReviewTime": 1330214400}', "'asin' is missing"),
    (8, '{"reviewerID": "", "asin": "0001473727", "unixReviewTime": 1330300800}',
     "'reviewerID' is ''"),
    (9, '{"reviewerID": "A2S166WSCFIFP5", "asin": "0002007770", "unixReviewTime": "soon"}',
     "'unixReviewTime' is 'soon'"),
    (1, '["not", "an", "object"]', "not an object"),
])
def test_malformed_review_line(tmp_path, line_no, content, message):
    folder = folder_with(tmp_path, reviews=replace_line(REVIEWS, line_no, content))
    with pytest.raises(DataError, match=message) as err:
        read_folder(folder)
    assert f"{folder / REVIEWS}, line {line_no}:" in str(err.value)


@pytest.mark.parametrize("line_no,content,message", [
    (1, "{'asin': '000100039X', 'title': 'Broken', 'categories': [['Books'",
     "not a JSON or Python"),
    (4, "{'title': 'Who am I', 'categories': [['Books']]}", "'asin' is None"),
])
def test_malformed_meta_line(tmp_path, line_no, content, message):
    folder = folder_with(tmp_path, meta=replace_line(META, line_no, content))
    with pytest.raises(DataError, match=message) as err:
        read_folder(folder)
    assert f"{folder / META}, line {line_no}:" in str(err.value)


def test_truncated_gz(tmp_path):
    folder = folder_with(tmp_path, gz=True)
    for name in (REVIEWS + ".gz", META + ".gz"):
        path = folder / name
        good = path.read_bytes()
        path.write_bytes(good[: len(good) - 12])
        with pytest.raises(DataError, match="truncated or corrupt gzip") as err:
            read_folder(folder)
        assert str(path) in str(err.value)
        path.write_bytes(good)


def test_missing_files(tmp_path):
    folder = tmp_path / "book"
    folder.mkdir()
    with pytest.raises(DataError, match="jmcauley.ucsd.edu/data/amazon") as err:
        amazon_book.locate(Path("/x"), {"raw_path": str(folder)})
    assert REVIEWS in str(err.value)
    shutil.copy(FIXTURE / REVIEWS, folder)
    with pytest.raises(DataError, match="raw file not found") as err:
        amazon_book.locate(Path("/x"), {"raw_path": str(folder)})
    assert META in str(err.value)
    with pytest.raises(DataError, match="must be the folder"):
        amazon_book.locate(Path("/x"), {"raw_path": str(folder / REVIEWS)})


def test_meta_for_other_items(tmp_path):
    folder = folder_with(tmp_path, meta="{'asin': 'ZZZ', 'categories': [['Books', 'X']]}\n")
    with pytest.raises(DataError, match="is this the matching metadata file"):
        read_folder(folder)


def test_filtering_empties(tmp_path):
    lines = (FIXTURE / REVIEWS).read_text().splitlines()
    folder = folder_with(tmp_path, reviews="\n".join(lines[:4]) + "\n")
    with pytest.raises(DataError, match="no item has >= 5 interactions"):
        prepare_dataset("book", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                        source_options={"raw_path": str(folder)}, verbose=False)
    with pytest.raises(DataError, match="no user has >= 5 interactions"):
        prepare_dataset("book", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                        params=ProtocolParams(min_item_count=1),
                        source_options={"raw_path": str(folder)}, verbose=False)
