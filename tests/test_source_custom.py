"""Custom CSV/Parquet loader: column options, exact string ids, ISO/numeric times, side tables."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mic_tf.data.prepare import prepare_dataset
from mic_tf.data.protocol import ProtocolParams
from mic_tf.data.sources import custom, get_source
from mic_tf.errors import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "custom"
INTER = FIXTURE / "interactions.csv"
OPTIONS = {"raw_path": str(INTER), "custom_user_col": "user_id", "custom_item_col": "item_id",
           "custom_time_col": "ts", "custom_category_col": "genre"}
T2020 = 1577836800  # 2020-01-01T00:00:00Z


def load(options: dict):
    return custom.read(custom.locate(Path("/x"), options), options)


def with_lines(tmp_path: Path, replace: dict[int, str], name: str = "interactions.csv",
               source: Path = INTER) -> Path:
    lines = source.read_text().splitlines()
    for line_no, content in replace.items():
        lines[line_no - 1] = content
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_registered():
    assert get_source("custom") is custom
    assert set(custom.OPTIONS) == {"raw_path", "custom_user_col", "custom_item_col",
                                   "custom_time_col", "custom_category_col",
                                   "custom_user_features", "custom_item_features"}


def test_parse_csv(capsys):
    raw = load(OPTIONS)
    assert raw.num_rows == 34
    assert raw.users[:6].tolist() == ["007"] * 5 + ["alice"]       # leading zeros kept
    assert raw.items[:5].tolist() == ["0001", "0002", "0003", "0004", "0005"]
    assert raw.items[10] == "42"
    # ISO datetime, datetime, date, space-separated datetime, offset (+02:00 -> 22:00Z).
    assert raw.timestamps[:5].tolist() == [T2020 + 10 * 3600, T2020 + 9 * 3600, T2020 + 86400,
                                           T2020 + 9 * 3600, T2020 + 86400 + 22 * 3600]
    assert raw.timestamps.dtype == np.int64
    cats = raw.item_category.to_dict()
    assert cats == {"0001": "Drama", "0002": "Comedy", "0003": "Drama", "0004": "Thriller",
                    "0005": "Drama", "42": "Sci-Fi, Space"}  # 0004: last row wins
    assert "1 items have several categories" in capsys.readouterr().err
    assert raw.user_features is None and raw.item_title is None


def test_side_tables():
    raw = load({**OPTIONS, "custom_user_features": str(FIXTURE / "user_features.csv"),
                "custom_item_features": str(FIXTURE / "item_features.csv")})
    assert [f.name for f in raw.files] == ["interactions.csv", "user_features.csv",
                                           "item_features.csv"]
    assert list(raw.user_features.columns) == ["gender", "age_band"]
    assert raw.user_features.loc["007"].tolist() == ["M", "25-34"]
    assert pd.isna(raw.user_features.loc["bob", "age_band"])
    cats = raw.item_category.to_dict()
    assert cats["0001"] == "Classics"      # the item table wins
    assert cats["0002"] == "Comedy"        # empty in the item table: the interactions' category
    assert cats["42"] == "Sci-Fi"
    assert raw.item_title.to_dict() == {"0001": "The First Item", "0002": "Second",
                                        "42": "The Answer, Item"}


def test_prepare_end_to_end(tmp_path):
    options = {**OPTIONS, "custom_user_features": str(FIXTURE / "user_features.csv"),
               "custom_item_features": str(FIXTURE / "item_features.csv")}
    ds = prepare_dataset("custom", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                         source_options=options, verbose=False)
    # By hand: counts 0001-0004 = 6, 0005 and 42 = 5 -> all kept; frank has 3 rows -> dropped.
    assert ds.counts() == {"users": 6, "items": 6, "interactions": 31, "train_users": 4,
                           "valid_users": 1, "test_users": 1}
    assert ds.item_raw_ids.tolist() == ["", "0001", "0002", "0003", "0004", "0005", "42"]
    seq = lambda u: ds.item_raw_ids[ds.sequence(ds.user_raw_ids.tolist().index(u))].tolist()
    assert seq("007") == ["0002", "0004", "0001", "0003", "0005"]  # 09:00 tie keeps file order
    assert seq("bob") == ["0004", "0003", "0002", "0001", "42"]
    assert seq("carol") == ["0005", "42", "0001", "0002", "0003"]  # same day: file order
    names = [ds.category_names[c] for c in ds.item_category]
    assert names == ["", "Classics", "Comedy", "Drama", "Thriller", "Drama", "Sci-Fi"]
    assert ds.item_titles.tolist() == ["", "The First Item", "Second", "", "", "",
                                       "The Answer, Item"]
    assert ds.user_feature_names == ["gender", "age_band"]
    bob = ds.user_raw_ids.tolist().index("bob")
    assert ds.user_features[bob, 1] == 0  # unknown age band
    assert sorted(ds.user_feature_vocab[1]) == ["18-24", "25-34", "35-44"]


def test_default_column_names_and_numeric_times(tmp_path):
    path = tmp_path / "inter.csv"
    rows = ["user,item,timestamp"] + [f"u{u},i{i},{1000 - 10 * u - i}" for u in range(6)
                                      for i in range(5)]
    path.write_text("\n".join(rows) + "\n")
    raw = load({"raw_path": str(path)})
    assert raw.timestamps.dtype == np.int64 and raw.timestamps[0] == 1000
    ds = prepare_dataset("custom", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                         source_options={"raw_path": str(path)}, verbose=False)
    assert ds.counts()["interactions"] == 30
    assert ds.item_raw_ids[ds.sequence(0)].tolist() == ["i4", "i3", "i2", "i1", "i0"]


def test_float_times(tmp_path):
    path = tmp_path / "inter.csv"
    path.write_text("user,item,timestamp\na,x,1.5\na,y,0.25\n")
    assert load({"raw_path": str(path)}).timestamps.tolist() == [1.5, 0.25]


def test_parquet(tmp_path):
    df = pd.read_csv(INTER, dtype=str, keep_default_na=False)
    df = df[df["user_id"] != "007"].copy()
    df["user_id"] = df["user_id"].map({"alice": 1, "bob": 2, "carol": 3, "dave": 4, "eve": 5,
                                       "frank": 600}).astype("int64")
    df["ts"] = pd.to_datetime(df["ts"], utc=True, format="ISO8601")
    path = tmp_path / "inter.parquet"
    df.to_parquet(path, index=False)
    raw = load({**OPTIONS, "raw_path": str(path)})
    assert raw.users[:2].tolist() == ["1", "1"] and raw.users[-1] == "600"
    assert raw.items[:2].tolist() == ["0001", "0002"]
    assert raw.timestamps[0] == 1580515200  # 2020-02-01
    feats = pd.DataFrame({"uid": [1, 2, 3], "tier": ["gold", None, "basic"]})
    feats.to_parquet(tmp_path / "users.parquet", index=False)
    raw = load({**OPTIONS, "raw_path": str(path),
                "custom_user_features": str(tmp_path / "users.parquet")})
    assert raw.user_features.loc["1", "tier"] == "gold"
    assert pd.isna(raw.user_features.loc["2", "tier"])
    # A string time column in Parquet: bad values are reported by row.
    df["ts"] = df["ts"].astype(str)
    df.iloc[3, df.columns.get_loc("ts")] = "yesterday"
    df.to_parquet(path, index=False)
    with pytest.raises(DataError, match=r"inter.parquet \(row 4\): column 'ts' value 'yesterday'"):
        load({**OPTIONS, "raw_path": str(path)})
    # Missing id in Parquet
    df = pd.DataFrame({"user": ["a", None], "item": ["x", "y"], "timestamp": [1, 2]})
    df.to_parquet(path, index=False)
    with pytest.raises(DataError, match=r"inter.parquet \(row 2\): empty or missing value in "
                                        r"column 'user'"):
        load({"raw_path": str(path)})


def test_missing_column(tmp_path):
    with pytest.raises(DataError, match=r"missing column\(s\) \['user', 'item', 'timestamp'\]"
                                        r".*found \['user_id'"):
        load({"raw_path": str(INTER)})
    with pytest.raises(DataError, match=r"missing column\(s\) \['kind'\]"):
        load({**OPTIONS, "custom_category_col": "kind"})
    path = tmp_path / "items.csv"
    path.write_text("item_id,price\n0001,3\n")
    with pytest.raises(DataError, match="no 'category' or 'title' column"):
        load({**OPTIONS, "custom_item_features": str(path)})
    path.write_text("user_id\n007\n")
    with pytest.raises(DataError, match="only an id column"):
        load({**OPTIONS, "custom_user_features": str(path)})


@pytest.mark.parametrize("line_no,content,message", [
    (3, "007,,2020-01-01T09:00:00,Comedy,4", "empty or missing value in column 'item_id'"),
    (8, ",0003,2020-02-03,Drama,5", "empty or missing value in column 'user_id'"),
    (10, "alice,0004,,Horror,5", "empty or missing value in column 'ts'"),
    (12, "alice,42,06/02/2020,Sci-Fi,5", "value '06/02/2020' is neither a number nor an ISO"),
    (5, "007,0003,12345,Drama,3", "mixes numbers and other values"),
    (20, "", "empty or missing value in column 'user_id'"),
    (4, "007,0003,2020-01-02,Drama,3,extra,fields", "expected 5 comma-separated fields"),
])
def test_bad_lines(tmp_path, line_no, content, message):
    path = with_lines(tmp_path, {line_no: content})
    with pytest.raises(DataError, match=message) as err:
        load({**OPTIONS, "raw_path": str(path)})
    assert f"{path}, line {line_no}:" in str(err.value)


def test_duplicate_feature_ids(tmp_path):
    path = with_lines(tmp_path, {4: "007,F,18-24"}, name="users.csv",
                      source=FIXTURE / "user_features.csv")
    with pytest.raises(DataError, match="id '007' appears twice") as err:
        load({**OPTIONS, "custom_user_features": str(path)})
    assert f"{path}, line 4:" in str(err.value)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match="needs an interactions file"):
        custom.locate(tmp_path, {})
    with pytest.raises(DataError, match="raw file not found"):
        custom.locate(tmp_path, {"raw_path": str(tmp_path / "nope.csv")})
    with pytest.raises(DataError, match="check --custom_item_features") as err:
        custom.locate(tmp_path, {**OPTIONS, "custom_item_features": str(tmp_path / "i.csv")})
    assert "i.csv" in str(err.value)


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "inter.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match="cannot read the interactions file as Parquet") as err:
        load({"raw_path": str(path)})
    assert str(path) in str(err.value)


def test_filtering_empties(tmp_path):
    path = tmp_path / "inter.csv"
    path.write_text("user,item,timestamp\na,x,1\nb,y,2\n")
    with pytest.raises(DataError, match="no item has >= 5 interactions"):
        prepare_dataset("custom", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                        source_options={"raw_path": str(path)}, verbose=False)
    with pytest.raises(DataError, match="no user has >= 5 interactions"):
        prepare_dataset("custom", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                        params=ProtocolParams(min_item_count=1),
                        source_options={"raw_path": str(path)}, verbose=False)
    path.write_text("user,item,timestamp\n")
    with pytest.raises(DataError, match="header but no rows"):
        load({"raw_path": str(path)})


# --------------------------------------------- non-finite and boolean timestamps (issue 15)
@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "nan"])
def test_a_non_finite_number_as_time_names_the_line(tmp_path, value):
    path = tmp_path / "inter.csv"
    rows = ["user,item,timestamp"] + [f"u{u},i{i},{10 * u + i}" for u in range(6)
                                      for i in range(5)]
    rows[4] = f"u0,i3,{value}"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"line 5: .*timestamp.*finite"):
        load({"raw_path": str(path)})


@pytest.mark.parametrize("column", [[0.0, 1.0, np.inf, 3.0], [True, True, True, True]],
                         ids=["inf", "boolean"])
def test_parquet_times_must_be_finite_numbers_not_booleans(tmp_path, column):
    path = tmp_path / "inter.parquet"
    pd.DataFrame({"user": ["a", "a", "b", "b"], "item": ["x", "y", "x", "y"],
                  "timestamp": column}).to_parquet(path)
    with pytest.raises(DataError, match=r"row \d.*timestamp|timestamp.*row \d"):
        load({"raw_path": str(path)})


# ------------------------------------------- prepare.py errors instead of tracebacks (item 7)
def test_trailing_blank_lines_are_accepted(tmp_path):
    path = tmp_path / "inter.csv"
    path.write_text(INTER.read_text().rstrip("\n") + "\n\n\n")
    raw = load({**OPTIONS, "raw_path": str(path)})
    reference = load(OPTIONS)
    assert raw.num_rows == reference.num_rows == 34
    np.testing.assert_array_equal(raw.timestamps, reference.timestamps)


def test_a_blank_line_in_the_middle_still_names_its_line(tmp_path):
    path = with_lines(tmp_path, {5: ""})
    with pytest.raises(DataError, match="line 5: empty or missing value"):
        load({**OPTIONS, "raw_path": str(path)})


def truncated_gzip(tmp_path):
    import gzip

    data = gzip.compress(INTER.read_bytes() * 50)
    path = tmp_path / "inter.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


def list_column_parquet(tmp_path):
    df = pd.read_csv(INTER, dtype=str)
    df["user_id"] = [[u] for u in df["user_id"]]
    path = tmp_path / "inter.parquet"
    df.to_parquet(path)
    return path


def a_folder(tmp_path):
    path = tmp_path / "interactions"
    path.mkdir()
    (path / "interactions.csv").write_text(INTER.read_text())
    return path


BROKEN = {"truncated-gzip": (truncated_gzip, r"inter\.csv\.gz: .*truncated or corrupt"),
          "list-column": (list_column_parquet, r"column 'user_id' of the interactions file holds lists"),
          "a-folder": (a_folder, r"interactions: .*is a folder, not a file")}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_raw_files_are_clear_errors(tmp_path, case):
    make, message = BROKEN[case]
    with pytest.raises(DataError, match=message):
        load({**OPTIONS, "raw_path": str(make(tmp_path))})


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_prepare_script_reports_broken_raw_files_without_a_traceback(tmp_path, case):
    import re
    import subprocess
    import sys

    from tests.conftest import REPO

    make, message = BROKEN[case]
    result = subprocess.run([sys.executable, str(REPO / "datasets" / "prepare.py"),
                             "--dataset=custom", f"--raw_path={make(tmp_path)}",
                             "--custom_user_col=user_id", "--custom_item_col=item_id",
                             "--custom_time_col=ts", f"--data_dir={tmp_path / 'data'}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert re.search(message, result.stderr), result.stderr[-2000:]
    assert not (tmp_path / "data").exists()
