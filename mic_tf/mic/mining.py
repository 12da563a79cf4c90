"""Nearest-neighbour mining (paper 2.4.2) with Faiss: kNN positives, k-means++ hard negatives and
user <-> item retrieval in the joint projected space.

All searches are batched Faiss inner-product searches on L2-normalised vectors (cosine). Exact
search is used up to `exact_limit` base vectors; above it an IVF index (nlist ~ 4 sqrt(n),
nprobe 16) keeps mining of 100k x 100k within seconds — positives and hard negatives do not need
the exact neighbour list.
"""

from __future__ import annotations

import dataclasses
import time

import faiss
import numpy as np
from sklearn.cluster import kmeans_plusplus

from mic_tf.utils.checks import INT32_MAX, check_fields, choice, integer
from mic_tf.utils.faiss_index import knn_index as _index  # noqa: F401  (moved)
from mic_tf.utils.faiss_index import knn_search as search
from mic_tf.utils.vectors import l2_normalize as normalize


@dataclasses.dataclass
class MiningConfig:
    num_positives: int = 5  # kNN positives per user / item
    num_hard_negatives: int = 5  # nearest neighbours from another cluster
    num_cross: int = 5  # user -> item and item -> user positives in the joint space
    search_k: int = 50  # neighbours searched to find hard negatives in other clusters
    num_clusters: int = 20  # k-means++ clusters of users and of items
    kmeans_iterations: int = 10
    kmeans_max_points: int = 100000  # k-means is fitted on a seeded subsample above this
    exact_limit: int = 50000
    hard_negatives: str = "nearest"  # "nearest": the nearest other-cluster neighbours; "random"
    seed: int = 0

    def validate(self) -> None:
        check_fields(self, MINING_CHECKS)


@dataclasses.dataclass
class MinedNeighbours:
    """Mining results; -1 marks a missing neighbour. Users are training-user indices, items ids."""

    user_pos: np.ndarray  # [U, P]
    user_hard: np.ndarray  # [U, H]
    item_pos: np.ndarray  # [N + 1, P] (row 0 unused)
    item_hard: np.ndarray  # [N + 1, H]
    user_items: np.ndarray  # [U, X] items retrieved by each user in the joint space
    item_users: np.ndarray  # [N + 1, X] users retrieved by each item in the joint space
    seconds: dict


def kmeanspp_labels(x: np.ndarray, num_clusters: int, iterations: int, max_points: int,
                    seed: int) -> np.ndarray:
    """Cluster of every row: k-means++ seeding (scikit-learn), Lloyd iterations (Faiss)."""
    num_clusters = min(num_clusters, len(x))
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= max_points else x[rng.choice(len(x), max_points, replace=False)]
    centroids, _ = kmeans_plusplus(sample, num_clusters, random_state=seed)
    kmeans = faiss.Kmeans(x.shape[1], num_clusters, niter=iterations, seed=seed,
                          min_points_per_centroid=1,
                          max_points_per_centroid=max(len(sample) // num_clusters, 1) + 1)
    kmeans.train(sample, init_centroids=np.ascontiguousarray(centroids, dtype=np.float32))
    _, labels = kmeans.index.search(x, 1)
    return labels[:, 0]


HARD_NEGATIVE_SOURCES = ("nearest", "random")

# The allowed value of every MiningConfig field; empty mined lists are not supported (a zero
# width breaks the loss's concatenations), so the list sizes start at 1.
MINING_CHECKS = (
    integer("num_positives", 1), integer("num_hard_negatives", 1), integer("num_cross", 1),
    integer("search_k", 1, flag="mining_search_k"), integer("num_clusters", 1),
    integer("kmeans_iterations", 1), integer("kmeans_max_points", 1), integer("exact_limit", 0),
    choice("hard_negatives", HARD_NEGATIVE_SOURCES), integer("seed", 0, INT32_MAX),
)


def hard_negatives(neighbours: np.ndarray, labels: np.ndarray, count: int,
                   positives: np.ndarray | None = None) -> np.ndarray:
    """The first `count` neighbours whose cluster differs from the anchor's and that are not one of
    its `positives` (`[n, P]`, -1 = none), `[n, count]` (-1 pad)."""
    valid = neighbours >= 0
    if positives is not None and positives.shape[1]:
        valid &= ~(neighbours[:, :, None] == positives[:, None, :]).any(axis=2)
    other = valid & (labels[np.where(valid, neighbours, 0)] != labels[:, None])
    order = np.argsort(~other, axis=1, kind="stable")[:, :count]
    picked = np.take_along_axis(neighbours, order, axis=1)
    picked[~np.take_along_axis(other, order, axis=1)] = -1
    if picked.shape[1] < count:
        picked = np.pad(picked, ((0, 0), (0, count - picked.shape[1])), constant_values=-1)
    return picked


def random_hard_negatives(labels: np.ndarray, count: int, positives: np.ndarray, seed: int,
                          tries: int = 4) -> np.ndarray:
    """`count` rows drawn uniformly from the other clusters for each row, never the row itself
    nor one of its `positives`, `[n, count]` (-1 where too few were found, e.g. one cluster).

    Vectorised rejection sampling: `tries * count` uniform draws per row, the first valid ones
    kept (the expected share of valid draws is the share of rows outside the anchor's cluster).
    """
    n = len(labels)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n, max(tries, 1) * count))
    ok = (labels[draws] != labels[:, None]) & (draws != np.arange(n)[:, None])
    if positives is not None and positives.shape[1]:
        ok &= ~(draws[:, :, None] == positives[:, None, :]).any(axis=2)
    # a repeated draw counts once: keep only the first occurrence in the row
    srt = np.sort(draws, axis=1)
    first = np.ones_like(ok)
    order = np.argsort(draws, axis=1, kind="stable")
    dup_sorted = np.concatenate([np.zeros((n, 1), bool), srt[:, 1:] == srt[:, :-1]], axis=1)
    np.put_along_axis(first, order, ~dup_sorted, axis=1)
    ok &= first
    pick = np.argsort(~ok, axis=1, kind="stable")[:, :count]
    out = np.take_along_axis(draws, pick, axis=1)
    out[~np.take_along_axis(ok, pick, axis=1)] = -1
    return out


def _self_mining(x: np.ndarray, cfg: MiningConfig):
    """kNN positives and other-cluster hard negatives (never a positive) of one population."""
    neighbours = search(x, x, max(cfg.search_k, cfg.num_positives), cfg.exact_limit, cfg.seed,
                        exclude_self=True)
    labels = kmeanspp_labels(x, cfg.num_clusters, cfg.kmeans_iterations, cfg.kmeans_max_points,
                             cfg.seed)
    positives = neighbours[:, :cfg.num_positives]
    if positives.shape[1] < cfg.num_positives:
        positives = np.pad(positives, ((0, 0), (0, cfg.num_positives - positives.shape[1])),
                           constant_values=-1)
    if cfg.hard_negatives == "random":
        return positives, random_hard_negatives(labels, cfg.num_hard_negatives, positives,
                                                cfg.seed)
    if cfg.hard_negatives != "nearest":
        raise ValueError(f"hard_negatives must be one of {HARD_NEGATIVE_SOURCES}, got "
                         f"{cfg.hard_negatives!r}")
    return positives, hard_negatives(neighbours, labels, cfg.num_hard_negatives, positives)


def mine(users: np.ndarray, items: np.ndarray, users_joint: np.ndarray, items_joint: np.ndarray,
         cfg: MiningConfig) -> MinedNeighbours:
    """Mines every neighbour list MIC's losses use.

    Args:
      users: `[U, D]` training-user vectors (encoder space).
      items: `[N + 1, D]` item vectors (row 0 = padding, never returned).
      users_joint / items_joint: the same projected into the joint user-item space.
    """
    seconds = {}
    t = time.perf_counter()
    u = normalize(users)
    user_pos, user_hard = _self_mining(u, cfg)
    seconds["users"] = time.perf_counter() - t
    t = time.perf_counter()
    v = normalize(items[1:])
    item_pos, item_hard = (np.pad(a + (a >= 0), ((1, 0), (0, 0)), constant_values=-1)
                           for a in _self_mining(v, cfg))  # back to 1-based ids, row 0 = -1
    seconds["items"] = time.perf_counter() - t
    t = time.perf_counter()
    uj, vj = normalize(users_joint), normalize(items_joint[1:])
    user_items = search(uj, vj, cfg.num_cross, cfg.exact_limit, cfg.seed)
    user_items = np.where(user_items >= 0, user_items + 1, -1)
    item_users = np.pad(search(vj, uj, cfg.num_cross, cfg.exact_limit, cfg.seed),
                        ((1, 0), (0, 0)), constant_values=-1)
    seconds["cross"] = time.perf_counter() - t
    return MinedNeighbours(user_pos, user_hard, item_pos, item_hard, user_items, item_users,
                           {k: round(v, 3) for k, v in seconds.items()})
