"""The Faiss wrappers every layer uses (evaluation, mining, inference, serving), in one place.

* `ItemIndex`, `sort_by_score`: exact top-N over the item catalogue (ComiRec's `evaluate_full`;
  was `evaluation/retrieval.py`);
* `FaissIndex`: the datastores' flat / IVF / HNSW inner-product indexes (was
  `inference/datastore.py`'s `_Index`);
* `knn_index`, `knn_search`: mining's cosine kNN (was `mic/mining.py`'s `_index` / `search`).

The old import paths still work. `ItemIndex` differs from ComiRec's code on purpose:
  * the padding row 0 is not indexed, so item 0 is never recommended (ComiRec indexes it and
    filters it only in the multi-interest branch);
  * ties are broken by the smaller item id, both for which tied items enter the top-N (on CPU,
    Faiss's heap already keeps the smaller ids; on GPU that choice is Faiss's) and for their order
    (ComiRec leaves both to Faiss and Python's sort);
  * the multi-interest merge is vectorised over the batch instead of a per-user Python loop.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from mic_tf.utils.vectors import drop_self

# Faiss's GPU brute-force k-selection supports k <= 2048 (faiss/gpu/utils/DeviceDefs.cuh).
_GPU_MAX_K = 2048


def sort_by_score(scores: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorts every row by score descending, then item id ascending (the tie rule).

    Args:
      scores: `[B, M]` float32, -inf for empty slots.
      items: `[B, M]` int64 item ids, 0 for empty slots.

    Returns:
      The two arrays reordered row by row.
    """
    # Empty slots (-inf, 0) go last even against a real item whose score is -inf.
    tie_key = np.where(items == 0, np.iinfo(np.int64).max, items)
    order = np.lexsort((tie_key, -scores), axis=-1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(items, order, 1)


class ItemIndex:
    """An exact inner-product index over items `1..N` (`faiss.IndexFlatIP`).

    Args:
      item_vectors: `[N + 1, D]` item representations; row 0 is the padding item and is not
        indexed. Converted to contiguous float32.
      use_gpu: "auto" moves the index to GPU 0 when `faiss.get_num_gpus() > 0`; True requires a
        GPU (ValueError otherwise); False keeps it on CPU.

    Attributes:
      num_items: N, the number of indexed items.
      dim: D.
      on_gpu: whether searches run on a GPU.
    """

    def __init__(self, item_vectors, use_gpu="auto"):
        vectors = np.ascontiguousarray(item_vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] < 2 or vectors.shape[1] < 1:
            raise ValueError(f"item_vectors must be [N + 1, D] with N >= 1 items after the padding "
                             f"row 0, got shape {vectors.shape}")
        if not np.isfinite(vectors[1:]).all():
            raise ValueError("item_vectors holds NaN or inf values; check the model's weights")
        if use_gpu not in ("auto", True, False):
            raise ValueError(f"use_gpu must be 'auto', True or False, got {use_gpu!r}")
        num_gpus = faiss.get_num_gpus()
        if use_gpu is True and num_gpus == 0:
            raise ValueError("use_gpu=True but Faiss sees no GPU (faiss-cpu installed, or no "
                             "device); install faiss-gpu or pass use_gpu='auto'")
        self.num_items, self.dim = vectors.shape[0] - 1, vectors.shape[1]
        index = faiss.IndexFlatIP(self.dim)
        index.add(vectors[1:])  # Faiss id j is item j + 1
        self.on_gpu = bool(use_gpu) and num_gpus > 0
        if self.on_gpu:
            self._gpu_resources = faiss.StandardGpuResources()  # must outlive the GPU index
            index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)
        self._index = index

    def _search_flat(self, queries: np.ndarray, k: int, batch_size: int):
        """Searches `[M, D]` queries in batches; returns `[M, k]` scores and 1-based item ids."""
        num = len(queries)
        scores = np.empty((num, k), dtype=np.float32)
        items = np.empty((num, k), dtype=np.int64)
        # Faiss's flat search only takes its BLAS kernel when rows * D reaches
        # `distance_compute_blas_threshold` (128000 in faiss 1.15); a smaller batch runs a
        # per-query kernel ~4x slower per query. So never cut a batch below that size, and fold
        # the remainder into the batches: 10000 queries at batch_size 8192 make one call, not
        # 8192 + a slow 1808-row tail.
        threshold = int(getattr(faiss.cvar, "distance_compute_blas_threshold", 0))
        batch_size = max(batch_size, -(-threshold // self.dim))
        num_batches = max(1, num // batch_size)  # equal batches of [batch_size, 2 * batch_size)
        bounds = np.linspace(0, num, num_batches + 1).round().astype(np.int64)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            scores[start:stop], items[start:stop] = self._index.search(queries[start:stop], k)
        # Faiss marks missing results with id -1 (and -FLT_MAX scores): map them to empty slots.
        missing = items < 0
        items += 1
        items[missing] = 0
        scores[missing] = -np.inf
        return scores, items

    def search(self, queries, top_n: int, batch_size: int = 8192):
        """The `top_n` items of largest inner product for each query (max over interests).

        Args:
          queries: `[B, D]` single-vector queries, or `[B, K, D]` multi-interest queries. A
            multi-interest user scores item i as `max_k <q_k, e_i>` (ComiRec / MIC eq. 11): each
            interest retrieves its own top_n, the K lists are pooled, each item keeps its best
            score and the pool is cut to top_n. This is exact: an item in the global top_n is in
            the top_n of the interest that attains its max.
          top_n: number of items per query, >= 1. When top_n > N, the trailing slots are empty.
          batch_size: query rows (of `[B * K, D]`) per Faiss call, bounding its working set. The
            rows are split into equal batches of batch_size to 2 * batch_size - 1 rows, and
            batch_size is raised to Faiss's BLAS threshold (`threshold / D` rows) if below it.

        Returns:
          `(scores, items)`: `[B, top_n]` float32 scores (-inf in empty slots) and `[B, top_n]`
          int64 item ids in 1..N (0 in empty slots), best first, ties by smaller item id.
        """
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim not in (2, 3) or q.shape[-1] != self.dim:
            raise ValueError(f"queries must be [B, {self.dim}] or [B, K, {self.dim}], got shape "
                             f"{q.shape}")
        if q.ndim == 3 and q.shape[1] < 1:
            raise ValueError(f"multi-interest queries need K >= 1 interests, got shape {q.shape}")
        if isinstance(top_n, bool) or int(top_n) != top_n or top_n < 1:
            raise ValueError(f"top_n must be a positive int, got {top_n!r}")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not np.isfinite(q).all():
            raise ValueError("queries hold NaN or inf values; check the user tower's outputs")
        top_n, batch_size = int(top_n), int(batch_size)
        k = min(top_n, self.num_items)
        if self.on_gpu and k > _GPU_MAX_K:
            raise ValueError(f"Faiss GPU search supports top_n <= {_GPU_MAX_K}, got {top_n}; "
                             f"use use_gpu=False")
        num_queries = q.shape[0]
        out_scores = np.full((num_queries, top_n), -np.inf, dtype=np.float32)
        out_items = np.zeros((num_queries, top_n), dtype=np.int64)
        if num_queries == 0:
            return out_scores, out_items
        if q.ndim == 2:
            scores, items = self._search_flat(q, k, batch_size)
            # Faiss already sorts by score and (CPU) keeps the smallest ids among scores tied at
            # the cut; only the order inside a run of ties needs fixing, so sort just those rows.
            tied = np.flatnonzero((scores[:, 1:] == scores[:, :-1]).any(axis=1))
            if len(tied):
                scores[tied], items[tied] = sort_by_score(scores[tied], items[tied])
        else:
            num_interests = q.shape[1]
            scores, items = self._search_flat(q.reshape(-1, self.dim), k, batch_size)
            scores = scores.reshape(num_queries, num_interests * k)  # [B, K * k] pooled
            items = items.reshape(num_queries, num_interests * k)
            if num_interests > 1:
                scores, items = self._keep_best_copy(scores, items)
            scores, items = sort_by_score(scores, items)
        k_out = min(top_n, scores.shape[1])
        out_scores[:, :k_out], out_items[:, :k_out] = scores[:, :k_out], items[:, :k_out]
        # Slots past the last real item (top_n > N) already hold (-inf, 0) from the pool's
        # dropped duplicates or from the initial fill.
        return out_scores, out_items

    @staticmethod
    def _keep_best_copy(scores: np.ndarray, items: np.ndarray):
        """Keeps, in each row, one copy of every item (its best score); others become empty.

        Args:
          scores: `[B, M]` pooled scores of all interests.
          items: `[B, M]` pooled item ids (0 = empty).

        Returns:
          `[B, M]` scores and items where all but the highest-scoring copy of each item are
          replaced by (-inf, 0).
        """
        order = np.lexsort((-scores, items), axis=-1)  # by item, then best score first
        items_s = np.take_along_axis(items, order, 1)
        scores_s = np.take_along_axis(scores, order, 1)
        repeat = np.zeros(items_s.shape, dtype=bool)
        repeat[:, 1:] = items_s[:, 1:] == items_s[:, :-1]
        scores_s[repeat] = -np.inf
        items_s[repeat] = 0
        return scores_s, items_s


class FaissIndex:
    """A Faiss inner-product index over `base` rows with settings, optional GPU, batched search
    (the datastores' flat / IVF / HNSW indexes; moved from `inference/datastore.py`)."""

    def __init__(self, index, index_type: str, params: dict, use_gpu):
        self.index_type, self.params, self.cpu_index = index_type, params, index
        self._apply_search_params(index)
        self.on_gpu = bool(use_gpu) and index_type != "hnsw" and faiss.get_num_gpus() > 0
        self.index = index
        if self.on_gpu:
            self._res = faiss.StandardGpuResources()  # must outlive the GPU index
            self.index = faiss.index_cpu_to_gpu(self._res, 0, index)
            if index_type == "ivf":
                self.index.nprobe = int(params["nprobe"])

    @classmethod
    def build(cls, base: np.ndarray, index_type: str, params: dict, use_gpu):
        n, d = base.shape
        if index_type == "flat":
            index = faiss.IndexFlatIP(d)
        elif index_type == "ivf":
            nlist = params["nlist"] or max(1, int(4 * math.sqrt(n)))
            params["nlist"] = nlist = int(min(nlist, n))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = 1234
            index.train(base)
        else:
            index = faiss.IndexHNSWFlat(d, int(params["M"]), faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = int(params["efConstruction"])
        index.add(base)
        return cls(index, index_type, params, use_gpu)

    def _apply_search_params(self, index):
        if self.index_type == "ivf":
            index.nprobe = int(self.params["nprobe"])
        elif self.index_type == "hnsw":
            index.hnsw.efSearch = int(self.params["efSearch"])

    @property
    def ntotal(self) -> int:
        return int(self.cpu_index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`[Q, D]` queries -> `[Q, k]` float32 scores and int64 Faiss ids (-1 when missing)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        if len(q) == 0 or k == 0:
            return scores, ids
        step = max(8192, 128000 // q.shape[1])  # keep Faiss's flat BLAS kernel (see ItemIndex)
        for lo in range(0, len(q), step):
            scores[lo:lo + step], ids[lo:lo + step] = self.index.search(q[lo:lo + step], k)
        scores[ids < 0] = -np.inf
        return scores, ids


def knn_index(base: np.ndarray, exact_limit: int, seed: int):
    """Mining's cosine index: exact up to `exact_limit` rows, IVF (nlist ~ 4 sqrt(n), nprobe 16)
    above (moved from `mic/mining.py`)."""
    n, d = base.shape
    if n <= exact_limit:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(4 * math.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(base)
        index.nprobe = 16
    index.add(base)
    return index


def knn_search(queries: np.ndarray, base: np.ndarray, k: int, exact_limit: int = 50000,
           seed: int = 0, exclude_self: bool = False, batch_size: int = 8192) -> np.ndarray:
    """Top-k base rows by cosine for every query, `[Q, k]` int64 (-1 when fewer exist).

    With `exclude_self`, queries are the base rows themselves and each row's own index is removed.
    """
    k = min(k, len(base) - (1 if exclude_self else 0))
    if k <= 0:
        return np.full((len(queries), 0), -1, np.int64)
    index = knn_index(base, exact_limit, seed)
    extra = 1 if exclude_self else 0
    out = np.empty((len(queries), k + extra), np.int64)
    step = max(batch_size, 128000 // base.shape[1])  # Faiss' BLAS kernel needs big batches
    for lo in range(0, len(queries), step):
        _, out[lo:lo + step] = index.search(queries[lo:lo + step], k + extra)
    return drop_self(out, np.arange(len(queries))) if exclude_self else out
