"""A generated dataset with planted structure, at any scale (no raw files).

The generator plants what MIC's cross-channel view should find, so a model can be checked against
a known truth:
  * Items fall into `synthetic_clusters` latent clusters (balanced). Inside a cluster, items lie on
    a ring (the "drift axis") and have a popularity rank.
  * Item categories are correlated with clusters: an item takes one of its cluster's home
    categories with probability 0.8, else a uniform random category.
  * Users have a primary cluster and, with probability 0.3, a secondary one. A user's sequence
    alternates between them in runs (a switch after each step with probability 0.15).
  * Each interaction is, with probability 0.1, a random item drawn from global Zipf popularity
    (noise); otherwise an item of the current cluster: with probability 0.5 a Zipf-popular one
    (log-uniform rank, i.e. exponent 1), else the item at the user's current position on the
    cluster's ring, a position that drifts as a Gaussian random walk (sequential structure: the
    next item is near the previous one).
  * Lengths are `2 + Geometric(1 / (mean_length - 2))` (mean `synthetic_mean_length`; ~7% of users
    have fewer than 5 interactions and are dropped by the protocol, as in real data), capped at
    20x the mean. Times start uniformly in 2020 and grow by 1 s + Exponential(1 h) per step.
  * User fields: `segment` (the primary cluster with probability 0.8, else random: the planted
    signal), `activity` (low / mid / high tertile of the sequence length) and `region` (uniform
    over 8 values: pure noise, a control field).

Everything is vectorised numpy, generated in fixed blocks of users, each with its own child of
`SeedSequence(synthetic_seed)`, so the output depends only on the options (not on the machine) and
1M users x 1M items (~30M interactions) fits in a few GB. Raw ids are 1..U and 1..I.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from mic_tf.data.raw import RawDataset
from mic_tf.errors import ConfigError

# Bump when the generator changes: it is part of the processed data's cache key.
VERSION = 1
OPTIONS = ("synthetic_users", "synthetic_items", "synthetic_clusters", "synthetic_categories",
           "synthetic_mean_length", "synthetic_seed")
DEFAULTS = {"synthetic_users": 2000, "synthetic_items": 1000, "synthetic_clusters": 10,
            "synthetic_categories": 20, "synthetic_mean_length": 30, "synthetic_seed": 0}

P_HOME_CATEGORY = 0.8
P_SECONDARY = 0.3
P_SWITCH = 0.15
P_NOISE = 0.1
P_POPULAR = 0.5
DRIFT_STEP = 0.02      # random-walk step on the ring (ring length 1)
LOCAL_JITTER = 0.01
P_SEGMENT = 0.8
N_REGIONS = 8
MEAN_GAP_S = 3600.0
T_START = 1577836800   # 2020-01-01 UTC
USERS_PER_BLOCK = 65536


@dataclasses.dataclass
class SyntheticData:
    """The generated dataset and its planted truth (0-based user and item indices)."""

    raw: RawDataset
    user_cluster: np.ndarray      # [U] primary cluster
    user_secondary: np.ndarray    # [U] secondary cluster, -1 if none
    item_cluster: np.ndarray      # [I]
    item_category: np.ndarray     # [I] category index
    item_ring_position: np.ndarray  # [I] slot of the item on its cluster's ring


def _params(options: dict) -> dict:
    p = {k: int(options[k]) if options.get(k) is not None else v for k, v in DEFAULTS.items()}
    checks = [("synthetic_users", 1), ("synthetic_items", 1), ("synthetic_clusters", 1),
              ("synthetic_categories", 1), ("synthetic_mean_length", 5)]
    for name, low in checks:
        if p[name] < low:
            raise ConfigError(f"--{name} must be >= {low}, got {p[name]}")
    if p["synthetic_clusters"] > p["synthetic_items"]:
        raise ConfigError(f"--synthetic_clusters ({p['synthetic_clusters']}) must not exceed "
                          f"--synthetic_items ({p['synthetic_items']})")
    if p["synthetic_items"] >= 2 ** 31 or p["synthetic_users"] >= 2 ** 31:
        raise ConfigError("synthetic_users and synthetic_items must be < 2**31")
    return p


def _log_uniform_rank(rng, sizes: np.ndarray) -> np.ndarray:
    """A rank in [0, size) with P(r) ~ 1/(r+1) (Zipf, exponent 1), for each size."""
    u = rng.random(len(sizes))
    rank = np.floor(np.exp(u * np.log(sizes + 1.0))).astype(np.int64) - 1
    return np.minimum(rank, sizes - 1)


def generate(options: dict) -> SyntheticData:
    p = _params(options)
    n_users, n_items = p["synthetic_users"], p["synthetic_items"]
    n_clusters, n_cats = p["synthetic_clusters"], p["synthetic_categories"]
    mean_len = p["synthetic_mean_length"]
    root = np.random.SeedSequence(p["synthetic_seed"])
    item_seq, user_seq, block_seq = root.spawn(3)

    # ---- items: clusters, ring order, popularity order, categories
    rng = np.random.default_rng(item_seq)
    item_cluster = rng.permutation(np.arange(n_items) % n_clusters).astype(np.int32)
    ring = np.lexsort((rng.random(n_items), item_cluster))        # ring slot -> item
    popular = np.lexsort((rng.random(n_items), item_cluster))     # popularity slot -> item
    cluster_size = np.bincount(item_cluster, minlength=n_clusters).astype(np.int64)
    cluster_start = np.concatenate([[0], np.cumsum(cluster_size)[:-1]])
    ring_position = np.empty(n_items, dtype=np.int64)
    ring_position[ring] = np.arange(n_items) - cluster_start[item_cluster[ring]]
    home_width = max(1, n_cats // n_clusters)
    home = (item_cluster.astype(np.int64) * n_cats // n_clusters
            + rng.integers(0, home_width, n_items)) % n_cats
    item_category = np.where(rng.random(n_items) < P_HOME_CATEGORY, home,
                             rng.integers(0, n_cats, n_items)).astype(np.int32)
    global_popular = rng.permutation(n_items)                     # global rank -> item

    # ---- users: clusters, lengths, fields
    rng = np.random.default_rng(user_seq)
    user_cluster = rng.integers(0, n_clusters, n_users).astype(np.int32)
    if n_clusters > 1:
        other = (user_cluster + rng.integers(1, n_clusters, n_users)) % n_clusters
        has_second = rng.random(n_users) < P_SECONDARY
    else:
        other = user_cluster.copy()
        has_second = np.zeros(n_users, dtype=bool)
    user_secondary = np.where(has_second, other, -1).astype(np.int32)
    lengths = 2 + rng.geometric(1.0 / (mean_len - 2), n_users)
    lengths = np.minimum(lengths, 20 * mean_len).astype(np.int64)
    segment = np.where(rng.random(n_users) < P_SEGMENT, user_cluster,
                       rng.integers(0, n_clusters, n_users))
    region = rng.integers(0, N_REGIONS, n_users)
    low, high = np.quantile(lengths, [1 / 3, 2 / 3])
    activity = np.where(lengths <= low, 0, np.where(lengths <= high, 1, 2))
    start_time = T_START + rng.integers(0, 365 * 86400, n_users)
    ring_start = rng.random(n_users)

    # ---- interactions, in fixed blocks of users (deterministic whatever the machine)
    n_blocks = max(1, -(-n_users // USERS_PER_BLOCK))
    block_rngs = [np.random.default_rng(s) for s in block_seq.spawn(n_blocks)]
    total = int(lengths.sum())
    items_out = np.empty(total, dtype=np.int32)
    times_out = np.empty(total, dtype=np.int64)
    users_out = np.repeat(np.arange(1, n_users + 1, dtype=np.int32), lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for b in range(n_blocks):
        rng = block_rngs[b]
        u0, u1 = b * USERS_PER_BLOCK, min(n_users, (b + 1) * USERS_PER_BLOCK)
        lo, hi = offsets[u0], offsets[u1]
        n = int(hi - lo)
        lens = lengths[u0:u1]
        owner = np.repeat(np.arange(u0, u1), lens)
        first = np.repeat(offsets[u0:u1] - lo, lens)              # row of each user's first step
        # cluster runs: a switch flips between primary and secondary
        switch = rng.random(n) < P_SWITCH
        switch[first] = False
        flips = np.cumsum(switch)
        flips -= flips[first]
        use_second = (user_secondary[owner] >= 0) & (flips % 2 == 1)
        cluster = np.where(use_second, user_secondary[owner], user_cluster[owner])
        size = cluster_size[cluster]
        # drifting ring position (a random walk per user)
        walk = np.cumsum(rng.normal(0.0, DRIFT_STEP, n))
        walk -= walk[first]
        pos = (ring_start[owner] + walk + rng.normal(0.0, LOCAL_JITTER, n)) % 1.0
        local_slot = np.minimum((pos * size).astype(np.int64), size - 1)
        local_item = ring[cluster_start[cluster] + local_slot]
        popular_item = popular[cluster_start[cluster] + _log_uniform_rank(rng, size)]
        item = np.where(rng.random(n) < P_POPULAR, popular_item, local_item)
        noise = rng.random(n) < P_NOISE
        item[noise] = global_popular[_log_uniform_rank(rng, np.full(int(noise.sum()), n_items))]
        items_out[lo:hi] = item + 1
        gaps = 1 + rng.exponential(MEAN_GAP_S, n).astype(np.int64)
        gaps[first] = 0
        clock = np.cumsum(gaps)
        clock -= clock[first]
        times_out[lo:hi] = start_time[owner] + clock
        del owner, first, switch, flips, use_second, cluster, size, walk, pos, local_slot
        del local_item, popular_item, item, noise, gaps, clock

    item_ids = np.arange(1, n_items + 1, dtype=np.int64)
    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    width = len(str(max(n_cats - 1, 0)))
    cat_names = np.array([f"cat{c:0{width}d}" for c in range(n_cats)], dtype=object)
    titles = np.array([f"item {i + 1} (cluster {k})" for i, k in
                       enumerate(item_cluster.tolist())], dtype=object)
    seg_names = np.array([f"seg{k:0{len(str(n_clusters))}d}" for k in range(n_clusters)],
                         dtype=object)
    user_features = pd.DataFrame(
        {"segment": seg_names[segment],
         "activity": np.array(["low", "mid", "high"], dtype=object)[activity],
         "region": np.array([f"r{j}" for j in range(N_REGIONS)], dtype=object)[region]},
        index=pd.Index(user_ids, name="user"))
    raw = RawDataset(name="synthetic", users=users_out, items=items_out, timestamps=times_out,
                     item_category=pd.Series(cat_names[item_category], index=item_ids),
                     item_title=pd.Series(titles, index=item_ids),
                     user_features=user_features, files=[])
    return SyntheticData(raw=raw, user_cluster=user_cluster, user_secondary=user_secondary,
                         item_cluster=item_cluster, item_category=item_category,
                         item_ring_position=ring_position)


def locate(raw_dir: Path, options: dict) -> list[Path]:
    _params(options)  # fail early on bad sizes
    return []


def read(files: list[Path], options: dict) -> RawDataset:
    return generate(options).raw
