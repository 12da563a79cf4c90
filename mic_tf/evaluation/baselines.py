"""Non-learned baselines as vectors, so they share the model's retrieval and metrics path."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# float32 represents every integer up to 2**24 exactly; beyond that two different counts could
# round to the same score and tie.
_FLOAT32_EXACT = 2 ** 24


def most_popular_vectors(popularity) -> tuple[Callable[[int], np.ndarray], np.ndarray]:
    """MostPopular as 1-D embeddings: every user gets the items with the most training interactions.

    The item vector is its popularity count and every user's query is `[1.0]`, so the inner
    product of `ItemIndex` ranks items by popularity and the list goes through exactly the same
    `ItemIndex.search` and `ranking_metrics` code as a trained model.

    Ties (equal counts, frequent in the tail) are broken by the smaller item id, the rule of
    `ItemIndex.search`. Under the ComiRec protocol item ids are numbered by descending popularity
    over ALL interactions, so a tie on training counts goes to the item more popular overall.

    Args:
      popularity: `[N + 1]` non-negative interaction counts of each item over the training users
        (e.g. `ProcessedDataset.item_popularity("train")`); entry 0 is the padding item.

    Returns:
      `(user_vectors, item_vectors)`: `user_vectors(num_users)` returns the `[num_users, 1]`
      float32 all-ones queries; `item_vectors` is `[N + 1, 1]` float32 (row 0 = padding, never
      indexed by `ItemIndex`).
    """
    counts = np.asarray(popularity)
    if counts.ndim != 1 or len(counts) < 2:
        raise ValueError(f"popularity must be [N + 1] with N >= 1, got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or not np.isfinite(counts).all():
        raise ValueError("popularity must hold finite numbers")
    if (counts < 0).any():
        raise ValueError("popularity counts must be >= 0")
    if counts.max() > _FLOAT32_EXACT:
        raise ValueError(f"popularity counts above 2**24 are not exact in float32 (max "
                         f"{counts.max()}), so distinct counts could tie; pass a dense rank of "
                         f"the counts instead (same order, small integers)")
    item_vectors = counts.astype(np.float32)[:, None]

    def user_vectors(num_users: int) -> np.ndarray:
        if num_users < 0:
            raise ValueError(f"num_users must be >= 0, got {num_users}")
        return np.ones((num_users, 1), dtype=np.float32)

    return user_vectors, item_vectors
