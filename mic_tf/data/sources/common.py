"""Shared readers for raw files, with errors that name the file, the line and what was expected."""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import lzma
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from mic_tf.errors import DataError

# What reading a truncated or corrupt .gz / .bz2 / .xz stream raises (pandas decompresses by the
# file's suffix): EOFError and zlib.error are neither OSError nor ValueError.
COMPRESSED_STREAM_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


def require_file(path: Path, hint: str) -> Path:
    """Returns `path` if it is a file; otherwise raises a DataError with `hint` (how to get it)."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"is a folder, not a file; pass the raw file itself; {hint}", path=path)
    if not path.is_file():
        raise DataError(f"raw file not found; {hint}", path=path)
    return path


def _parser_line(message: str) -> int | None:
    m = re.search(r"line (\d+)", message)
    return int(m.group(1)) if m else None


def read_table(path: Path, *, sep: str, columns: list[str] | None, required: list[str],
               numeric: tuple[str, ...] = (), header: bool = True, dtypes: dict | None = None,
               encoding: str = "utf-8", what: str = "", rename=None) -> pd.DataFrame:
    """Reads a delimited text file strictly.

    Args:
      path: the file.
      sep: the field separator (a multi-character separator such as `::` is handled too).
      columns: names of the columns when the file has no header; with `header=True`, None.
      required: columns that must exist and be non-empty on every line.
      numeric: columns that must parse as numbers.
      dtypes: optional pandas dtypes (fast path for large numeric files).
      what: a short description of the expected format, used in error messages.
      rename: optional function applied to each header name (e.g. to drop RecBole's `:type`).

    Raises:
      DataError naming the file and the first bad line (1-based, counting a header line).
    """
    expect = f"; expected {what}" if what else ""
    sep_is_multi = len(sep) > 1
    kwargs = dict(sep=re.escape(sep) if sep_is_multi else sep,
                  header=0 if header else None, names=None if header else columns,
                  dtype=dtypes or str, keep_default_na=False, na_values=[""],
                  encoding=encoding, quoting=csv.QUOTE_NONE,
                  engine="python" if sep_is_multi else "c")
    try:
        df = pd.read_csv(path, **kwargs)
    except pd.errors.ParserError as e:
        raise DataError(f"malformed line ({e}){expect}", path=path, line=_parser_line(str(e))) from e
    except UnicodeDecodeError as e:
        raise DataError(f"not {encoding} text ({e}){expect}", path=path) from e
    except COMPRESSED_STREAM_ERRORS as e:
        raise DataError(f"truncated or corrupt compressed file ({type(e).__name__}: {e}); fetch "
                        f"the file again", path=path) from e
    except (ValueError, TypeError) as e:
        # A dtype fast path failed: find the offending line with the strict string reader.
        if dtypes:
            df = read_table(path, sep=sep, columns=columns, required=required, numeric=numeric,
                            header=header, dtypes=None, encoding=encoding, what=what,
                            rename=rename)
            raise DataError(f"a value does not fit its column type ({e}){expect}", path=path)
        raise DataError(f"cannot parse ({e}){expect}", path=path) from e
    except OSError as e:
        raise DataError(f"cannot read ({e})", path=path) from e
    if rename is not None:
        df.columns = [rename(c) for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(df.columns)}{expect}", path=path)
    first_line = 2 if header else 1
    for col in required:
        bad = df[col].isna().to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"empty or missing value in column {col!r}{expect}", path=path,
                            line=row + first_line)
    for col in numeric:
        if dtypes and col in dtypes:
            continue
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna().to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"column {col!r} is not a number ({df[col].iloc[row]!r}){expect}",
                            path=path, line=row + first_line)
        df[col] = values
    return df


def parse_recbole_header(path: Path) -> list[str]:
    """Column names of a RecBole atomic file, with the `:type` suffixes removed."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n")
    names = []
    for token in header.split("\t"):
        if ":" not in token:
            raise DataError(f"header field {token!r} is not of the form name:type; expected a "
                            f"RecBole atomic file header", path=path, line=1)
        names.append(token.split(":", 1)[0])
    return names


def read_recbole_atomic(path: Path, required: list[str], numeric: tuple[str, ...] = ()
                        ) -> pd.DataFrame:
    """Reads a RecBole atomic file (`name:type` tab-separated header)."""
    parse_recbole_header(path)
    return read_table(path, sep="\t", columns=None, required=required, numeric=numeric,
                      what=f"a RecBole atomic file with columns {required}",
                      rename=lambda c: c.split(":", 1)[0])


# --------------------------------------------------------------------------------------------
# Line-oriented raw files (plain or gzip), shared by the JSON / Python-literal loaders.

_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def is_gzip(path: Path) -> bool:
    """True when the file starts with the gzip magic bytes (whatever its name says)."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_text(path: Path, encoding: str = "utf-8"):
    """Opens a plain or gzip-compressed text file; lines end at `\\n` only (no `\\r` splitting)."""
    path = Path(path)
    try:
        raw = gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")
    except OSError as e:
        raise DataError(f"cannot open ({e})", path=path) from e
    return io.TextIOWrapper(raw, encoding=encoding, newline="\n")


def iter_lines(path: Path, encoding: str = "utf-8", what: str = ""):
    """Yields `(line_number, line)` (1-based, without the line end) of a plain or .gz text file.

    A truncated or corrupt gzip stream, undecodable bytes or an I/O error becomes a DataError that
    names the file and the line where reading stopped.
    """
    path = Path(path)
    expect = f"; expected {what}" if what else ""
    lineno = 0
    with open_text(path, encoding) as f:
        try:
            for lineno, line in enumerate(f, 1):
                yield lineno, line.rstrip("\r\n")
        except _GZIP_ERRORS as e:
            raise DataError(f"truncated or corrupt gzip file ({type(e).__name__}: {e}) after "
                            f"{lineno} complete lines; fetch the file again", path=path,
                            line=lineno + 1) from e
        except UnicodeDecodeError as e:
            raise DataError(f"not {encoding} text ({e}){expect}", path=path,
                            line=lineno + 1) from e
        except OSError as e:
            raise DataError(f"cannot read ({e})", path=path, line=lineno + 1) from e


def check_gzip_readable(path: Path) -> None:
    """Reads a .gz file to its end, raising a DataError if it is truncated or corrupt."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 24):
                pass
    except (*_GZIP_ERRORS, OSError) as e:
        raise DataError(f"truncated or corrupt gzip file ({type(e).__name__}: {e}); fetch the file "
                        f"again", path=path) from e


def find_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first of `names` that exists in `folder` (e.g. `x.json` then `x.json.gz`), or None."""
    for name in names:
        candidate = Path(folder) / name
        if candidate.is_file():
            return candidate
    return None


def parse_literal_line(line: str):
    """One JSON or Python-literal object: a fast `json.loads` first, then `ast.literal_eval`.

    Returns None when the line is neither (the caller raises with the file and line).
    """
    try:
        return json.loads(line)
    except ValueError:
        pass
    try:
        return ast.literal_eval(line)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def numbers_to_epoch_seconds(values: pd.Series, *, path: Path, column: str, first_line: int,
                             row_label: str = "line") -> np.ndarray:
    """Numbers as they are (int64 when integral, else float64), or ISO dates/datetimes as epoch
    seconds (naive times are taken as UTC). Raises a DataError naming the first bad line (or,
    with `row_label="row"`, the first bad row of a columnar file)."""

    def where(row: int) -> dict:
        if row_label == "line":
            return {"path": path, "line": row + first_line}
        return {"path": f"{path} ({row_label} {row + first_line})"}

    numeric = pd.to_numeric(values, errors="coerce")
    if not numeric.isna().any():
        arr = numeric.to_numpy()
        if arr.dtype.kind == "b" or pd.api.types.infer_dtype(values, skipna=True) == "boolean":
            raise DataError(f"column {column!r} holds booleans ({values.iloc[0]!r}), not times; "
                            f"expected numbers or ISO dates/datetimes", **where(0))
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            row = int(np.argmax(~np.isfinite(arr)))  # an inf time would sort anywhere
            raise DataError(f"column {column!r} value {values.iloc[row]!r} is not a finite "
                            f"number; expected finite numbers or ISO dates/datetimes", **where(row))
        if arr.dtype.kind in "iu":
            return arr.astype(np.int64)
        if np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)) \
                and np.all(np.abs(arr) < 2 ** 62):
            return arr.astype(np.int64)
        return arr.astype(np.float64)
    if numeric.notna().any():
        # Report the odd one out: the first number among mostly dates, or the reverse.
        is_number = numeric.notna().to_numpy()
        odd = is_number if is_number.sum() * 2 < len(is_number) else ~is_number
        row = int(np.argmax(odd))
        if str(values.iloc[row]).strip().lower() in _NON_FINITE:
            raise DataError(f"column {column!r} value {values.iloc[row]!r} is not a finite "
                            f"number; expected finite numbers or ISO dates/datetimes", **where(row))
        raise DataError(f"column {column!r} mixes numbers and other values ({values.iloc[row]!r}); "
                        f"expected all numbers or all ISO dates/datetimes", **where(row))
    as_str = values.astype(str)
    try:
        times = pd.to_datetime(as_str, errors="coerce", utc=True, format="ISO8601")
    except (ValueError, TypeError):
        times = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    bad = times.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"column {column!r} value {values.iloc[row]!r} is neither a number nor an "
                        f"ISO date/datetime (YYYY-MM-DD[THH:MM[:SS]][+HH:MM])", **where(row))
    return datetimes_to_epoch_seconds(times)


_NON_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def datetimes_to_epoch_seconds(times: pd.Series) -> np.ndarray:
    """A datetime Series (naive = UTC) as int64 epoch seconds, or float64 with sub-seconds."""
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    ns = times.astype("datetime64[ns]").to_numpy().astype(np.int64)
    if np.any(ns % 10 ** 9):
        return ns / 1e9
    return ns // 10 ** 9


def split_lines(path: Path, sep: str, num_fields: int, *, encoding: str = "utf-8",
                int_fields: tuple[int, ...] = (), what: str = "", skip_blank: bool = True
                ) -> list[list[str]]:
    """Strictly splits every line of a small text file into exactly `num_fields` fields.

    Fields listed in `int_fields` must be integers. Blank lines are skipped (a trailing newline is
    common). Raises a DataError naming the file and the first bad line.
    """
    expect = f"; expected {what}" if what else ""
    rows = []
    for lineno, line in iter_lines(path, encoding, what):
        if not line.strip() and skip_blank:
            continue
        fields = line.split(sep)
        if len(fields) != num_fields:
            raise DataError(f"{len(fields)} fields separated by {sep!r} instead of {num_fields}"
                            f"{expect}", path=path, line=lineno)
        for j in int_fields:
            try:
                int(fields[j])
            except ValueError:
                raise DataError(f"field {j + 1} is {fields[j]!r}, not an integer{expect}",
                                path=path, line=lineno) from None
        rows.append(fields)
    return rows


def read_int_columns(path: Path, sep: str, names: list[str], *, encoding: str = "utf-8",
                     what: str = "") -> pd.DataFrame:
    """Reads a large headerless file of integer fields (`sep` may be `::`) into int64 columns.

    Fast path: pandas' C engine. A `::` separator is read as `:` with an empty field between
    every pair of values, and those fields are checked to be empty. On any failure, a strict
    line-by-line pass locates and reports the first bad line.
    """
    path = Path(path)
    if len(sep) == 2 and sep[0] == sep[1]:
        c_sep, cols = sep[0], []
        for j, name in enumerate(names):
            cols.append(name)
            if j < len(names) - 1:
                cols.append(f"__sep{j}")
    elif len(sep) == 1:
        c_sep, cols = sep, list(names)
    else:
        raise ValueError(f"unsupported separator {sep!r}")
    dtypes = {c: (np.int64 if not c.startswith("__sep") else object) for c in cols}
    try:
        if is_gzip(path):
            raise ValueError("gzip: use the strict reader")
        df = pd.read_csv(path, sep=c_sep, header=None, names=cols, dtype=dtypes,
                         keep_default_na=False, na_values=[""], encoding=encoding,
                         quoting=csv.QUOTE_NONE, engine="c", skip_blank_lines=True)
        ok = all(df[c].isna().all() for c in cols if c.startswith("__sep"))
    except (ValueError, TypeError, pd.errors.ParserError, UnicodeDecodeError, OverflowError):
        ok = False
    except OSError as e:
        raise DataError(f"cannot read ({e})", path=path) from e
    if ok:
        return df[list(names)]
    rows = split_lines(path, sep, len(names), encoding=encoding,
                       int_fields=tuple(range(len(names))), what=what)
    # The strict pass accepted every line, so the fast path failed for another reason (e.g. a
    # value beyond int64): use the strict result.
    if not rows:
        return pd.DataFrame({n: np.zeros(0, dtype=np.int64) for n in names})
    try:
        arr = np.array(rows, dtype=np.int64)
    except OverflowError as e:
        expect = f"; expected {what}" if what else ""
        raise DataError(f"an integer does not fit in int64 ({e}){expect}", path=path) from e
    return pd.DataFrame({n: arr[:, j] for j, n in enumerate(names)})
