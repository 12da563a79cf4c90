"""Checks at the boundary of the Python inference API: what callers pass and what a saved
datastore folder holds. numpy's casts would otherwise answer something for bad input (2.7 -> item
2, "3" -> item 3, a NaN weight -> all-zero lists), so everything is checked before it is cast.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from mic_tf.errors import DataError, UsageError

_RESAVE = "save the datastore again (Datastore.save)"


def _first(values: np.ndarray, bad: np.ndarray):
    """The first offending value, as a plain Python scalar (for the message)."""
    value = values.reshape(-1)[int(np.argmax(bad.reshape(-1)))]
    return value.item() if isinstance(value, np.generic) else value


def as_item_ids(name: str, values) -> np.ndarray:
    """`values` as int64 ids; integral floats are accepted, anything else (fractions, NaN, bools,
    strings, objects) is a UsageError naming `name` and an offending value."""
    a = np.asarray(values)
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        bad = ~np.isfinite(a) | (a != np.round(a))
        if not bad.any():
            return a.astype(np.int64)
        raise UsageError(f"{name} must hold integer item ids; found {_first(a, bad)!r}")
    example = f" such as {_first(a, np.ones(a.shape, bool))!r}" if a.size else ""
    raise UsageError(f"{name} must hold integer item ids, got values of type "
                     f"{a.dtype.type.__name__}{example}")


def as_vectors(name: str, values) -> np.ndarray:
    """`values` as float32; only finite ints or floats (no bools, no strings)."""
    a = np.asarray(values)
    if a.dtype.kind not in "iuf":
        raise UsageError(f"{name} must be finite numbers, got values of type {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise UsageError(f"{name} hold NaN or inf values (or values beyond float32)")
    return a


# ----------------------------------------------------------------------- saved datastores
def read_settings(folder: Path, version: int) -> dict:
    path = Path(folder) / "datastore.json"
    if not path.is_file():
        raise DataError("not found: not a saved Datastore folder", path=path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"unreadable settings ({e}); {_RESAVE}", path=path) from e
    if not isinstance(meta, dict) or meta.get("format_version") != version:
        found = meta.get("format_version") if isinstance(meta, dict) else None
        raise DataError(f"unsupported datastore format {found!r} (expected {version}); {_RESAVE}",
                        path=path)
    return meta


def load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"missing or unreadable ({type(e).__name__}: {e}); {_RESAVE}",
                        path=path) from e


def read_index(path: Path):
    if not path.is_file():
        raise DataError(f"missing; {_RESAVE}", path=path)
    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        raise DataError(f"not a readable Faiss index ({e}); {_RESAVE}", path=path) from e


def item_score(folder: Path, meta: dict, allowed: tuple[str, ...]) -> str:
    """The saved `item_score` ("dot" when absent, as the format's first datastores)."""
    value = meta.get("item_score", "dot")
    if value not in allowed:
        raise DataError(f"item_score {value!r} is not one of {allowed}; {_RESAVE}",
                        path=Path(folder) / "datastore.json")
    return value


def check_saved_sizes(folder: Path, meta: dict, arrays: dict, indexes) -> None:
    """The vectors, the indexes and datastore.json describe the same users, items and dim.

    `indexes`: the users' and the items' index, then optionally the unit-item index."""
    users, items = arrays["user_vectors"], arrays["item_vectors"]
    user_index, item_index = indexes[:2]
    facts = [  # (file, what, found, file it must agree with, expected)
        ("user_vectors.npy", "rows", len(users), "users.faiss", user_index.ntotal),
        ("item_vectors.npy", "rows - 1 (padding)", len(items) - 1, "items.faiss",
         item_index.ntotal),
        ("user_vectors.npy", "columns", users.shape[-1] if users.ndim == 2 else None,
         "users.faiss", user_index.d),
        ("item_vectors.npy", "columns", items.shape[-1] if items.ndim == 2 else None,
         "items.faiss", item_index.d),
        ("datastore.json", "num_users", meta.get("num_users"), "users.faiss", user_index.ntotal),
        ("datastore.json", "num_items", meta.get("num_items"), "items.faiss", item_index.ntotal),
        ("datastore.json", "dim", meta.get("dim"), "items.faiss", item_index.d),
    ]
    for unit_index in indexes[2:]:
        facts.append(("items_unit.faiss", "ntotal", unit_index.ntotal, "items.faiss",
                      item_index.ntotal))
        facts.append(("items_unit.faiss", "dim", unit_index.d, "items.faiss", item_index.d))
    for name, what, found, other, expected in facts:
        if found != expected:
            raise DataError(f"{name} has {what} = {found} but {other} has {expected}: the files "
                            f"come from different datastores; {_RESAVE}", path=folder)


def check_item_neighbours(path: Path, table: np.ndarray, num_items: int) -> None:
    if table.ndim != 2 or table.shape[0] != num_items + 1 or table.dtype.kind not in "iu":
        raise DataError(f"expected an integer table of {num_items + 1} rows, got shape "
                        f"{table.shape} ({table.dtype}): rebuild it with build_item_neighbours",
                        path=path)
    if table.size and (table.min() < 0 or table.max() > num_items):
        raise DataError(f"holds item ids outside 0..{num_items}: rebuild it with "
                        f"build_item_neighbours", path=path)
