"""Small numpy helpers shared by mining (training) and cross-channel inference."""

from __future__ import annotations

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation over the last axis (zero rows stay zero), float32, contiguous."""
    x = np.asarray(x, dtype=np.float32)
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def drop_self(neighbours: np.ndarray, self_ids: np.ndarray) -> np.ndarray:
    """`[Q, k + 1]` neighbour lists searched for their own rows -> `[Q, k]` without the row itself.

    The query's own id is dropped where the search returned it; where it did not (an approximate
    index, or ties), the last neighbour is dropped instead. A stable sort keeps the order.
    """
    k = neighbours.shape[1] - 1
    is_self = neighbours == np.asarray(self_ids)[:, None]
    drop = is_self | (~is_self.any(axis=1, keepdims=True) & (np.arange(k + 1) == k))
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(neighbours, order, axis=1)
