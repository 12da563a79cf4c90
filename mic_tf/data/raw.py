"""What every source loader returns: interactions in file order plus optional side tables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from mic_tf.errors import DataError


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
        if n == 0:
            where = ", ".join(str(f) for f in self.files) or self.name
            raise DataError(f"no interactions were read from {where}; expected at least one row")

    @property
    def num_rows(self) -> int:
        return len(self.users)
