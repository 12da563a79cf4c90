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


def item_cf_similarity(seq_items: np.ndarray, seq_offsets: np.ndarray, num_items: int):
    """Cosine item-item co-occurrence over a set of users (item-based CF, Deshpande & Karypis).

    `C = X^T X` over the binary user-item matrix X (an item a user interacted with several times
    counts once), `S_ij = C_ij / sqrt(C_ii C_jj)`, with the diagonal set to 0 so that an item
    never votes for itself.

    Args:
      seq_items: `[nnz]` item ids (1..N) of the users' sequences, concatenated.
      seq_offsets: `[U + 1]` CSR offsets of those users.
      num_items: N.

    Returns:
      `[N + 1, N + 1]` scipy CSR float32 matrix (row / column 0 = padding, all zero).
    """
    from scipy import sparse

    seq_items = np.asarray(seq_items, dtype=np.int64)
    offsets = np.asarray(seq_offsets, dtype=np.int64)
    if len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(seq_items):
        raise ValueError("seq_offsets must run from 0 to len(seq_items)")
    if len(seq_items) and (seq_items.min() < 1 or seq_items.max() > num_items):
        raise ValueError(f"item ids must be in 1..{num_items}")
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    x = sparse.csr_matrix((np.ones(len(seq_items), np.float32), (rows, seq_items)),
                          shape=(len(offsets) - 1, num_items + 1))
    x.data[:] = 1.0  # duplicates were summed by the constructor: presence only
    co = (x.T @ x).tocsr().astype(np.float64)
    norm = np.sqrt(co.diagonal())
    inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
    sim = sparse.diags(inv) @ co @ sparse.diags(inv)
    sim.setdiag(0.0)
    sim.eliminate_zeros()
    return sim.astype(np.float32).tocsr()


def item_cf_rank(similarity, histories: np.ndarray, top_n: int, batch_size: int = 1024
                 ) -> np.ndarray:
    """Ranks every item by the sum of its similarities to the user's history items.

    Args:
      similarity: `[N + 1, N + 1]` from `item_cf_similarity`.
      histories: `[U, L]` item ids, right-padded with 0 (the same input the models see). A
        repeated history item votes once per occurrence.
      top_n: length of the lists.

    Returns:
      `[U, top_n]` int64 item ids, best first; ties go to the smaller id (more popular under the
      protocol, as for every other model); items with a zero score come after every scored item,
      by id. History items are not removed (ComiRec protocol).
    """
    from scipy import sparse

    h = np.asarray(histories, dtype=np.int64)
    n = similarity.shape[0]
    out = np.zeros((len(h), top_n), np.int64)
    k = min(top_n, n - 1)
    for lo in range(0, len(h), batch_size):
        block = h[lo:lo + batch_size]
        rows = np.repeat(np.arange(len(block)), block.shape[1])
        real = block.ravel() > 0  # padding slots do not vote
        q = sparse.csr_matrix((np.ones(int(real.sum()), np.float32),
                               (rows[real], block.ravel()[real])), shape=(len(block), n))
        scores = np.asarray((q @ similarity).todense(), dtype=np.float64)[:, 1:]  # items 1..N
        # Exact top-k with the tie rule: sort by (-score, id) inside a partition that keeps
        # every item tied with the k-th best score.
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(scores, part, 1).min(axis=1, keepdims=True)
        cand = scores >= kth
        ids = np.broadcast_to(np.arange(1, n), scores.shape)
        key = np.where(cand, -scores, np.inf)
        order = np.lexsort((ids, key), axis=1)[:, :k]
        out[lo:lo + len(block), :k] = order + 1
    return out
