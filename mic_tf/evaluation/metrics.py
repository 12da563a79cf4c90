"""Top-N ranking metrics (ComiRec's protocol) and Wang & Isola's alignment / uniformity.

Every metric is computed per user, then averaged over ALL evaluated users (a user without a hit
counts 0), exactly as ComiRec's `evaluate_full` divides by the total number of users. The per-user
computations are vectorised over users: (user, item) pairs are encoded as one int64 key
`user * stride + item`, so "is item i among user u's targets" becomes a single sorted search.

Definitions (R = the ranked list truncated to K, T = the user's target list, duplicates kept):
  hits                 = #{p : R[p] != 0 and R[p] in set(T)}
  recall@K             = hits / len(T)                     (len counts duplicate targets)
  hit_rate@K           = 1[hits > 0]
  ndcg@K               = DCG / IDCG(min(#distinct(T), K)), DCG = sum_{hit p} 1 / log2(p + 2)
  ndcg_comirec@K       = DCG / IDCG(hits)                  (ComiRec master; 0 without hits)
  ndcg_comirec_paper@K = sum_{no : T[no] in set(R)} 1 / log2(no + 2) / IDCG(h),
                         h = #{no : T[no] in set(R)}      (ComiRec `paper` branch)
  diversity@K          = fraction of unordered pairs of non-empty items of R whose categories
                         differ (0 when R has fewer than two non-empty items)
with IDCG(n) = sum_{j < n} 1 / log2(j + 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Rows of the [B, K, K] pairwise-category block processed at once by `_diversity`: ~4M booleans
# per temporary keeps the peak memory in the tens of MB whatever the number of users.
_DIVERSITY_BLOCK = 4_000_000
# Row chunk of the Gram matrix in `uniformity`: [chunk, n] float64 with n <= max_rows.
_UNIFORMITY_CHUNK = 512
# Normalisation floor, as torch.nn.functional.normalize (Wang & Isola's and DirectAU's code).
_NORM_EPS = 1e-12

METRIC_NAMES = ("recall", "hit_rate", "ndcg", "ndcg_comirec", "ndcg_comirec_paper", "diversity")


def _discounts(n: int) -> np.ndarray:
    """`[n]` float64 position discounts 1 / log2(p + 2) for p = 0..n-1."""
    return 1.0 / np.log2(np.arange(n, dtype=np.float64) + 2.0)


def _idcg_table(n: int) -> np.ndarray:
    """`[n + 1]` float64: entry m is IDCG over m positions (entry 0 is 0)."""
    table = np.zeros(n + 1, dtype=np.float64)
    np.cumsum(_discounts(n), out=table[1:])
    return table


def validate_cutoffs(cutoffs: Sequence[int]) -> tuple[int, ...]:
    """Returns the distinct cutoffs sorted ascending; ValueError unless all are positive ints."""
    try:
        values = tuple(sorted({int(k) for k in cutoffs}))
    except TypeError as e:
        raise ValueError(f"cutoffs must be a sequence of positive ints, got {cutoffs!r}") from e
    if not values or values[0] < 1 or any(int(k) != k for k in cutoffs):
        raise ValueError(f"cutoffs must be a non-empty sequence of positive ints, got {cutoffs!r}")
    return values


def _check_ranking_inputs(ranked, targets, target_offsets, item_category, kmax):
    """Converts and validates the inputs of `ranking_metrics`; raises ValueError on any misuse."""
    ranked = np.asarray(ranked)
    targets = np.asarray(targets)
    offsets = np.asarray(target_offsets)
    item_category = np.asarray(item_category)
    for name, arr, ndim in (("ranked", ranked, 2), ("targets", targets, 1),
                            ("target_offsets", offsets, 1), ("item_category", item_category, 1)):
        if arr.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    num_users, n = ranked.shape
    if num_users == 0:
        raise ValueError("ranked has no rows: there are no users to evaluate")
    if n < kmax:
        raise ValueError(f"ranked has {n} columns but the largest cutoff is {kmax}; retrieve at "
                         f"least top_n = {kmax} items")
    if len(offsets) != num_users + 1:
        raise ValueError(f"target_offsets must have len(ranked) + 1 = {num_users + 1} entries, "
                         f"got {len(offsets)}")
    if offsets[0] != 0 or offsets[-1] != len(targets):
        raise ValueError(f"target_offsets must start at 0 and end at len(targets) = "
                         f"{len(targets)}, got {offsets[0]} .. {offsets[-1]}")
    lengths = np.diff(offsets.astype(np.int64))
    if (lengths < 0).any():
        raise ValueError("target_offsets must be non-decreasing")
    if (lengths == 0).any():
        empty = np.flatnonzero(lengths == 0)
        raise ValueError(f"{len(empty)} user(s) have no target (first rows: {empty[:5].tolist()}); "
                         f"recall is undefined for them: drop them from the split before "
                         f"evaluating")
    num_ids = len(item_category)
    if targets.min() < 1 or targets.max() >= num_ids:
        raise ValueError(f"targets must be item ids in [1, {num_ids - 1}] (item_category has "
                         f"{num_ids} rows), got range [{targets.min()}, {targets.max()}]")
    head = ranked[:, :kmax].astype(np.int64)
    if head.min() < 0 or head.max() >= num_ids:
        raise ValueError(f"ranked must hold item ids in [0, {num_ids - 1}] (0 = empty slot), got "
                         f"range [{head.min()}, {head.max()}]")
    # A repeated item would be counted as several hits and push recall above 1.
    srt = np.sort(head, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] != 0)
    if dup.any():
        row = int(np.flatnonzero(dup.any(axis=1))[0])
        raise ValueError(f"ranked row {row} recommends the same item twice; a ranked list must "
                         f"hold distinct items (0 may repeat)")
    return head, targets.astype(np.int64), offsets.astype(np.int64), lengths, item_category


def _diversity(cats: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Counts, for every prefix, the pairs of valid items with different categories.

    Args:
      cats: `[U, K]` category of each ranked slot.
      valid: `[U, K]` bool, False for empty slots.

    Returns:
      `[U, K]` int64: entry `[u, p]` is the number of pairs i < j <= p, both valid, whose
      categories differ. One pass therefore serves every cutoff.
    """
    num_users, k = cats.shape
    lower = np.tril(np.ones((k, k), dtype=bool), -1)  # pairs (p, q) with q < p
    out = np.empty((num_users, k), dtype=np.int64)
    chunk = max(1, _DIVERSITY_BLOCK // (k * k))
    for start in range(0, num_users, chunk):  # chunks of users, not a per-user loop
        c, v = cats[start:start + chunk], valid[start:start + chunk]
        differ = (c[:, :, None] != c[:, None, :]) & v[:, :, None] & v[:, None, :] & lower
        np.cumsum(differ.sum(axis=2), axis=1, out=out[start:start + chunk])
    return out


def ranking_metrics(ranked, targets, target_offsets, item_category, cutoffs=(20, 50),
                    per_user: bool = False):
    """Recall, hit rate, three NDCGs and diversity at each cutoff, averaged over all users.

    Args:
      ranked: `[U, N]` int item ids, best first, `N >= max(cutoffs)`. 0 marks an empty slot (fewer
        than N recommendations); it never counts as a hit nor in diversity. The non-zero items of
        a row must be distinct.
      targets: `[T]` int target item ids (>= 1) of all users concatenated, duplicates kept.
      target_offsets: `[U + 1]` int CSR offsets: user u's targets are
        `targets[target_offsets[u]:target_offsets[u + 1]]`. Every user needs >= 1 target.
      item_category: `[N_items + 1]` int category of every item id. Category 0 ("no category") is
        an ordinary value: two uncategorised items count as the same category.
      cutoffs: the K values (each <= N).
      per_user: also return the `[U]` float64 per-user values.

    Returns:
      A dict `{"recall@K": float, "hit_rate@K": ..., "ndcg@K": ..., "ndcg_comirec@K": ...,
      "ndcg_comirec_paper@K": ..., "diversity@K": ...}` for each K, every value a mean over the U
      users in [0, 1]. With `per_user=True`, a tuple `(that dict, dict of [U] arrays)`.

    Raises:
      ValueError: on wrong shapes or dtypes, ids out of range, a repeated item in a row of
        `ranked`, or a user with no target.
    """
    cutoffs = validate_cutoffs(cutoffs)
    kmax = cutoffs[-1]
    ranked, targets, offsets, lengths, item_category = _check_ranking_inputs(
        ranked, targets, target_offsets, item_category, kmax)
    num_users = ranked.shape[0]
    users = np.arange(num_users, dtype=np.int64)
    stride = np.int64(len(item_category))  # > every item id, so keys never collide across users

    owner = np.repeat(users, lengths)  # [T] user of each target
    target_keys = owner * stride + targets  # [T]
    # Sort + adjacent compare instead of np.unique: numpy 2's hash-based unique is ~5x slower here.
    distinct_keys = np.sort(target_keys)
    distinct_keys = distinct_keys[np.r_[True, distinct_keys[1:] != distinct_keys[:-1]]]  # [T']
    num_distinct = np.bincount(distinct_keys // stride, minlength=num_users)  # [U]

    # hit[u, p]: is ranked[u, p] among u's targets. Targets are >= 1, so an empty slot (item 0)
    # can never match.
    ranked_keys = users[:, None] * stride + ranked  # [U, kmax]
    pos = np.minimum(np.searchsorted(distinct_keys, ranked_keys), len(distinct_keys) - 1)
    hit = distinct_keys[pos] == ranked_keys  # [U, kmax]
    disc = _discounts(kmax)
    hits_upto = np.cumsum(hit, axis=1)  # [U, kmax] hits among the first p + 1 slots
    dcg_upto = np.cumsum(hit * disc, axis=1)

    # For the `paper` NDCG: the rank of every target element in its user's list (kmax if absent).
    # Rows hold distinct items, so each non-empty (user, item) key appears at most once.
    filled = ranked != 0
    slot_keys = ranked_keys[filled]
    slot_rank = np.broadcast_to(np.arange(kmax), ranked.shape)[filled]
    order = np.argsort(slot_keys, kind="stable")
    slot_keys, slot_rank = slot_keys[order], slot_rank[order]
    if len(slot_keys):
        j = np.minimum(np.searchsorted(slot_keys, target_keys), len(slot_keys) - 1)
        target_rank = np.where(slot_keys[j] == target_keys, slot_rank[j], kmax)  # [T]
    else:
        target_rank = np.full(len(targets), kmax)
    within = np.arange(len(targets)) - offsets[owner]  # [T] position of the target in T
    target_disc = _discounts(int(lengths.max()))[within]

    idcg = _idcg_table(max(kmax, int(lengths.max())))
    diff_pairs = _diversity(item_category[ranked], filled)  # [U, kmax]
    valid_upto = np.cumsum(filled, axis=1)

    means, values = {}, {}
    for k in cutoffs:
        hits = hits_upto[:, k - 1].astype(np.float64)
        dcg = dcg_upto[:, k - 1]
        # Standard NDCG: the ideal list puts min(#distinct targets, K) hits on top. Distinct,
        # because duplicate targets can only be retrieved once: with len(T) the perfect ranking
        # of a user with repeated targets would score below 1.
        ideal = idcg[np.minimum(num_distinct, k)]
        with np.errstate(divide="ignore", invalid="ignore"):
            ndcg_comirec = np.where(hits > 0, dcg / idcg[hits.astype(np.int64)], 0.0)
        in_list = target_rank < k  # [T] is T[no] in set(R[:K])
        h = np.bincount(owner, weights=in_list, minlength=num_users).astype(np.int64)
        dcg_paper = np.bincount(owner, weights=in_list * target_disc, minlength=num_users)
        with np.errstate(divide="ignore", invalid="ignore"):
            ndcg_paper = np.where(h > 0, dcg_paper / idcg[h], 0.0)
        n = valid_upto[:, k - 1]
        pairs = n * (n - 1) // 2
        with np.errstate(divide="ignore", invalid="ignore"):
            diversity = np.where(pairs > 0, diff_pairs[:, k - 1] / pairs, 0.0)
        per = {"recall": hits / lengths, "hit_rate": (hits > 0).astype(np.float64),
               "ndcg": dcg / ideal, "ndcg_comirec": ndcg_comirec,
               "ndcg_comirec_paper": ndcg_paper, "diversity": diversity}
        for name in METRIC_NAMES:
            values[f"{name}@{k}"] = per[name]
            means[f"{name}@{k}"] = float(per[name].mean())
    return (means, values) if per_user else means


def _as_matrix(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty [n, d] matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or inf values")
    return x


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    # Same floor as torch's F.normalize: an all-zero row stays zero instead of becoming NaN.
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), _NORM_EPS)


def alignment(x, y, alpha: float = 2) -> float:
    """Wang & Isola's alignment: `mean_i ||x_i - y_i||_2^alpha` after L2-normalising every row.

    Args:
      x: `[n, d]` first elements of the positive pairs (e.g. users).
      y: `[n, d]` second elements (e.g. each user's target item), row-aligned with `x`.
      alpha: the exponent (2 in the paper).

    Returns:
      The alignment loss, in [0, 2**alpha]; lower means positives are closer.
    """
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    diff = _l2_normalize(x) - _l2_normalize(y)
    return float(np.mean(np.linalg.norm(diff, axis=1) ** alpha))


def uniformity(x, t: float = 2, max_rows: int = 4096, seed: int = 0) -> float:
    """Wang & Isola's uniformity: `log mean_{i<j} exp(-t ||x_i - x_j||^2)` on L2-normalised rows.

    Only distinct pairs i < j enter the mean (as `torch.pdist` in the reference code). With more
    than `max_rows` rows, `max_rows` of them are drawn without replacement with
    `np.random.default_rng(seed)`, so the value is deterministic and costs O(max_rows^2).

    Args:
      x: `[n, d]` representations, n >= 2.
      t: the temperature (2 in the paper).
      max_rows: row budget of the pairwise computation.
      seed: seed of the row subsample.

    Returns:
      The uniformity loss (<= 0; lower means more uniform on the sphere).
    """
    x = _as_matrix(x, "x")
    if len(x) < 2:
        raise ValueError(f"uniformity needs at least 2 rows, got {len(x)}")
    if max_rows < 2:
        raise ValueError(f"max_rows must be >= 2, got {max_rows}")
    if len(x) > max_rows:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_rows, replace=False))]
    x = _l2_normalize(x)
    n = len(x)
    sq_norm = np.einsum("ij,ij->i", x, x)  # 1, or 0 for an all-zero row
    # Running log-sum-exp over row chunks, so a large t cannot underflow every term to 0.
    running_max, running_sum = -np.inf, 0.0
    for start in range(0, n - 1, _UNIFORMITY_CHUNK):
        stop = min(start + _UNIFORMITY_CHUNK, n - 1)
        rows = np.arange(start, stop)
        sq = sq_norm[rows, None] + sq_norm[None, :] - 2.0 * (x[rows] @ x.T)  # [b, n]
        logits = -t * np.maximum(sq, 0.0)
        logits = logits[np.arange(n)[None, :] > rows[:, None]]  # pairs i < j only
        chunk_max = logits.max()
        new_max = max(running_max, chunk_max)
        running_sum = running_sum * np.exp(running_max - new_max) + np.exp(logits - new_max).sum()
        running_max = new_max
    num_pairs = n * (n - 1) / 2
    return float(running_max + np.log(running_sum) - np.log(num_pairs))
