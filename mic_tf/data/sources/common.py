"""Shared readers for raw files, with errors that name the file, the line and what was expected."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mic_tf.errors import DataError


def require_file(path: Path, hint: str) -> Path:
    """Returns `path` if it is a file; otherwise raises a DataError with `hint` (how to get it)."""
    path = Path(path)
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
