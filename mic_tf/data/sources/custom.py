"""Your own data: a CSV or Parquet file of interactions, plus optional user and item tables.

Options (flags of the same name):
  raw_path              the interactions file; `.parquet`/`.pq` is read as Parquet, anything
                        else as CSV (comma-separated, with a header row, quotes allowed).
  custom_user_col       user id column (default `user`)
  custom_item_col       item id column (default `item`)
  custom_time_col       time column (default `timestamp`): numbers (any unit; only their order
                        matters), or ISO dates / datetimes (`2020-01-31`, `2020-01-31T08:00:00`,
                        `2020-01-31 08:00:00+02:00`), converted to epoch seconds (naive times as
                        UTC). Ties keep file order.
  custom_category_col   optional item category column of the interactions file (an item seen
                        with several categories takes its last one, as ComiRec does for Taobao).
  custom_user_features  optional CSV/Parquet: first column = user id, every other column a
                        categorical user field (empty = unknown).
  custom_item_features  optional CSV/Parquet: first column = item id; its `category` and `title`
                        columns are used (at least one must exist). Its category overrides
                        `custom_category_col` for the items it lists.

Ids are read as strings exactly as written (a CSV is read with every column as text; integer
Parquet columns are written out in decimal), so `007` stays `007`. A row with an empty user, item
or time is an error naming the file and line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mic_tf.data.raw import RawDataset
from mic_tf.data.sources.common import (COMPRESSED_STREAM_ERRORS, _parser_line,
                                        datetimes_to_epoch_seconds, numbers_to_epoch_seconds,
                                        require_file)
from mic_tf.errors import DataError

OPTIONS = ("raw_path", "custom_user_col", "custom_item_col", "custom_time_col",
           "custom_category_col", "custom_user_features", "custom_item_features")
DEFAULTS = {"custom_user_col": "user", "custom_item_col": "item",
            "custom_time_col": "timestamp"}
PARQUET_SUFFIXES = (".parquet", ".pq")
HOW_TO_GET = ("pass --raw_path=FILE.csv (or .parquet) with a header row and columns named by "
              "--custom_user_col, --custom_item_col and --custom_time_col")


def _opt(options: dict, name: str):
    value = options.get(name)
    return DEFAULTS.get(name) if value is None else value


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def _where(path: Path, row: int) -> dict:
    """`path`/`line` arguments of a DataError for data row `row` (0-based)."""
    if _is_parquet(path):
        return {"path": f"{path} (row {row + 1})"}
    return {"path": path, "line": row + 2}  # line 1 is the header


def _ids_as_text(column: pd.Series) -> pd.Series:
    """A column as an object Series of strings exactly as written (missing stays NaN): text
    untouched, integers in decimal, integral floats (an int column with gaps) as integers."""
    missing = column.isna()
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = values[~np.isnan(values)]
        if np.all(finite == np.round(finite)):
            column = column.astype("Int64")
    if pd.api.types.is_string_dtype(column.dtype) or column.dtype == object:
        out = column.astype(object)
    else:
        out = column.astype(str).astype(object)
    return out.where(~missing, np.nan)


def _truncated(path: Path, e: BaseException) -> DataError:
    return DataError(f"truncated or corrupt compressed file ({type(e).__name__}: {e}); fetch or "
                     f"compress it again", path=path)


def _drop_trailing_blank_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Blank lines at the end of a CSV (an editor's extra newlines) are not rows. Blank lines
    are read as rows (`skip_blank_lines=False`) so that line numbers stay right; inside the file
    they are still an error naming their line."""
    filled = df.notna().any(axis=1).to_numpy()
    last = len(filled) - int(np.argmax(filled[::-1])) if filled.any() else 0
    return df.iloc[:last]


def _require_scalar_columns(schema: pa.Schema, columns: list[str], path: Path, what: str) -> None:
    """Parquet columns of lists, structs or maps cannot be ids, times or categories."""
    for name in columns:
        kind = schema.field(name).type
        if pa.types.is_nested(kind):
            raise DataError(f"column {name!r} of the {what} holds lists or records ({kind}); "
                            f"expected one value per row (explode or flatten it first)",
                            path=path)


def read_table(path: Path, what: str, required: list[str], optional: tuple[str, ...] = (),
               first_column: bool = False, all_columns: bool = False) -> pd.DataFrame:
    """Reads the needed columns of a CSV (all as text) or Parquet file, with clear errors."""
    path = Path(path)
    try:
        if _is_parquet(path):
            schema = pq.read_schema(path)
            names = schema.names
        else:
            names = pd.read_csv(path, nrows=0, encoding="utf-8").columns.tolist()
    except COMPRESSED_STREAM_ERRORS as e:
        raise _truncated(path, e) from e
    except (OSError, ValueError, pa.ArrowException, UnicodeDecodeError,
            pd.errors.ParserError) as e:
        kind = "Parquet" if _is_parquet(path) else "CSV"
        raise DataError(f"cannot read the {what} as {kind} ({type(e).__name__}: {e}); expected a "
                        f"{kind} file with a header row", path=path) from e
    if first_column:
        if len(names) < 1:
            raise DataError(f"the {what} has no columns; expected an id column first", path=path)
        required = [names[0]] + [c for c in required if c != names[0]]
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(f"missing column(s) {missing} in the {what}; found {names}. Name the "
                        f"columns with the --custom_*_col flags", path=path)
    if len(set(names)) != len(names):
        raise DataError(f"the {what} has duplicate column names {names}", path=path)
    wanted = list(names) if all_columns else list(
        dict.fromkeys(required + [c for c in optional if c in names]))
    if _is_parquet(path):
        _require_scalar_columns(schema, wanted, path, what)
    try:
        if _is_parquet(path):
            df = pd.read_parquet(path, columns=wanted)
        else:
            # All columns are read (no usecols) so that a line with extra fields is an error.
            df = _drop_trailing_blank_rows(pd.read_csv(
                path, dtype=str, keep_default_na=False, na_values=[""], skip_blank_lines=False,
                encoding="utf-8", engine="c"))
    except COMPRESSED_STREAM_ERRORS as e:
        raise _truncated(path, e) from e
    except (OSError, ValueError, pa.ArrowException, UnicodeDecodeError,
            pd.errors.ParserError) as e:
        line = None if _is_parquet(path) else _parser_line(str(e))
        raise DataError(f"cannot parse the {what} ({type(e).__name__}: {e}); expected "
                        f"{len(names)} comma-separated fields per line", path=path,
                        line=line) from e
    return df[wanted]


def _require_values(df: pd.DataFrame, columns: list[str], path: Path, what: str) -> None:
    for col in columns:
        bad = df[col].isna().to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"empty or missing value in column {col!r} of the {what}",
                            **_where(path, row))


def _times(column: pd.Series, path: Path, name: str) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return datetimes_to_epoch_seconds(column)
    if pd.api.types.is_bool_dtype(column.dtype):
        raise DataError(f"column {name!r} holds booleans (True/False), not times; expected "
                        f"numbers or ISO dates (check --custom_time_col)", **_where(path, 0))
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy()
        if values.dtype.kind in "iu":
            return values.astype(np.int64)
        values = values.astype(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"column {name!r} value {values[row]} is not a finite number; "
                            f"expected finite numbers or ISO dates", **_where(path, row))
        return values
    if _is_parquet(path):
        return numbers_to_epoch_seconds(column.astype(object), path=path, column=name,
                                        first_line=1, row_label="row")
    return numbers_to_epoch_seconds(column.astype(object), path=path, column=name, first_line=2)


def _feature_table(path: Path, what: str, optional: tuple[str, ...] = (),
                   all_columns: bool = False) -> pd.DataFrame:
    """A side table indexed by its first column (as text); duplicate ids are an error."""
    df = read_table(path, what, [], optional=optional, first_column=True,
                    all_columns=all_columns)
    id_col = df.columns[0]
    _require_values(df, [id_col], path, what)
    ids = _ids_as_text(df[id_col])
    dup = ids.duplicated().to_numpy()
    if dup.any():
        row = int(np.argmax(dup))
        raise DataError(f"id {ids.iloc[row]!r} appears twice in the {what}; expected one row per "
                        f"id", **_where(path, row))
    out = df.drop(columns=[id_col])
    out.index = pd.Index(ids.to_numpy(dtype=object), name=str(id_col))
    for col in out.columns:
        out[col] = _ids_as_text(out[col])
    return out


def locate(raw_dir: Path, options: dict) -> list[Path]:
    raw_path = options.get("raw_path")
    if not raw_path:
        raise DataError(f"the custom source needs an interactions file; {HOW_TO_GET}",
                        path=Path(raw_dir))
    files = [require_file(Path(raw_path), HOW_TO_GET)]
    for name in ("custom_user_features", "custom_item_features"):
        if options.get(name):
            files.append(require_file(Path(options[name]), f"check --{name}"))
    return files


def read(files: list[Path], options: dict) -> RawDataset:
    files = [Path(f) for f in files]
    inter_path = require_file(files[0], HOW_TO_GET)
    rest = iter(files[1:])
    user_col, item_col, time_col = (_opt(options, n) for n in
                                    ("custom_user_col", "custom_item_col", "custom_time_col"))
    cat_col = options.get("custom_category_col") or None
    required = [user_col, item_col, time_col]
    if len(set(required)) != 3:
        raise DataError(f"user, item and time columns must differ, got {required}",
                        path=inter_path)
    df = read_table(inter_path, "interactions file", required + ([cat_col] if cat_col else []))
    if len(df) == 0:
        raise DataError("the interactions file has a header but no rows", path=inter_path)
    _require_values(df, required, inter_path, "interactions file")
    users = _ids_as_text(df[user_col]).to_numpy(dtype=object)
    items = _ids_as_text(df[item_col]).to_numpy(dtype=object)
    times = _times(df[time_col], inter_path, time_col)

    item_category = None
    if cat_col:
        cats = pd.Series(_ids_as_text(df[cat_col]).to_numpy(dtype=object), index=items)
        cats = cats[cats.notna()]
        n_conflicts = int((cats.groupby(level=0).nunique() > 1).sum()) if len(cats) else 0
        if n_conflicts:
            print(f"custom: {n_conflicts} items have several categories in {inter_path}; each "
                  f"takes the category of its last row", file=sys.stderr)
        item_category = cats[~cats.index.duplicated(keep="last")]
    item_title = None
    user_features = None
    if options.get("custom_user_features"):
        path = next(rest)
        user_features = _feature_table(path, "user feature table", all_columns=True)
        if user_features.shape[1] == 0:
            raise DataError("the user feature table has only an id column; expected the user id "
                            "first and one column per categorical field", path=path)
    if options.get("custom_item_features"):
        path = next(rest)
        table = _feature_table(path, "item feature table", optional=("category", "title"))
        if "category" not in table.columns and "title" not in table.columns:
            raise DataError(f"the item feature table has no 'category' or 'title' column; found "
                            f"{[table.index.name] + list(table.columns)}", path=path)
        if "category" in table.columns:
            from_table = table["category"].dropna()
            item_category = (from_table if item_category is None
                             else from_table.combine_first(item_category))
        if "title" in table.columns:
            item_title = table["title"]
    return RawDataset(name="custom", users=users, items=items, timestamps=times,
                      item_category=item_category, item_title=item_title,
                      user_features=user_features, files=files)
