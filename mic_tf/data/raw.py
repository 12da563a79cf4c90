"""What every source loader returns: interactions in file order plus optional side tables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from mic_tf.errors import DataError


def _check_timestamps(ts: np.ndarray, where: str) -> None:
    """Times must be finite numbers: an inf or NaN time sorts anywhere, and a boolean is not a
    time (a constant True orders nothing). Loaders name the file line; this is the safety net
    for every source, naming the row in file order."""
    if ts.dtype.kind == "b":
        raise DataError(f"the timestamps are boolean values; expected numbers or dates (check "
                        f"which column is the time)", path=where)
    if ts.dtype.kind not in "iuf":
        raise DataError(f"the timestamps have type {ts.dtype}; expected numbers", path=where)
    if ts.dtype.kind == "f":
        bad = ~np.isfinite(ts)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"timestamp {ts[row]} at row {row + 1} (in file order) is not a "
                            f"finite number", path=where)


@dataclasses.dataclass
class RawDataset:
    """Interactions of one dataset exactly as read from its raw files, before any filtering.

    Attributes:
      name: source name (`ml-100k`, `taobao`, ...).
      users: `[R]` raw user ids in file order (any hashable dtype: int64 for numeric sources,
        strings where the raw ids are strings). `str(id)` must give the id as written in the file.
      items: `[R]` raw item ids, aligned with `users`.
      timestamps: `[R]` int64 or float64 times; ties are broken by file order (stable sort).
      item_category: optional Series raw item id -> category name (str). Items missing from it
        have no category.
      item_title: optional Series raw item id -> human-readable title (for the embedding projector).
      user_features: optional DataFrame indexed by raw user id; every column is a categorical user
        field (values are turned into strings and given vocabulary ids).
      files: the raw files that were read; their checksums go into the processed metadata.
    """

    name: str
    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    item_category: pd.Series | None = None
    item_title: pd.Series | None = None
    user_features: pd.DataFrame | None = None
    files: list[Path] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        n = len(self.users)
        if len(self.items) != n or len(self.timestamps) != n:
            raise DataError(f"{self.name}: users, items and timestamps have different lengths "
                            f"({n}, {len(self.items)}, {len(self.timestamps)})")
        where = ", ".join(str(f) for f in self.files) or self.name
        if n == 0:
            raise DataError(f"no interactions were read from {where}; expected at least one row")
        _check_timestamps(np.asarray(self.timestamps), where)

    @property
    def num_rows(self) -> int:
        return len(self.users)
