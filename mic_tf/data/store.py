"""The versioned on-disk format of a processed dataset (spec 2.2 step 6).

`DIR/NAME/` holds (format version 2):
  meta.json         format version, source, protocol params, raw files with size and sha256,
                    counts, user field names, `cache_key` (a hash of all of the above inputs),
                    `files` (size and sha256 of every file below) and `data_fingerprint` (a hash
                    of `files`: the identity of the processed content, wherever it lives)
  seq_items.npy     int32 [nnz]   every user's time-sorted item ids, concatenated
  seq_offsets.npy   int64 [U+1]   CSR offsets; users 0..U-1 are train, then valid, then test
  item_category.npy int32 [N+1]   category id per item (0 = padding / no category)
  user_features.npy int32 [U, F]  user field value ids (0 = unknown)
  users.tsv         user, raw_id, split
  items.tsv         item, raw_id, category, title     (row 0 is the padding item)
  categories.tsv    category, name                    (row 0 is "no category")
  user_fields.tsv   field, value_id, value

Everything is written without timestamps, with sorted JSON keys and `np.save` (no zip), so that
preparing the same raw files with the same parameters twice gives byte-identical folders. The
folder is built under a temporary name and swapped in whole (`atomic_dir`). `load` checks every
file against its checksum and the counts against the files, so an edited, truncated or shuffled
folder is an error rather than data that trains normally.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mic_tf.data.dataset import ProcessedDataset
from mic_tf.errors import DataError
from mic_tf.utils.io import atomic_dir, check_replaceable, json_marker, ours_if, sha256_file

FORMAT_VERSION = 2  # 2: checksums of the processed files in meta.json
_ARRAYS = ("seq_items", "seq_offsets", "item_category", "user_features")
_TABLES = ("users", "items", "categories", "user_fields")
_FILES = tuple(sorted([f"{a}.npy" for a in _ARRAYS] + [f"{t}.tsv" for t in _TABLES]))
# A processed folder is recognised by its meta.json and holds nothing but these kinds of files;
# anything else in it (or any other folder) is not ours to replace.
_IS_OURS = ours_if(lambda folder: json_marker(folder, "meta.json", ("cache_key", "format_version")),
                   ("meta.json", "*.npy", "*.tsv"))
_WHAT = "processed dataset"
_HINT = "Choose another --data_dir, or move that folder away first."


def check_writable(out_dir: str | Path) -> None:
    """Raises ConfigError when `save` would have to replace a folder this project did not write
    (called by `prepare` before it reads any raw file)."""
    check_replaceable(out_dir, _IS_OURS, _WHAT, _HINT)


def cache_key(inputs: dict) -> str:
    """A stable hash of everything the processed output depends on."""
    blob = json.dumps({"format_version": FORMAT_VERSION, **inputs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _write_tsv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _read_tsv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the processed table ({e}); delete the folder and prepare "
                        f"the dataset again", path=path) from e


def _checksums(folder: Path) -> dict:
    return {name: {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size}
            for name in _FILES}


def fingerprint(files: dict) -> str:
    """The identity of a processed content: a hash of its files' checksums (not of its path)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _rebuild_hint(meta: dict) -> str:
    return (f"re-run `python datasets/prepare.py --dataset={meta.get('dataset', 'NAME')} --force` "
            f"(with the same data flags) to rebuild it")


def _verify_files(folder: Path, meta: dict) -> None:
    """Every processed file exists and has the size and sha256 recorded in meta.json."""
    files = meta.get("files")
    if not isinstance(files, dict) or sorted(files) != list(_FILES):
        raise DataError(f"meta.json does not list the checksums of {list(_FILES)}; "
                        f"{_rebuild_hint(meta)}", path=folder / "meta.json")
    if meta.get("data_fingerprint") != fingerprint(files):
        raise DataError(f"meta.json's data_fingerprint does not match its checksums (the file "
                        f"was edited); {_rebuild_hint(meta)}", path=folder / "meta.json")
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"processed file missing; {_rebuild_hint(meta)}", path=path)
        size = path.stat().st_size
        if size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
            raise DataError(f"processed file differs from the one prepare wrote ({size} bytes, "
                            f"expected {entry.get('size')}; sha256 mismatch): it was truncated or "
                            f"modified. {_rebuild_hint(meta)}", path=path)


def _verify_counts(folder: Path, meta: dict, arrays: dict, users: pd.DataFrame,
                   items: pd.DataFrame) -> None:
    """meta.json's counts (which decide the split) agree with the files themselves."""
    split = users["split"].to_numpy()
    actual = {"users": len(arrays["seq_offsets"]) - 1, "items": len(arrays["item_category"]) - 1,
              "interactions": len(arrays["seq_items"]),
              **{f"{s}_users": int((split == s).sum()) for s in ("train", "valid", "test")}}
    counts = meta.get("counts", {})
    wrong = {k: (counts.get(k), v) for k, v in actual.items() if counts.get(k) != v}
    if wrong:
        detail = ", ".join(f"{k}: {a} in meta.json, {b} in the files"
                           for k, (a, b) in wrong.items())
        raise DataError(f"the processed files disagree with meta.json ({detail}); "
                        f"{_rebuild_hint(meta)}", path=folder)
    ranks = np.select([split == "train", split == "valid", split == "test"], [0, 1, 2], -1)
    if (len(users) != actual["users"] or len(items) != actual["items"] + 1
            or (ranks < 0).any() or (np.diff(ranks) < 0).any()):  # users ordered train, valid, test
        raise DataError(f"users.tsv / items.tsv do not match the arrays (row counts or the "
                        f"train, valid, test order of users); {_rebuild_hint(meta)}", path=folder)


def save(ds: ProcessedDataset, out_dir: str | Path, meta: dict) -> None:
    """Writes `ds` to `out_dir` atomically; `meta` must already hold the cache inputs."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, is_ours=_IS_OURS, what=_WHAT, hint=_HINT) as tmp:
        for name in _ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(ds, name), allow_pickle=False)
        r = {s: ds.split_range(s) for s in ("train", "valid", "test")}
        splits = np.empty(ds.num_users, dtype=object)
        for s, rng in r.items():
            splits[rng.start:rng.stop] = s
        _write_tsv(tmp / "users.tsv", ["user", "raw_id", "split"],
                   zip(range(ds.num_users), ds.user_raw_ids, splits))
        _write_tsv(tmp / "items.tsv", ["item", "raw_id", "category", "title"],
                   zip(range(ds.num_items + 1), ds.item_raw_ids, ds.item_category, ds.item_titles))
        _write_tsv(tmp / "categories.tsv", ["category", "name"], enumerate(ds.category_names))
        _write_tsv(tmp / "user_fields.tsv", ["field", "value_id", "value"],
                   ((f, j + 1, v) for f, vocab in zip(ds.user_feature_names, ds.user_feature_vocab)
                    for j, v in enumerate(vocab)))
        files = _checksums(tmp)
        full_meta = {**meta, "format_version": FORMAT_VERSION, "counts": ds.counts(),
                     "num_categories": ds.num_categories,
                     "user_feature_names": ds.user_feature_names,
                     "files": files, "data_fingerprint": fingerprint(files)}
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2, sort_keys=True) + "\n")
    ds.meta = full_meta


def read_meta(folder: str | Path) -> dict | None:
    """The metadata of a processed folder, or None when there is no complete folder."""
    path = Path(folder) / "meta.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"processed metadata is not valid JSON ({e}); delete the folder and "
                        f"prepare again", path=path) from e


def load(folder: str | Path) -> ProcessedDataset:
    """Reads a processed folder written by `save`."""
    folder = Path(folder)
    meta = read_meta(folder)
    if meta is None:
        raise DataError(f"no processed dataset here (meta.json missing); run "
                        f"`python datasets/prepare.py --dataset=NAME` first", path=folder)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(f"processed format version {meta.get('format_version')} is not the "
                        f"supported version {FORMAT_VERSION}; {_rebuild_hint(meta)}", path=folder)
    _verify_files(folder, meta)
    arrays = {}
    for name in _ARRAYS:
        try:
            arrays[name] = np.load(folder / f"{name}.npy", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {name}.npy ({e}); prepare the dataset again",
                            path=folder) from e
    users = _read_tsv(folder / "users.tsv")
    items = _read_tsv(folder / "items.tsv")
    cats = _read_tsv(folder / "categories.tsv")
    fields = _read_tsv(folder / "user_fields.tsv")
    _verify_counts(folder, meta, arrays, users, items)
    names = list(meta.get("user_feature_names", []))
    vocab = [fields.loc[fields["field"] == f, "value"].tolist() for f in names]
    counts = meta["counts"]
    return ProcessedDataset(
        name=meta["dataset"], seq_items=arrays["seq_items"], seq_offsets=arrays["seq_offsets"],
        num_items=int(counts["items"]), num_train_users=int(counts["train_users"]),
        num_valid_users=int(counts["valid_users"]), item_category=arrays["item_category"],
        category_names=cats["name"].tolist(), user_raw_ids=users["raw_id"].to_numpy(dtype=object),
        item_raw_ids=items["raw_id"].to_numpy(dtype=object),
        item_titles=items["title"].to_numpy(dtype=object), user_features=arrays["user_features"],
        user_feature_names=names, user_feature_vocab=vocab, meta=meta)
