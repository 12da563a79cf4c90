"""The MIC datastores (paper 2.2): user vectors, item vectors, interaction histories and categories.

A `Datastore` holds
  * the user datastore: one L2-normalised vector per training user, `[U, D]`, searched by a Faiss
    inner-product index (Faiss id j = training user j);
  * the item datastore: item vectors `[N + 1, D]` (row 0 = padding, never indexed or returned)
    in the geometry the basic loss trained (`item_score`): as they are for a dot-product model
    (ComiRec's sampled softmax), L2-normalised for a cosine model (eq. 9's logistic loss). U2I and
    Score_basic search / score them with the query as it is (dot) or normalised (cosine); the
    item-item neighbour search (I2I) always uses unit vectors (cosine, the paper's `sim`), from a
    second index when the two geometries differ (Faiss id j = item j + 1 in both);
  * the interaction datastore: each training user's time-ordered history as CSR
    (`history_items [nnz]`, `history_offsets [U + 1]`);
  * item categories `[N + 1]` (0 = no category).

Multi-interest users (`[U, K, D]` input) are stored as ONE vector each: the mean of their
L2-normalised interests, renormalised. Query users of the U2U channel are reduced the same way
(`reduce_users`), so the user-user similarity is the cosine between these mean directions.

Index types: "flat" (exact `IndexFlatIP`, default), "ivf" (`IndexIVFFlat`; params `nlist`,
`nprobe`) and "hnsw" (`IndexHNSWFlat`; params `M`, `efSearch`, `efConstruction`). Flat and IVF
indexes move to GPU 0 when `faiss.get_num_gpus() > 0` (and `use_gpu` allows); HNSW stays on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from mic_tf.inference import inputs
from mic_tf.utils.faiss_index import FaissIndex as _Index
from mic_tf.utils.io import atomic_dir, json_marker, ours_if
from mic_tf.utils.vectors import drop_self
from mic_tf.utils.vectors import l2_normalize  # noqa: F401  (re-exported by mic_tf.inference)

INDEX_TYPES = ("flat", "ivf", "hnsw")
ITEM_SCORES = ("dot", "cosine")
_FORMAT_VERSION = 2  # 2: item_score (raw item vectors for dot-product models), items_unit.faiss
# A saved datastore is recognised by its datastore.json and holds only these kinds of files.
_IS_OURS = ours_if(lambda f: json_marker(f, "datastore.json", ("format_version", "index_type")),
                   ("datastore.json", "*.npy", "*.faiss"))
_DEFAULT_PARAMS = {
    "flat": {},
    "ivf": {"nlist": None, "nprobe": 16},  # nlist None -> ~4 sqrt(n), capped by n
    "hnsw": {"M": 32, "efSearch": 128, "efConstruction": 200},
}


def reduce_users(vectors: np.ndarray) -> np.ndarray:
    """One unit vector per user: `[B, D]` normalised, or `[B, K, D]` -> mean of normalised
    interests, renormalised, `[B, D]`."""
    v = l2_normalize(vectors)
    if v.ndim == 3:
        v = l2_normalize(v.mean(axis=1))
    if v.ndim != 2:
        raise ValueError(f"user vectors must be [B, D] or [B, K, D], got shape {v.shape}")
    return np.ascontiguousarray(v)


class Datastore:
    """User, item and interaction datastores with Faiss indexes over users and items 1..N.

    Args:
      user_vectors: `[U, D]` or `[U, K, D]` training-user vectors (multi-interest users are reduced
        to the renormalised mean of their normalised interests, see `reduce_users`).
      item_vectors: `[N + 1, D]` item vectors, row 0 = padding (stored normalised, not indexed).
      history_items: `[nnz]` item ids in 1..N, every training user's time-ordered history.
      history_offsets: `[U + 1]` CSR offsets; user u's history is
        `history_items[offsets[u]:offsets[u + 1]]`, oldest first.
      item_category: `[N + 1]` category ids (0 = none, an ordinary value for diversity).
      index_type: "flat" (exact, default), "ivf" or "hnsw".
      index_params: overrides of the type's defaults (ivf: nlist, nprobe; hnsw: M, efSearch,
        efConstruction).
      use_gpu: "auto" (GPU when Faiss sees one, flat/ivf only) or False.
      item_score: "dot" (the basic model scores items by inner product: ComiRec's sampled
        softmax, the default) or "cosine" (eq. 9's logistic loss on cosines). Spec 4: U2I and
        Score_basic use the score the basic loss trained.

    Attributes:
      user_vectors `[U, D]` (unit), item_vectors `[N + 1, D]` (raw for "dot", unit for
      "cosine"), item_unit `[N + 1, D]` (unit; the same array for "cosine"), history_items,
      history_offsets, item_category, num_users U, num_items N, dim D, index_type, index_params,
      item_score.
    """

    def __init__(self, user_vectors, item_vectors, history_items, history_offsets, item_category,
                 index_type: str = "flat", index_params: dict | None = None, use_gpu="auto",
                 item_score: str = "dot", _indexes=None):
        if index_type not in INDEX_TYPES:
            raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}")
        if item_score not in ITEM_SCORES:
            raise ValueError(f"item_score must be one of {ITEM_SCORES}, got {item_score!r}")
        self.item_score = item_score
        if use_gpu not in ("auto", False):
            raise ValueError(f"use_gpu must be 'auto' or False, got {use_gpu!r}")
        unknown = set(index_params or {}) - set(_DEFAULT_PARAMS[index_type])
        if unknown:
            raise ValueError(f"unknown {index_type} index params {sorted(unknown)}; expected "
                             f"{sorted(_DEFAULT_PARAMS[index_type])}")
        self.index_type = index_type
        self.index_params = {**_DEFAULT_PARAMS[index_type], **(index_params or {})}
        self.use_gpu = use_gpu
        items = np.asarray(item_vectors, dtype=np.float32)
        if items.ndim != 2 or items.shape[0] < 2:
            raise ValueError(f"item_vectors must be [N + 1, D] with N >= 1, got {items.shape}")
        if _indexes is None:
            self.user_vectors = reduce_users(user_vectors)
            unit = np.ascontiguousarray(l2_normalize(items))
            unit[0] = 0.0
            self.item_vectors = unit if item_score == "cosine" else np.array(items, order="C")
            self.item_vectors[0] = 0.0
        else:  # loaded: already in their geometry; renormalising could move the last bits
            self.user_vectors = np.ascontiguousarray(user_vectors, dtype=np.float32)
            self.item_vectors = np.ascontiguousarray(items)
            unit = self.item_vectors
            if item_score == "dot":
                unit = np.ascontiguousarray(l2_normalize(self.item_vectors))
                unit[0] = 0.0
        self.item_unit = unit
        self.num_users, self.dim = self.user_vectors.shape
        self.num_items = items.shape[0] - 1
        if items.shape[1] != self.dim:
            raise ValueError(f"user dim {self.dim} != item dim {items.shape[1]}")
        if self.num_users < 1:
            raise ValueError("the user datastore needs at least one training user")
        if not (np.isfinite(self.user_vectors).all() and np.isfinite(self.item_vectors).all()):
            raise ValueError("user or item vectors hold NaN or inf values")
        self.history_items = np.ascontiguousarray(history_items, dtype=np.int64)
        self.history_offsets = np.ascontiguousarray(history_offsets, dtype=np.int64)
        offs = self.history_offsets
        if (offs.shape != (self.num_users + 1,) or offs[0] != 0
                or offs[-1] != len(self.history_items) or (np.diff(offs) < 0).any()):
            raise ValueError(f"history_offsets must be non-decreasing, [U + 1 = "
                             f"{self.num_users + 1}], from 0 to len(history_items)")
        if len(self.history_items) and (self.history_items.min() < 1
                                        or self.history_items.max() > self.num_items):
            raise ValueError(f"history items must be in 1..{self.num_items}")
        self.item_category = np.ascontiguousarray(item_category, dtype=np.int64)
        if self.item_category.shape != (self.num_items + 1,):
            raise ValueError(f"item_category must be [N + 1 = {self.num_items + 1}], got "
                             f"{self.item_category.shape}")
        self.item_neighbours = None  # optional [N + 1, W] I2I table, see build_item_neighbours
        if _indexes is None:
            self._users = _Index.build(self.user_vectors, index_type, dict(self.index_params),
                                       use_gpu)
            self._items = _Index.build(self.item_vectors[1:], index_type,
                                       dict(self.index_params), use_gpu)
            self._items_unit = self._items if item_score == "cosine" else _Index.build(
                self.item_unit[1:], index_type, dict(self.index_params), use_gpu)
        else:
            self._users = _Index(_indexes[0], index_type, self.index_params, use_gpu)
            self._items = _Index(_indexes[1], index_type, self.index_params, use_gpu)
            self._items_unit = (self._items if item_score == "cosine" else
                                _Index(_indexes[2], index_type, self.index_params, use_gpu))

    # ------------------------------------------------------------------ searches
    def query_vectors(self, queries: np.ndarray) -> np.ndarray:
        """User vectors `[B, D]` / `[B, K, D]` in the U2I geometry: as they are for "dot",
        L2-normalised (each interest) for "cosine"."""
        q = np.asarray(queries, dtype=np.float32)
        return q if self.item_score == "dot" else l2_normalize(q)

    def search_items(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """U2I: top-k items by inner product with `item_vectors` for `[Q, D]` queries (already in
        the U2I geometry, see `query_vectors`).

        Returns:
          `[Q, k']` float32 scores (-inf when missing) and int64 item ids in 1..N (0 when
          missing), k' = min(k, N), in Faiss's order (best first).
        """
        scores, ids = self._items.search(queries, min(int(k), self.num_items))
        return scores, np.where(ids >= 0, ids + 1, 0)

    def search_similar_items(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """I2I: top-k items by cosine for `[Q, D]` unit queries (rows of `item_unit`); same
        return convention as `search_items`."""
        scores, ids = self._items_unit.search(queries, min(int(k), self.num_items))
        return scores, np.where(ids >= 0, ids + 1, 0)

    def search_users(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k training users for `[Q, D]` queries: `[Q, min(k, U)]` scores and user indices
        (-1 when missing)."""
        return self._users.search(queries, min(int(k), self.num_users))

    def build_item_neighbours(self, width: int, batch: int = 65536) -> np.ndarray:
        """Precomputes every item's `width` nearest items (itself excluded), `[N + 1, width]`.

        Online serving then reads I2I neighbours from this table instead of searching M item
        vectors per request (`channels.i2i` uses it whenever `width >= M3`). It is the same search
        as the on-the-fly path (`width + 1` neighbours, self dropped), done once in big batches.
        Row 0 (padding) is all 0; missing neighbours of an approximate index are 0.
        """
        width = min(int(width), self.num_items - 1)
        if width < 0:
            raise ValueError("width must be >= 0")
        table = np.zeros((self.num_items + 1, width), np.int32)
        for lo in range(1, self.num_items + 1, batch):
            ids = np.arange(lo, min(lo + batch, self.num_items + 1))
            _, nbrs = self.search_similar_items(self.item_unit[ids], width + 1)
            if nbrs.shape[1] < width + 1:
                nbrs = np.pad(nbrs, ((0, 0), (0, width + 1 - nbrs.shape[1])))
            table[ids] = drop_self(nbrs, ids)
        self.item_neighbours = table
        return table

    # ------------------------------------------------------------------ persistence
    def settings(self) -> dict:
        return {"format_version": _FORMAT_VERSION, "index_type": self.index_type,
                "index_params": self.index_params, "num_users": self.num_users,
                "num_items": self.num_items, "dim": self.dim, "item_score": self.item_score,
                "built_params": {"users": self._users.params, "items": self._items.params},
                "multi_interest_users": "mean of L2-normalised interests, renormalised"}

    def save(self, folder) -> Path:
        """Writes the datastore to `folder` atomically (temp folder, then rename).

        Files: user_vectors.npy, item_vectors.npy, history_items.npy, history_offsets.npy,
        item_category.npy, users.faiss, items.faiss (CPU copies; with `item_score="dot"` also
        items_unit.faiss, the I2I index over unit vectors), datastore.json (settings) and, when
        built, item_neighbours.npy (the I2I table).
        """
        folder = Path(folder)
        hint = "Save to a new or empty folder, or move its files away first."
        with atomic_dir(folder, is_ours=_IS_OURS, what="datastore", hint=hint) as tmp:
            for name in ("user_vectors", "item_vectors", "history_items", "history_offsets",
                         "item_category"):
                np.save(tmp / f"{name}.npy", getattr(self, name))
            if self.item_neighbours is not None:
                np.save(tmp / "item_neighbours.npy", self.item_neighbours)
            indexes = [("users", self._users), ("items", self._items)]
            if self._items_unit is not self._items:
                indexes.append(("items_unit", self._items_unit))
            for name, idx in indexes:
                cpu = faiss.index_gpu_to_cpu(idx.index) if idx.on_gpu else idx.cpu_index
                faiss.write_index(cpu, str(tmp / f"{name}.faiss"))
            (tmp / "datastore.json").write_text(json.dumps(self.settings(), indent=2,
                                                           sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, folder, use_gpu="auto") -> "Datastore":
        """Reads a folder written by `save`; the Faiss indexes are read back, not rebuilt."""
        folder = Path(folder)
        meta = inputs.read_settings(folder, _FORMAT_VERSION)
        arrays = {name: inputs.load_array(folder / f"{name}.npy") for name in
                  ("user_vectors", "item_vectors", "history_items", "history_offsets",
                   "item_category")}
        item_score = inputs.item_score(folder, meta, ITEM_SCORES)
        names = ("users", "items") + (("items_unit",) if item_score == "dot" else ())
        indexes = [inputs.read_index(folder / f"{name}.faiss") for name in names]
        inputs.check_saved_sizes(folder, meta, arrays, indexes)
        ds = cls(arrays["user_vectors"], arrays["item_vectors"], arrays["history_items"],
                 arrays["history_offsets"], arrays["item_category"],
                 index_type=meta["index_type"], index_params=meta["index_params"],
                 use_gpu=use_gpu, item_score=item_score, _indexes=indexes)
        built = meta.get("built_params", {})  # e.g. the IVF nlist chosen at build time
        ds._users.params = {**ds._users.params, **built.get("users", {})}
        ds._items.params = {**ds._items.params, **built.get("items", {})}
        ds._items_unit.params = {**ds._items_unit.params, **built.get("items", {})}
        table = folder / "item_neighbours.npy"
        if table.exists():
            ds.item_neighbours = inputs.load_array(table)
            inputs.check_item_neighbours(table, ds.item_neighbours, ds.num_items)
        return ds
