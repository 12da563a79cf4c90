"""One evaluation of an `EvalSplit`: full-catalogue retrieval, then the ranking metrics."""

from __future__ import annotations

import numpy as np

from mic_tf.data.dataset import EvalSplit
from mic_tf.evaluation.metrics import validate_cutoffs, ranking_metrics
from mic_tf.utils.faiss_index import ItemIndex


def drop_history(items: np.ndarray, histories: np.ndarray, top_n: int) -> np.ndarray:
    """Removes each user's history items from their ranked list, keeping the order of the rest.

    Args:
      items: `[U, M]` int ranked item ids (0 = empty slot), M >= top_n.
      histories: `[U, L]` int history item ids, right-padded with 0.
      top_n: length of the returned lists.

    Returns:
      `[U, top_n]` int64: the first top_n items of each row that are not in that user's history,
      0-padded when fewer remain.
    """
    items = np.asarray(items, dtype=np.int64)
    histories = np.asarray(histories, dtype=np.int64)
    num_users = len(items)
    stride = np.int64(max(int(items.max(initial=0)), int(histories.max(initial=0))) + 1)
    users = np.arange(num_users, dtype=np.int64)
    seen = np.unique((users[:, None] * stride + histories)[histories != 0])  # sorted (user, item)
    keys = users[:, None] * stride + items
    if len(seen):
        pos = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
        drop = (seen[pos] == keys) | (items == 0)
    else:
        drop = items == 0
    # A stable sort of the drop flags moves kept items first without reordering them.
    order = np.argsort(drop, axis=1, kind="stable")[:, :top_n]
    kept = np.take_along_axis(items, order, 1)
    kept[np.take_along_axis(drop, order, 1)] = 0
    if kept.shape[1] < top_n:
        kept = np.pad(kept, ((0, 0), (0, top_n - kept.shape[1])))
    return kept


def evaluate(user_vectors, index: ItemIndex, split: EvalSplit, item_category, top_n: int = 50,
             cutoffs=(20, 50), *, exclude_history: bool = False, batch_size: int = 8192):
    """Retrieves every user's top_n items and computes the ranking metrics (ComiRec protocol).

    Args:
      user_vectors: `[U, D]` or `[U, K, D]` (multi-interest) user representations, row j for
        user j of `split`.
      index: the `ItemIndex` over the item representations.
      split: the valid or test users (`EvalSplit`); supplies the targets and, with
        `exclude_history`, the histories.
      item_category: `[N + 1]` int category of every item id, for diversity.
      top_n: length of the ranked lists; must be >= max(cutoffs).
      cutoffs: the K of the @K metrics.
      exclude_history: drop items of the user's (truncated) history from the list. Off by
        default, as in ComiRec's protocol (spec 5). When on, top_n + L items are retrieved so the
        list is still the exact top_n of the remaining catalogue.
      batch_size: queries per Faiss call.

    Returns:
      `(metrics, ranked)`: the dict of `ranking_metrics` (floats in [0, 1], nothing else) and the
      `[U, top_n]` int64 ranked item ids (0 = empty slot) that produced it.
    """
    cutoffs = validate_cutoffs(cutoffs)
    if isinstance(top_n, bool) or int(top_n) != top_n or top_n < cutoffs[-1]:
        raise ValueError(f"top_n must be an int >= the largest cutoff {cutoffs[-1]}, got {top_n!r}")
    user_vectors = np.asarray(user_vectors)
    if user_vectors.ndim not in (2, 3) or len(user_vectors) != len(split):
        raise ValueError(f"user_vectors must be [U, D] or [U, K, D] with U = {len(split)} users of "
                         f"the split, got shape {user_vectors.shape}")
    if exclude_history:
        extra = split.histories.shape[1]
        _, items = index.search(user_vectors, int(top_n) + extra, batch_size=batch_size)
        ranked = drop_history(items, split.histories, int(top_n))
    else:
        _, ranked = index.search(user_vectors, int(top_n), batch_size=batch_size)
    metrics = ranking_metrics(ranked, split.targets, split.target_offsets, item_category, cutoffs)
    return metrics, ranked
