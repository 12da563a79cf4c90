"""Candidate counting, MIC's final score (eq. 3-5) and the greedy diversity pick (spec 4).

For each query user, the candidate set `V_C` is the union of the enabled channels' retrievals and
`s_i` counts every retrieval of item i: one per U2I hit, one per (neighbour, history slot) in U2U,
one per (history item, neighbour) in I2I, repeats across channels and neighbours included. Then

    Score(i) = basic(i) + lam_mic * mic(i) + lam_div * div(i)

where `basic` is the basic model's own score p(e_u, e_i) (max over interests): the inner product
for a dot-product model (ComiRec's sampled softmax), the cosine for eq. 9's logistic loss (the
datastore's `item_score`); `mic` is eq. 3's softmax over V_C of the counts; and `div(i)` is
applied greedily as in ComiRec's controllable aggregation: the top N are picked one at a time;
when t items are already picked, div(i) = (number of picked items whose category differs from
i's) / t, and 1 for the first pick. Category 0 (no category) is an ordinary category value.
Eq. 4 of the paper, as printed, is a double sum over V_C that is constant over items; this
softmax-of-counts / greedy reading is the spec's. Ties are broken by the smaller item id.

The three terms live on different scales (an unbounded inner product, a softmax over hundreds
of candidates, a fraction), so two readings the text allows are settings selected on validation
(`InferenceConfig.basic_norm`, `.mic_score`): the basic score min-max scaled to [0, 1] over each
user's V_C, and the counts divided by the user's largest count instead of their softmax. The
printed reading (`basic_norm="none"`, `mic_score="softmax"`) stays the default of the class.
"""

from __future__ import annotations

import dataclasses
import heapq

import numpy as np

from mic_tf.errors import UsageError
from mic_tf.inference import channels, inputs
from mic_tf.inference.datastore import Datastore
from mic_tf.utils.checks import boolean, check_fields, choice, integer, number

CHANNELS = ("u2i", "u2u", "i2i")
BASIC_NORMS = ("none", "minmax")
MIC_SCORES = ("softmax", "max")


@dataclasses.dataclass
class InferenceConfig:
    """Cross-channel inference settings (spec 4 defaults; k1 None means k1 = top_n)."""

    top_n: int = 50
    k1: int | None = None
    m1: int = 40
    m2: int = 60
    m: int = 30
    m3: int = 50
    lam_mic: float = 0.5
    lam_div: float = 0.2
    basic_norm: str = "none"  # "none" (eq. 5 as printed) or "minmax" (per user over V_C)
    mic_score: str = "softmax"  # "softmax" (eq. 3 as printed) or "max" (s_i / max_j s_j)
    use_u2i: bool = True
    use_u2u: bool = True
    use_i2i: bool = True
    score_batch: int = 64  # users per chunk when gathering [b, C, D] candidate vectors

    @classmethod
    def for_ablation(cls, ablation: str | None = None, **overrides) -> "InferenceConfig":
        """Config for "" / None (MIC, all channels) or "-u2u", "-u2i", "-i2i"."""
        cfg = cls(**overrides)
        if ablation:
            name = ablation.lstrip("-")
            if name not in CHANNELS:
                raise UsageError(f"ablation must be one of -u2u, -u2i, -i2i, got {ablation!r}")
            setattr(cfg, f"use_{name}", False)
        return cfg

    def validate(self):
        check_fields(self, INFERENCE_CHECKS)
        if not (self.use_u2i or self.use_u2u or self.use_i2i):
            raise UsageError("no channel is enabled: at least one of use_u2i, use_u2u, use_i2i "
                             "must be true")


# The allowed value of every InferenceConfig field (a new field: one more line). A negative k1
# used to switch U2I off silently; lam_mic or lam_div NaN returned zeros.
INFERENCE_CHECKS = (
    integer("top_n", 1), integer("k1", 0, optional=True), integer("m1", 0), integer("m2", 0),
    integer("m", 0, flag="m_history"), integer("m3", 0), number("lam_mic"), number("lam_div"),
    choice("basic_norm", BASIC_NORMS), choice("mic_score", MIC_SCORES),
    boolean("use_u2i"), boolean("use_u2u"), boolean("use_i2i"), integer("score_batch", 1),
)


@dataclasses.dataclass
class InferenceResult:
    """Output of a batch.

    Attributes:
      items: `[B, N]` ranked item ids, 0 = empty slot (fewer than N candidates).
      scores: `[B, N]` float64 final score at the time of each pick (-inf for empty slots).
      candidates: `[B, C]` distinct candidate ids (V_C) sorted ascending, 0-padded.
      counts: `[B, C]` retrieval counts s_i (0 in padding).
      channels: {"u2i", "u2u", "i2i"} -> `[B, W]` raw retrievals of each enabled channel
        (repeats kept, 0 = empty), for per-channel recall.
    """

    items: np.ndarray
    scores: np.ndarray
    candidates: np.ndarray
    counts: np.ndarray
    channels: dict


def count_candidates(retrieved: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct items of every row and how often each was retrieved.

    Args:
      retrieved: `[B, W]` item ids, 0 = empty.

    Returns:
      `([B, C], [B, C])` distinct ids sorted ascending (0-padded at the end) and counts,
      C = the largest number of distinct items in a row (>= 1 column).
    """
    b, w = retrieved.shape
    if w == 0:
        return np.zeros((b, 1), np.int64), np.zeros((b, 1), np.int64)
    s = np.sort(np.where(retrieved == 0, np.iinfo(np.int64).max, retrieved), axis=1)
    real = s != np.iinfo(np.int64).max
    start = real.copy()
    start[:, 1:] &= s[:, 1:] != s[:, :-1]
    slot = np.cumsum(start, axis=1) - 1  # run index of each position
    c = max(int(start.sum(axis=1).max(initial=0)), 1)
    rows = np.broadcast_to(np.arange(b)[:, None], s.shape)
    cands = np.zeros((b, c), np.int64)
    counts = np.zeros((b, c), np.int64)
    cands[rows[start], slot[start]] = s[start]
    np.add.at(counts, (rows[real], slot[real]), 1)
    return cands, counts


def basic_scores(ds: Datastore, queries: np.ndarray, cands: np.ndarray,
                 chunk: int = 64) -> np.ndarray:
    """The basic model's score p(e_u, e_i) (inner product, or cosine for a cosine datastore),
    max over interests, `[B, C]` float32 (-inf where cands == 0).

    `einsum`'s sum-of-products loop reduces each (user, candidate) pair over D on its own, so a
    user's scores do not depend on the batch it is in or on C (the single-user path gives
    bit-identical values, tested), and it is ~10x faster than a broadcast product + sum.
    """
    q = ds.query_vectors(queries)
    if q.ndim == 2:
        q = q[:, None, :]
    out = np.empty(cands.shape, np.float32)
    for lo in range(0, len(cands), chunk):
        v = ds.item_vectors[cands[lo:lo + chunk]]  # [b, C, D]
        best = None
        for k in range(q.shape[1]):
            s = np.einsum("bcd,bd->bc", v, q[lo:lo + chunk, k])
            best = s if best is None else np.maximum(best, s)
        out[lo:lo + chunk] = best
    out[cands == 0] = -np.inf
    return out


def count_softmax(counts: np.ndarray) -> np.ndarray:
    """Softmax of the counts over each row's candidates (padding, count 0, excluded), float64."""
    valid = counts > 0
    s = counts.astype(np.float64)
    mx = np.where(valid, s, -np.inf).max(axis=1, keepdims=True)
    e = np.where(valid, np.exp(s - np.where(np.isfinite(mx), mx, 0.0)), 0.0)
    # A sequential row sum (cumsum) does not depend on the trailing padding, so a user's values
    # are bit-identical whatever the batch's candidate width C (np.sum's pairwise blocks are not).
    total = np.cumsum(e, axis=1)[:, -1:] if e.shape[1] else np.ones((len(e), 1))
    return e / np.maximum(total, 1e-300)


def max_normalised_counts(counts: np.ndarray) -> np.ndarray:
    """`s_i / max_j s_j` over each row's candidates (0 in padding), float64 in [0, 1]."""
    s = counts.astype(np.float64)
    return s / np.maximum(s.max(axis=1, keepdims=True), 1.0)


def minmax_rows(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each row's valid scores scaled to [0, 1] by its min and max (all 1 when they are equal);
    padding stays -inf. Exact per row, so a user's values do not depend on its batch."""
    lo = np.where(valid, scores, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    safe = np.where(np.isfinite(span) & (span > 0), span, 1.0)
    scaled = np.where(span > 0, (scores - lo) / safe, 1.0)
    return np.where(valid, scaled, -np.inf)


def _prune(base, cands, categories, top_n: int, lam_div: float, penalty: str = "fraction"):
    """Drops candidates that cannot be among the first `top_n` picks (exact, not a heuristic).

    The diversity term lies in [0, 1] (times lam_div). While fewer than `top_n` items are picked, at least one
    of the `top_n` best-by-`base` candidates is still available, with a total >= the row's
    `top_n`-th best base B_N; so a candidate whose base + lam_div < B_N is never picked. Kept
    candidates stay in ascending-id order, so ties still go to the smaller id.
    """
    valid = cands != 0
    c = cands.shape[1]
    if c <= top_n:
        return base, cands, categories
    masked = np.where(valid, base, -np.inf)
    kth = -np.partition(-masked, top_n - 1, axis=1)[:, top_n - 1:top_n]  # B_N per row
    span = 1 if penalty == "fraction" else max(top_n - 1, 0)  # range of the diversity term
    keep = valid & (masked >= kth - abs(lam_div) * span)  # |lam_div| covers a negative weight
    width = int(keep.sum(axis=1).max())
    if width >= c:
        return base, cands, categories
    order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    kept = np.take_along_axis(keep, order, 1)
    return (np.take_along_axis(base, order, 1), np.where(kept, np.take_along_axis(cands, order, 1), 0),
            np.take_along_axis(categories, order, 1))


def greedy_pick(base: np.ndarray, cands: np.ndarray, categories: np.ndarray, top_n: int,
                lam_div: float, prune: bool = True, penalty: str = "fraction"
                ) -> tuple[np.ndarray, np.ndarray]:
    """Picks top_n items per row, one at a time, adding lam_div * diversity (vectorised over B).

    `penalty="fraction"` is MIC's term (spec 4): the share of picked items in other categories.
    `penalty="count"` is ComiRec's controllable aggregation as coded in its evaluation:
    `base - lam_div * (picked items in the same category)` (used for the baseline of Figure 4).

    Args:
      base: `[B, C]` float64 cos + lam_mic * Score_MIC.
      cands: `[B, C]` candidate ids sorted ascending (0 = padding); argmax's first-max rule then
        breaks ties by the smaller id.
      categories: `[B, C]` category of each candidate.
      top_n: N.
      lam_div: weight of the diversity term.
      prune: first drop candidates that provably cannot be picked (same result, faster).
      penalty: "fraction" (MIC) or "count" (ComiRec).

    Returns:
      `[B, N]` picked ids (0 = empty) and `[B, N]` their scores at pick time (-inf empty).
    """
    if penalty not in ("fraction", "count"):
        raise ValueError(f"penalty must be 'fraction' or 'count', got {penalty!r}")
    if prune:
        base, cands, categories = _prune(base, cands, categories, top_n, lam_div, penalty)
    b, c = cands.shape
    available = cands != 0
    same = np.zeros((b, c), np.int64)  # picked items sharing each candidate's category
    rows = np.arange(b)
    items = np.zeros((b, top_n), np.int64)
    scores = np.full((b, top_n), -np.inf)
    for t in range(top_n):
        if penalty == "count":
            div = -same
        else:
            div = 1.0 if t == 0 else (t - same) / t
        total = np.where(available, base + lam_div * div, -np.inf)
        j = np.argmax(total, axis=1)
        ok = available[rows, j]
        if not ok.any():
            break
        items[ok, t] = cands[rows, j][ok]
        scores[ok, t] = total[rows, j][ok]
        available[rows[ok], j[ok]] = False
        same += ok[:, None] & (categories == categories[rows, j][:, None])
    return items, scores


def greedy_pick_one(base: np.ndarray, cands: np.ndarray, categories: np.ndarray, top_n: int,
                    lam_div: float) -> tuple[np.ndarray, np.ndarray]:
    """`greedy_pick` for ONE row, in O(N * distinct-pick-counts) Python steps (online serving).

    Within a category every candidate gets the same diversity term, so only each category's best
    remaining candidate (largest base, then smallest id) can be picked; categories from which k
    items were already picked all carry the same term `(t - k) / t`, so per k a heap of category
    heads gives the best one. A step compares one head per distinct k (at most ~sqrt(2N) of them)
    instead of scanning every candidate. Same float arithmetic and tie rule (smaller id) as
    `greedy_pick`, so the picks and scores are identical (tested).

    Args:
      base: `[C]` float64; cands: `[C]` ids (0 = padding); categories: `[C]`.

    Returns:
      `[N]` picked ids (0 = empty) and `[N]` scores at pick time (-inf empty).
    """
    real = cands != 0
    base, cands, categories = base[real], cands[real], categories[real]
    order = np.lexsort((cands, -base, categories))  # by category, then best base, then id
    base_l, cand_l = base[order].tolist(), cands[order].tolist()
    cat_sorted = categories[order]
    head = np.flatnonzero(np.diff(cat_sorted, prepend=cat_sorted[:1] - 1)).tolist()  # group starts
    ends = head[1:] + [len(order)]
    # groups[k]: heap of (-head base, head id, category slot) for categories with k picks
    first = [(-base_l[s], cand_l[s], g) for g, s in enumerate(head)]
    heapq.heapify(first)
    groups = {0: first} if first else {}
    picked_ids, picked_scores = [], []
    heappop, heappush = heapq.heappop, heapq.heappush
    for t in range(top_n):
        best_total = best_cid = best_k = None
        for k, heap in groups.items():  # empty heaps are dropped, so every heap has a head
            neg_b, cid, _ = heap[0]
            total = -neg_b + lam_div * (1.0 if t == 0 else (t - k) / t)
            if (best_total is None or total > best_total
                    or (total == best_total and cid < best_cid)):
                best_total, best_cid, best_k = total, cid, k
        if best_total is None:
            break
        heap = groups[best_k]
        g = heappop(heap)[2]
        if not heap:
            del groups[best_k]
        picked_ids.append(best_cid)
        picked_scores.append(best_total)
        head[g] += 1
        if head[g] < ends[g]:
            nxt = groups.get(best_k + 1)
            if nxt is None:
                nxt = groups[best_k + 1] = []
            heappush(nxt, (-base_l[head[g]], cand_l[head[g]], g))
    items = np.zeros(top_n, np.int64)
    scores = np.full(top_n, -np.inf)
    items[:len(picked_ids)] = picked_ids
    scores[:len(picked_scores)] = picked_scores
    return items, scores


def retrieve(ds: Datastore, q: np.ndarray, h: np.ndarray, cfg: InferenceConfig,
             exclude_users: np.ndarray | None = None) -> dict:
    """The enabled channels' raw retrievals, `{"u2i" | "u2u" | "i2i": [B, W] item ids}` (0 =
    empty, repeats kept); `exclude_users` (`[B]` training-user index or -1) is passed to U2U."""
    retrieved = {}
    if cfg.use_u2i:
        retrieved["u2i"] = channels.u2i(ds, q, cfg.top_n if cfg.k1 is None else cfg.k1)
    if cfg.use_u2u:
        retrieved["u2u"] = channels.u2u(ds, q, cfg.m1, cfg.m2, exclude=exclude_users)[0]
    if cfg.use_i2i:
        retrieved["i2i"] = channels.i2i(ds, h, cfg.m, cfg.m3)
    return retrieved


def score_retrieved(ds: Datastore, q: np.ndarray, retrieved: dict, cfg: InferenceConfig):
    """The counts and `basic + lam_mic * Score_MIC` of given retrievals.

    Args:
      ds: the datastore (item vectors, geometry).
      q: `[B, D]` or `[B, K, D]` query vectors.
      retrieved: channel name -> `[B, W]` retrieved item ids (0 = empty); the channels' order
        does not matter (the candidates are sorted by id).
      cfg: the lambdas and readings (`basic_norm`, `mic_score`).

    Returns:
      `(cands [B, C], counts [B, C], base [B, C] float64)`.
    """
    parts = list(retrieved.values()) or [np.zeros((len(q), 0), np.int64)]
    cands, counts = count_candidates(np.concatenate(parts, axis=1))
    base = basic_scores(ds, q, cands, cfg.score_batch).astype(np.float64)
    if cfg.basic_norm == "minmax":
        base = minmax_rows(base, cands != 0)
    if cfg.lam_mic:
        mic = count_softmax(counts) if cfg.mic_score == "softmax" else max_normalised_counts(counts)
        base = base + cfg.lam_mic * mic
    return cands, counts, base


def pick(ds: Datastore, base: np.ndarray, cands: np.ndarray, cfg: InferenceConfig,
         online: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The greedy diversity pick of `[B, C]` scored candidates -> `[B, N]` items and scores;
    `online` picks each row with `greedy_pick_one` (same result, fewer steps for one user)."""
    categories = ds.item_category[cands]
    if not online:
        return greedy_pick(base, cands, categories, cfg.top_n, cfg.lam_div)
    picked = [greedy_pick_one(*(x[0] for x in _prune(base[r:r + 1], cands[r:r + 1],
                                                       categories[r:r + 1], cfg.top_n,
                                                       cfg.lam_div)), cfg.top_n, cfg.lam_div)
              for r in range(len(cands))]
    items = np.stack([p[0] for p in picked]).reshape(len(cands), cfg.top_n)
    scores = np.stack([p[1] for p in picked]).reshape(len(cands), cfg.top_n)
    return items, scores


def rank_retrieved(ds: Datastore, queries, retrieved: dict, config: InferenceConfig,
                   online: bool = False) -> InferenceResult:
    """MIC's merge (eq. 3-5) of retrievals gathered elsewhere (the online service reads U2U and
    I2I from Redis): the same counting, scores and greedy pick as `recommend`.

    Args:
      ds: the datastore; queries: `[B, D]` or `[B, K, D]`; retrieved: channel -> `[B, W]`.
      config: the settings (`top_n`, lambdas, readings); online: see `pick`.
    """
    config.validate()
    return _rank(ds, np.asarray(queries, dtype=np.float32), retrieved, config, online)


def _rank(ds: Datastore, q: np.ndarray, retrieved: dict, cfg: InferenceConfig,
          online: bool) -> InferenceResult:
    """Scores and picks validated retrievals (the common tail of `recommend` and
    `rank_retrieved`)."""
    cands, counts, base = score_retrieved(ds, q, retrieved, cfg)
    items, scores = pick(ds, base, cands, cfg, online)
    return InferenceResult(items, scores, cands, counts, retrieved)


def recommend(ds: Datastore, queries, histories, config: InferenceConfig | None = None,
              online: bool = False, exclude_users=None) -> InferenceResult:
    """Cross-channel recommendation for a batch of query users.

    Args:
      ds: the datastore (training users, items, histories, categories).
      queries: `[B, D]` or `[B, K, D]` query-user vectors e_u (normalised here).
      histories: `[B, L]` item ids, right-padded with 0 (L may be 0).
      config: channel switches, sizes and lambdas (defaults: MIC, spec 4).
      online: pick each row with `greedy_pick_one` (fewer steps for one user; same result)
        instead of the vectorised scan (fewer steps per user for a batch).
      exclude_users: optional `[B]` training-user indices (-1 = none) that U2U must not return
        as their own neighbour (a query user who is in the user datastore).

    Returns:
      An `InferenceResult` with the ranked `[B, N]` items and the per-channel retrievals.
    """
    cfg = config or InferenceConfig()
    cfg.validate()
    q = inputs.as_vectors("queries", queries)  # checked before any cast (no 2.7 -> 2, "3" -> 3)
    h = inputs.as_item_ids("histories", histories)
    if q.ndim not in (2, 3) or q.shape[-1] != ds.dim:
        raise UsageError(f"queries must be [B, {ds.dim}] or [B, K, {ds.dim}], got {q.shape}")
    if h.ndim != 2 or len(h) != len(q):
        raise UsageError(f"histories must be [B = {len(q)}, L], got {h.shape}")
    if len(h) and h.size and (h.min() < 0 or h.max() > ds.num_items):
        raise UsageError(f"history ids must be in 0..{ds.num_items}")
    if exclude_users is not None:
        exclude_users = np.asarray(exclude_users, dtype=np.int64).reshape(-1)
        if exclude_users.shape != (len(q),):
            raise UsageError(f"exclude_users must be [B = {len(q)}], got {exclude_users.shape}")
    return _rank(ds, q, retrieve(ds, q, h, cfg, exclude_users), cfg, online)


class CrossChannelInference:
    """Batch and online (single-user) cross-channel inference over one datastore.

    Args:
      datastore: a built or loaded `Datastore` (its indexes are reused; nothing is rebuilt).
      config: an `InferenceConfig` (defaults: MIC, spec 4).
    """

    def __init__(self, datastore: Datastore, config: InferenceConfig | None = None):
        self.datastore = datastore
        self.config = config or InferenceConfig()
        self.config.validate()

    def recommend(self, queries, histories) -> InferenceResult:
        """Batch path: `[B, D]` / `[B, K, D]` queries and `[B, L]` histories (see `recommend`)."""
        return recommend(self.datastore, queries, histories, self.config)

    def recommend_one(self, query, history, exclude_user: int = -1
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Online path for one user: the batch path with B = 1.

        Args:
          query: `[D]` or `[K, D]` user vector(s).
          history: `[L]` item ids (0s are ignored).
          exclude_user: the user's own training-user index when it is in the user datastore
            (U2U then skips it), -1 otherwise.

        Returns:
          `[N]` ranked item ids (0 = empty) and `[N]` scores, identical to the user's row of
          the batch path (see BUILD_NOTES for the flat-index float caveat).
        """
        q = inputs.as_vectors("queries", query)[None]
        h = inputs.as_item_ids("histories", history).reshape(1, -1)
        result = recommend(self.datastore, q, h, self.config, online=True,
                           exclude_users=None if exclude_user < 0 else [exclude_user])
        return result.items[0], result.scores[0]
