"""Amazon Books (McAuley et al., 2014 release), as ComiRec reads it.

Raw files (in the folder given by option `raw_path`, default `RAW_DIR`; each may be `.gz`):
  reviews_Books_5.json  the 5-core reviews, one JSON object per line; used fields `reviewerID`
                        (user), `asin` (item) and `unixReviewTime` (seconds, day-granular).
  meta_Books.json       product metadata, one Python-literal dict per line (`{'asin': ...}`, as
                        written by Python's `repr`; ComiRec parses it with `eval`). A line is tried
                        with `json.loads` first (the JSON re-release) and `ast.literal_eval` after.
                        Category = `categories[0][-1]` (last element of the first category path),
                        title = `title`. No user fields.

Speed (8.9M review lines, 2.4M meta lines):
  * reviews are parsed by pyarrow's multithreaded C++ JSON reader with an explicit 3-field schema
    (other fields are skipped); the strings come back dictionary-encoded, so the object arrays
    share one str per distinct id. If pyarrow rejects the file, a strict line-by-line
    `json.loads` pass reports the first bad line (or, if every line is in fact valid, e.g. a
    float `unixReviewTime`, its result is used).
  * meta lines are parsed only for items that occur in the reviews: the leading `{'asin': '...'`
    of a line is matched by an anchored regex and lines of other items are skipped unparsed
    (their content is not validated). Lines whose asin is not the first key are parsed fully.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from mic_tf.data.raw import RawDataset
from mic_tf.data.sources.common import find_file, is_gzip, iter_lines, parse_literal_line
from mic_tf.errors import DataError

OPTIONS = ("raw_path",)

REVIEWS = ("reviews_Books_5.json", "reviews_Books_5.json.gz")
META = ("meta_Books.json", "meta_Books.json.gz")
HOW_TO_GET = ("download reviews_Books_5.json.gz (Books 5-core) and meta_Books.json.gz (Books "
              "metadata) of the 2014 Amazon product data from "
              "https://jmcauley.ucsd.edu/data/amazon/ (request form at "
              "http://jmcauley.ucsd.edu/data/amazon/links.html) into one folder and pass "
              "--raw_path=FOLDER")
REVIEW_EXPECTED = ('a JSON object per line with string "reviewerID" and "asin" and a numeric '
                   '"unixReviewTime"')
META_EXPECTED = ("a Python-literal (or JSON) dict per line with 'asin' and optionally "
                 "'categories' (a list of category paths) and 'title'")
_SCHEMA = pa.schema([("reviewerID", pa.string()), ("asin", pa.string()),
                     ("unixReviewTime", pa.int64())])
# `{'asin': '0001048791', ...` or `{"asin": "0001048791", ...`: the asin as the first key.
_LEADING_ASIN = re.compile(r"""\{\s*(?:'asin'\s*:\s*'([^'\\]*)'|"asin"\s*:\s*"([^"\\]*)")""")


def locate(raw_dir: Path, options: dict) -> list[Path]:
    folder = Path(options.get("raw_path") or raw_dir)
    if folder.is_file():
        raise DataError(f"raw_path must be the folder holding {REVIEWS[0]} and {META[0]}, not a "
                        f"file", path=folder)
    found = []
    for names in (REVIEWS, META):
        path = find_file(folder, names)
        if path is None:
            raise DataError(f"raw file not found (nor {names[1]}); {HOW_TO_GET}",
                            path=folder / names[0])
        found.append(path)
    return found


def _strict_reviews(path: Path):
    """Slow strict pass: every line must be a JSON object with the three fields."""
    users, items, times = [], [], []
    for lineno, line in iter_lines(path, "utf-8", REVIEW_EXPECTED):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise DataError(f"not valid JSON ({e}); expected {REVIEW_EXPECTED}", path=path,
                            line=lineno) from None
        if not isinstance(obj, dict):
            raise DataError(f"a JSON {type(obj).__name__}, not an object; expected "
                            f"{REVIEW_EXPECTED}", path=path, line=lineno)
        user, item, t = obj.get("reviewerID"), obj.get("asin"), obj.get("unixReviewTime")
        for name, value, ok in (("reviewerID", user, isinstance(user, str) and user),
                                ("asin", item, isinstance(item, str) and item),
                                ("unixReviewTime", t, isinstance(t, (int, float))
                                 and not isinstance(t, bool))):
            if not ok:
                raise DataError(f"field {name!r} is {'missing' if value is None else repr(value)}; "
                                f"expected {REVIEW_EXPECTED}", path=path, line=lineno)
        users.append(user)
        items.append(item)
        times.append(t)
    ts = np.asarray(times)
    if ts.dtype.kind == "f" and np.all(ts == np.round(ts)):
        ts = ts.astype(np.int64)
    return (np.asarray(users, dtype=object), np.asarray(items, dtype=object),
            ts if ts.dtype.kind == "f" else ts.astype(np.int64))


def _dict_to_objects(column: pa.ChunkedArray) -> np.ndarray:
    """A string column as an object array whose equal values share one str object."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    values = encoded.dictionary.to_numpy(zero_copy_only=False)
    return values[encoded.indices.to_numpy(zero_copy_only=False)]


def read_reviews(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(users, items, timestamps)` of the reviews file, in file order."""
    try:
        stream = pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None)
        with stream:
            table = pajson.read_json(stream, read_options=pajson.ReadOptions(block_size=1 << 24),
                                     parse_options=pajson.ParseOptions(
                                         explicit_schema=_SCHEMA,
                                         unexpected_field_behavior="ignore"))
    except (pa.ArrowException, OSError, EOFError):
        return _strict_reviews(path)  # raises at the first bad line, or parses a valid variant
    if table.num_rows == 0:
        raise DataError(f"no reviews; expected {REVIEW_EXPECTED}", path=path)
    bad = None
    for name in ("reviewerID", "asin", "unixReviewTime"):
        column = table.column(name)
        if column.null_count or (column.type == pa.string() and pc.any(
                pc.equal(pc.utf8_length(column), 0)).as_py()):
            bad = name
            break
    if bad is not None:
        return _strict_reviews(path)  # reports the line with the missing or empty field
    users = _dict_to_objects(table.column("reviewerID"))
    items = _dict_to_objects(table.column("asin"))
    times = table.column("unixReviewTime").to_numpy()
    return users, items, times.astype(np.int64)


def first_category(categories) -> str | None:
    """`categories[0][-1]` (ComiRec), or None when there is no category path."""
    if isinstance(categories, (list, tuple)) and categories:
        path = categories[0]
        if isinstance(path, (list, tuple)) and path and isinstance(path[-1], str) and path[-1]:
            return path[-1]
    return None


def read_meta(path: Path, needed: set) -> tuple[dict, dict]:
    """`(item -> category, item -> title)` for the items in `needed`, first line of an item wins."""
    category, title = {}, {}
    match = _LEADING_ASIN.match
    for lineno, line in iter_lines(path, "utf-8", META_EXPECTED):
        m = match(line)
        if m is not None:
            asin = m.group(1) if m.group(1) is not None else m.group(2)
            if asin not in needed or asin in category:
                continue
        elif not line.strip():
            continue
        record = parse_literal_line(line)
        if not isinstance(record, dict):
            raise DataError(f"not a JSON or Python-literal dict; expected {META_EXPECTED}",
                            path=path, line=lineno)
        asin = record.get("asin")
        if not isinstance(asin, str) or not asin:
            raise DataError(f"'asin' is {asin!r}; expected {META_EXPECTED}", path=path,
                            line=lineno)
        if asin not in needed or asin in category:
            continue
        category[asin] = first_category(record.get("categories"))
        t = record.get("title")
        title[asin] = t if isinstance(t, str) else None
    return category, title


def read(files: list[Path], options: dict) -> RawDataset:
    reviews_path, meta_path = (Path(f) for f in files)
    for path in (reviews_path, meta_path):
        if not path.is_file():
            raise DataError(f"raw file not found; {HOW_TO_GET}", path=path)
    users, items, times = read_reviews(reviews_path)
    needed = set(pd.unique(items).tolist())
    category, title = read_meta(meta_path, needed)
    if not category:
        raise DataError(f"no line describes an item of {reviews_path.name}; is this the matching "
                        f"metadata file? expected {META_EXPECTED}", path=meta_path)
    return RawDataset(
        name="book", users=users, items=items, timestamps=times,
        item_category=pd.Series(category, dtype=object),
        item_title=pd.Series(title, dtype=object),
        files=[reviews_path, meta_path])
