"""Steam (UCSD; Kang & McAuley, ICDM'18 / SASRec): `steam_reviews.json.gz` + `steam_games.json.gz`.

Raw format: one Python-literal dict per line (written by Python 2's `repr`: `u'...'` strings,
`True`/`False`), e.g.
  {u'username': u'Chaos Syren', u'hours': 0.1, u'products': 41, u'product_id': u'725280',
   u'page_order': 0, u'date': u'2017-12-17', u'text': u'...', u'early_access': False, u'page': 1}
  {u'app_name': u'Lost Summoner Kitty', u'genres': [u'Action', ...], u'id': u'761140', ...}

User = `username` (as RecSysDatasets; `user_id` is often missing), item = `product_id`, time =
`date` (`YYYY-MM-DD`, converted to epoch seconds at 00:00 UTC; same-day reviews keep file order).
Category = first of the game's `genres`, title = `app_name` (else `title`); games without `id` are
skipped, games without `genres` have no category. No user fields.

7.8M review lines: the three fields are taken by one regex per line (and the line must start
with `{` and end with `}`); a line where the regex does not find each key exactly once, or a
value holds a backslash escape, is parsed with `ast.literal_eval` instead. The fast path does not
validate the rest of a line (e.g. the review text), only these fields. Equal strings share one
object, so memory stays ~1 GB.

Where the files come from: option `raw_path` (a folder), else `RAW_DIR`, downloading missing files
from option `raw_url` (default http://cseweb.ucsd.edu/~wckang/, 1.3 GB) with progress and resume.
No checksum is published for these files; a downloaded file is checked to decompress to its end
(the gzip CRC) before it is used.
"""

from __future__ import annotations

import array
import datetime
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mic_tf.data.raw import RawDataset
from mic_tf.data.sources.common import (check_gzip_readable, find_file, iter_lines,
                                        parse_literal_line)
from mic_tf.errors import DataError
from mic_tf.utils.io import download

OPTIONS = ("raw_path", "raw_url")

DEFAULT_URL = "http://cseweb.ucsd.edu/~wckang/"
REVIEWS = "steam_reviews.json.gz"
GAMES = "steam_games.json.gz"
HOW_TO_GET = (f"run `python datasets/prepare.py --dataset=steam` to download {REVIEWS} and "
              f"{GAMES} from {DEFAULT_URL}, or pass --raw_path=FOLDER holding them")
REVIEW_EXPECTED = ("a Python-literal dict per line with string 'username', 'product_id' and "
                   "'date' (YYYY-MM-DD)")
GAME_EXPECTED = "a Python-literal dict per line with 'id', 'genres' (a list) and 'app_name'"
_FIELDS = re.compile(r"""'(username|product_id|date)': u?(?:'([^'\\]*)'|"([^"\\]*)")""")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_EPOCH = datetime.date(1970, 1, 1)


def _names(folder: Path, name: str) -> tuple[str, ...]:
    return (name, name[:-3])  # the .gz, or an already decompressed copy


def _fetch(base_url: str, name: str, dest: Path) -> Path:
    url = base_url.rstrip("/") + "/" + name
    print(f"downloading {url}", file=sys.stderr)
    download(url, dest)
    try:
        check_gzip_readable(dest)
    except DataError:
        dest.unlink()
        raise
    return dest


def locate(raw_dir: Path, options: dict) -> list[Path]:
    raw_path = options.get("raw_path")
    folder = Path(raw_path) if raw_path else Path(raw_dir)
    if raw_path and not folder.is_dir():
        raise DataError(f"raw_path must be a folder holding {REVIEWS} and {GAMES}; {HOW_TO_GET}",
                        path=folder)
    found = []
    for name in (REVIEWS, GAMES):
        path = find_file(folder, _names(folder, name))
        if path is None:
            if raw_path:
                raise DataError(f"raw file not found; {HOW_TO_GET}", path=folder / name)
            path = _fetch(options.get("raw_url") or DEFAULT_URL, name, folder / name)
        found.append(path)
    return found


def _day_seconds(text: str, cache: dict, path: Path, lineno: int) -> int:
    seconds = cache.get(text)
    if seconds is None:
        try:
            if not _DATE.fullmatch(text):
                raise ValueError
            seconds = (datetime.date.fromisoformat(text) - _EPOCH).days * 86400
        except ValueError:
            raise DataError(f"'date' is {text!r}, not YYYY-MM-DD; expected {REVIEW_EXPECTED}",
                            path=path, line=lineno) from None
        cache[text] = seconds
    return seconds


def _slow_fields(line: str, path: Path, lineno: int) -> tuple[str, str, str]:
    record = parse_literal_line(line)
    if not isinstance(record, dict):
        raise DataError(f"not a Python-literal or JSON dict; expected {REVIEW_EXPECTED}",
                        path=path, line=lineno)
    values = []
    for key in ("username", "product_id", "date"):
        value = record.get(key)
        if not isinstance(value, str) or not value:
            raise DataError(f"{key!r} is {'missing' if value is None else repr(value)}; "
                            f"expected {REVIEW_EXPECTED}", path=path, line=lineno)
        values.append(value)
    return values[0], values[1], values[2]


def read_reviews(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(users, items, timestamps)` of the review lines in file order."""
    users, items = [], []
    times = array.array("q")
    user_pool, item_pool, date_cache = {}, {}, {}
    findall = _FIELDS.findall
    slow = 0
    for lineno, line in iter_lines(path, "utf-8", REVIEW_EXPECTED):
        found = findall(line)
        if len(found) == 3 and line[:1] == "{" and line.rstrip()[-1:] == "}":
            got = {key: a or b for key, a, b in found}
            user, item, date = got.get("username"), got.get("product_id"), got.get("date")
        else:
            user = None
        if not user or not item or not date:
            if not line.strip():
                continue
            user, item, date = _slow_fields(line, path, lineno)
            slow += 1
        users.append(user_pool.setdefault(user, user))
        items.append(item_pool.setdefault(item, item))
        times.append(_day_seconds(date, date_cache, path, lineno))
    if slow:
        print(f"steam: {slow} review lines needed the full literal parser", file=sys.stderr)
    return (np.array(users, dtype=object), np.array(items, dtype=object),
            np.frombuffer(times, dtype=np.int64).copy())


def read_games(path: Path) -> tuple[dict, dict]:
    """`(item -> first genre, item -> title)`; games without `id` are skipped."""
    category, title = {}, {}
    for lineno, line in iter_lines(path, "utf-8", GAME_EXPECTED):
        if not line.strip():
            continue
        record = parse_literal_line(line)
        if not isinstance(record, dict):
            raise DataError(f"not a Python-literal or JSON dict; expected {GAME_EXPECTED}",
                            path=path, line=lineno)
        item = record.get("id")
        if item is None or item == "":
            continue
        item = str(item)
        if item in category:
            continue  # first line of a game wins
        genres = record.get("genres")
        if genres is not None and not isinstance(genres, (list, tuple)):
            raise DataError(f"'genres' is {genres!r}, not a list; expected {GAME_EXPECTED}",
                            path=path, line=lineno)
        first = genres[0] if genres else None
        category[item] = first if isinstance(first, str) and first else None
        name = record.get("app_name") or record.get("title")
        title[item] = name if isinstance(name, str) else None
    return category, title


def read(files: list[Path], options: dict) -> RawDataset:
    reviews_path, games_path = (Path(f) for f in files)
    for path in (reviews_path, games_path):
        if not path.is_file():
            raise DataError(f"raw file not found; {HOW_TO_GET}", path=path)
    users, items, times = read_reviews(reviews_path)
    category, title = read_games(games_path)
    return RawDataset(name="steam", users=users, items=items, timestamps=times,
                      item_category=pd.Series(category, dtype=object),
                      item_title=pd.Series(title, dtype=object),
                      files=[reviews_path, games_path])
