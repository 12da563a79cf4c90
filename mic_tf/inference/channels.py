"""The three retrieval channels of MIC's cross-channel inference (paper 2.2, 2.8; spec 4).

Every function works on a batch of B query users with array operations only (Faiss searches are
batched; no per-user Python loop). Each returns a `[B, W]` int64 array of retrieved item ids with
0 in empty slots; an item appears once per retrieval (repeats kept), which is what the counting
score `s_i` counts.
"""

from __future__ import annotations

import numpy as np

from mic_tf.evaluation.retrieval import ItemIndex, _sort_by_score
from mic_tf.inference.datastore import Datastore, reduce_users
from mic_tf.utils.vectors import drop_self


def u2i(ds: Datastore, queries: np.ndarray, k1: int) -> np.ndarray:
    """U2I: the top `k1` items by the basic model's own score (spec 4): the inner product for a
    dot-product datastore (`ds.item_score == "dot"`, ComiRec's evaluation), the cosine for a
    cosine one.

    Args:
      ds: the datastore.
      queries: `[B, D]` or `[B, K, D]` user vectors (normalised here for a cosine datastore).
        Multi-interest: each interest retrieves its own top k1, the pool keeps each item's best
        score (max over interests) and is cut to k1 (ties by smaller item id, as in
        `ItemIndex.search`).
      k1: number of items, >= 0.

    Returns:
      `[B, min(k1, N)]` item ids, best first (0 = empty: only with approximate indexes).
    """
    q = ds.query_vectors(queries)
    if k1 <= 0:
        return np.zeros((len(q), 0), np.int64)
    if q.ndim == 2:
        scores, items = ds.search_items(q, k1)
        tied = np.flatnonzero((scores[:, 1:] == scores[:, :-1]).any(axis=1))
        if len(tied):
            scores[tied], items[tied] = _sort_by_score(scores[tied], items[tied])
        return items
    b, k, d = q.shape
    scores, items = ds.search_items(q.reshape(b * k, d), k1)
    width = scores.shape[1]
    scores, items = scores.reshape(b, k * width), items.reshape(b, k * width)
    if k > 1:
        scores, items = ItemIndex._keep_best_copy(scores, items)
    scores, items = _sort_by_score(scores, items)
    return items[:, :width]


def u2u(ds: Datastore, queries: np.ndarray, m1: int, m2: int) -> tuple[np.ndarray, np.ndarray]:
    """U2U: the `m1` most similar training users and, from each, their last `m2` items.

    The query is reduced to one unit vector (`reduce_users`: multi-interest -> renormalised mean
    of normalised interests) and searched in the user index. Users with fewer than m2 items give
    what they have. Items are kept with repeats (an item in several neighbours' histories, or
    twice in one history's tail, is retrieved several times).

    Args:
      ds: the datastore.
      queries: `[B, D]` or `[B, K, D]`.
      m1: neighbours per query, m2: items per neighbour.

    Returns:
      `(items, neighbours)`: `[B, m1' * m2]` item ids (neighbour-major, each neighbour's items
      oldest first, 0 = empty) and `[B, m1']` training-user indices (-1 = missing),
      m1' = min(m1, U).
    """
    q = reduce_users(queries)
    if m1 <= 0 or m2 <= 0:
        return np.zeros((len(q), 0), np.int64), np.full((len(q), 0), -1, np.int64)
    _, neighbours = ds.search_users(q, m1)
    valid = neighbours >= 0
    safe = np.where(valid, neighbours, 0)
    starts, ends = ds.history_offsets[safe], ds.history_offsets[safe + 1]  # [B, m1']
    pos = ends[..., None] - m2 + np.arange(m2)  # [B, m1', m2] the last m2 positions
    ok = valid[..., None] & (pos >= starts[..., None])
    items = np.where(ok, ds.history_items[np.clip(pos, 0, max(len(ds.history_items) - 1, 0))]
                     if len(ds.history_items) else 0, 0)
    return items.reshape(len(q), neighbours.shape[1] * m2).astype(np.int64), neighbours


def last_items(histories: np.ndarray, m: int) -> np.ndarray:
    """The last `m` non-padding items of every row, `[B, min(m, L)]`, oldest first, right-padded
    with 0 (rows with fewer real items give what exists)."""
    h = np.asarray(histories, dtype=np.int64)
    if h.ndim != 2:
        raise ValueError(f"histories must be [B, L], got shape {h.shape}")
    width = min(max(m, 0), h.shape[1])
    real = h != 0
    from_end = np.cumsum(real[:, ::-1], axis=1)[:, ::-1]  # real items at or after each position
    keep = real & (from_end <= width)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    return np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(h, order, 1), 0)


def i2i(ds: Datastore, histories: np.ndarray, m: int, m3: int) -> np.ndarray:
    """I2I: for each of the last `m` history items, its `m3` most similar items by cosine
    (itself excluded), whatever the U2I geometry.

    With a precomputed table (`Datastore.build_item_neighbours`, width >= m3) the neighbours are
    read from it; otherwise the distinct items of the batch are searched once (m3 + 1 neighbours
    each); the item itself
    is dropped where found, otherwise the last neighbour is dropped, so each item gives
    min(m3, N - 1) neighbours. A repeated history item is retrieved once per occurrence.

    Args:
      ds: the datastore.
      histories: `[B, L]` item ids, right-padded with 0.
      m: history items used, m3: neighbours per item.

    Returns:
      `[B, m' * m3']` item ids (history-item-major, best first, 0 = empty), m' = min(m, L),
      m3' = min(m3, N - 1).
    """
    recent = last_items(histories, m)  # [B, m']
    b, width = recent.shape
    m3 = min(max(m3, 0), ds.num_items - 1)
    if width == 0 or m3 == 0:
        return np.zeros((b, 0), np.int64)
    table = ds.item_neighbours
    if table is not None and table.shape[1] >= m3:  # precomputed (serving): a row gather
        return table[recent, :m3].astype(np.int64).reshape(b, width * m3)
    uniq, inverse = np.unique(recent, return_inverse=True)
    inverse = inverse.reshape(recent.shape)
    _, nbrs = ds.search_similar_items(ds.item_unit[uniq], m3 + 1)  # [Q, m3 + 1] (0's row unused)
    if nbrs.shape[1] < m3 + 1:
        nbrs = np.pad(nbrs, ((0, 0), (0, m3 + 1 - nbrs.shape[1])))
    nbrs = drop_self(nbrs, uniq)
    nbrs[uniq == 0] = 0
    return nbrs[inverse].reshape(b, width * m3) if b else np.zeros((0, width * m3), np.int64)
