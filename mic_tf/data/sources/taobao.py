"""Taobao user behaviour (Tianchi dataset 649): `UserBehavior.csv`.

Raw format: no header, one behaviour per line, `user_id,item_id,category_id,behavior_type,timestamp`
with integer ids, `behavior_type` one of pv / buy / cart / fav and a Unix timestamp in seconds.
As ComiRec (`preprocess/data.py`, `category.py`), only `pv` (click) rows are kept, and the item's
category is the `category_id` of its `pv` rows (when an item appears with several categories, the
last `pv` row wins, as ComiRec's dict overwrite does). No user fields.

The file has ~100M lines, so it is read with pandas' C engine in chunks with int64 ids and a
categorical behaviour column; no Python runs per row. If the fast reader fails, a strict
line-by-line pass locates the first bad line and reports it. A `.gz` file is read as well.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from mic_tf.data.raw import RawDataset
from mic_tf.data.sources.common import find_file, iter_lines, require_file
from mic_tf.errors import DataError

OPTIONS = ("raw_path",)

FILE_NAMES = ("UserBehavior.csv", "UserBehavior.csv.gz")
COLUMNS = ["user", "item", "category", "behavior", "timestamp"]
DTYPES = {"user": np.int64, "item": np.int64, "category": np.int64, "behavior": "category",
          "timestamp": np.int64}
EXPECTED = "5 comma-separated fields user_id,item_id,category_id,behavior_type,timestamp " \
           "(integers except behavior_type, e.g. 1,2268318,2520377,pv,1511544070)"
HOW_TO_GET = ("download UserBehavior.csv.zip from https://tianchi.aliyun.com/dataset/649 (free "
              "account needed), unzip it, and pass --raw_path=/path/to/UserBehavior.csv (or its "
              "folder)")
CHUNK_ROWS = 4_000_000


def locate(raw_dir: Path, options: dict) -> list[Path]:
    raw_path = options.get("raw_path")
    if raw_path:
        path = Path(raw_path)
        if path.is_dir():
            found = find_file(path, FILE_NAMES)
            if found is None:
                raise DataError(f"no {FILE_NAMES[0]} in this folder; {HOW_TO_GET}", path=path)
            return [found]
        return [require_file(path, HOW_TO_GET)]
    found = find_file(Path(raw_dir), FILE_NAMES)
    if found is None:
        raise DataError(f"raw file not found; {HOW_TO_GET}, or copy it to {raw_dir}/",
                        path=Path(raw_dir) / FILE_NAMES[0])
    return [found]


def locate_bad_line(path: Path) -> None:
    """Slow strict pass: raises a DataError at the first line that is not a valid behaviour row."""
    for lineno, line in iter_lines(path, "utf-8", EXPECTED):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != 5:
            raise DataError(f"{len(fields)} fields instead of 5; expected {EXPECTED}", path=path,
                            line=lineno)
        for j in (0, 1, 2, 4):
            try:
                value = int(fields[j])
            except ValueError:
                raise DataError(f"{COLUMNS[j]} {fields[j]!r} is not an integer; expected "
                                f"{EXPECTED}", path=path, line=lineno) from None
            if not -2 ** 63 <= value < 2 ** 63:
                raise DataError(f"{COLUMNS[j]} {fields[j]!r} does not fit in int64", path=path,
                                line=lineno)
        if not fields[3].strip():
            raise DataError(f"empty behavior_type; expected {EXPECTED}", path=path, line=lineno)


def read_pv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(users, items, categories, timestamps)` int64 arrays of the `pv` rows, in file order."""
    parts: list[tuple[np.ndarray, ...]] = []
    try:
        reader = pd.read_csv(path, header=None, names=COLUMNS, dtype=DTYPES, engine="c",
                             na_filter=False, chunksize=CHUNK_ROWS, compression="infer",
                             encoding="utf-8")
        with reader:
            for chunk in reader:
                behavior = chunk["behavior"]
                if behavior.cat.categories.get_indexer([""])[0] >= 0:
                    raise ValueError("empty behavior_type")
                codes = behavior.cat.categories.get_indexer(["pv"])[0]
                if codes < 0:
                    continue
                keep = behavior.cat.codes.to_numpy() == codes
                parts.append(tuple(chunk[c].to_numpy()[keep] for c in
                                   ("user", "item", "category", "timestamp")))
                del chunk, behavior, keep
    except (ValueError, TypeError, OverflowError, EOFError, OSError, zlib.error,
            pd.errors.ParserError, UnicodeDecodeError) as e:
        locate_bad_line(path)  # raises at the first bad line (or a truncated .gz)
        raise DataError(f"cannot read or parse ({type(e).__name__}: {e}); expected {EXPECTED}",
                        path=path) from e
    if not parts:
        return tuple(np.zeros(0, dtype=np.int64) for _ in range(4))
    out = tuple(np.concatenate([p[j] for p in parts]) for j in range(4))
    parts.clear()
    return out


def item_categories(items: np.ndarray, categories: np.ndarray) -> pd.Series:
    """Item -> category, the last row of each item winning (ComiRec's dict overwrite)."""
    # Factorize the reversed rows: codes are handed out in order of first appearance, so the
    # first occurrence of code k is where the running maximum of the codes first reaches k.
    codes, uniques = pd.factorize(items[::-1])
    first = np.flatnonzero(np.diff(np.maximum.accumulate(codes), prepend=-1) > 0)
    return pd.Series(categories[::-1][first], index=uniques)


def read(files: list[Path], options: dict) -> RawDataset:
    (path,) = files
    path = require_file(path, HOW_TO_GET)
    users, items, cats, ts = read_pv(path)
    if len(users) == 0:
        raise DataError(f"no 'pv' rows (the only behaviour kept); expected {EXPECTED}", path=path)
    return RawDataset(name="taobao", users=users, items=items, timestamps=ts,
                      item_category=item_categories(items, cats), files=[path])
