"""The serving bundle: everything the online service needs from one trained model, in one folder.

Layout (format 1), written atomically by `write_bundle` (a temporary folder beside the target,
renamed into place only when complete; `bundle.json` is its last file):

  bundle.json            version, format, creation time, source, counts, `inference` (the run's
                         `InferenceConfig` as a dict), `maxlen`, `history_cap` H, `history_until`,
                         `num_user_features`
  user_tower/            SavedModel: `serve(history [B, maxlen] int32 [, user_features [B, F]])`
                         -> `[B, D]` or `[B, K, D]` user vectors
  datastore/             `Datastore.save`: the training users' vectors and index (U2U), the item
                         vectors and index(es) (U2I; I2I on unit vectors), the training users'
                         last-H histories as CSR, the categories and the I2I table
                         `item_neighbours.npy` `[N + 1, M3]`
  user_ids.txt           raw user ids, one a line: lines 0..U-1 are the training users in the
                         datastore's order, then the other known users (query-only)
  item_ids.txt           raw item ids, one a line: line j is item j + 1
  other_history_items.npy, other_history_offsets.npy
                         CSR last-H histories of the users after the training users
  similar_users.npy      `[U, M1]` int32: each training user's M1 most similar training users,
                         itself excluded (-1 = missing)
  popular.npy            `[P, 2]` int64 (item id, training count), most popular first
  user_features.npy      `[users, F]` int32, only when the tower takes user features

Raw ids are written as text because they are strings exactly as in the raw files (which are
line-based, so no id holds a newline).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import time
from pathlib import Path

import numpy as np

from mic_tf.inference.score import InferenceConfig
from mic_tf.serving.errors import BundleError
from mic_tf.serving.keys import VERSION_RE
from mic_tf.utils.io import atomic_dir, json_marker

FORMAT = "mic-serving-bundle"
FORMAT_VERSION = 1
META = "bundle.json"


def new_version() -> str:
    """A sortable, unique version id: UTC time plus 6 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


@dataclasses.dataclass
class BundleParts:
    """What `write_bundle` writes (see the module docstring for each file).

    Attributes:
      datastore: a built `Datastore` with its I2I table (`build_item_neighbours(M3)`).
      write_tower: `fn(folder)` writing the user-tower SavedModel into `folder`.
      user_raw_ids: raw ids of every known user, training users first (`[users]`).
      item_raw_ids: `[N + 1]` raw item ids (index 0, the padding, is ignored).
      other_history_items / other_history_offsets: CSR histories of the non-training users.
      similar_users: `[U, M1]` int32 (-1 = missing).
      popular: `[P, 2]` int64 (item, count).
      inference: the `InferenceConfig` the service merges with.
      maxlen: the tower's history length L; history_cap: H, items kept per user.
      user_features: `[users, F]` int32 or None.
      history_until: Unix time of the newest click in the bundle's histories (events at or
        before it are taken as already in them); 0 = unknown, every event applies.
      source: free-form provenance (run folder, flags) recorded in bundle.json.
    """

    datastore: object
    write_tower: object
    user_raw_ids: list
    item_raw_ids: np.ndarray
    other_history_items: np.ndarray
    other_history_offsets: np.ndarray
    similar_users: np.ndarray
    popular: np.ndarray
    inference: InferenceConfig
    maxlen: int
    history_cap: int
    user_features: np.ndarray | None = None
    history_until: float = 0.0
    source: dict = dataclasses.field(default_factory=dict)


def _write_ids(path: Path, ids) -> None:
    ids = [str(i) for i in ids]
    bad = [i for i in ids if "\n" in i or "\r" in i]
    if bad:
        raise BundleError(f"raw ids may not contain line breaks, got {bad[:3]!r}", path=path)
    path.write_text("\n".join(ids) + "\n", encoding="utf-8")


def _check_parts(p: BundleParts) -> None:
    ds = p.datastore
    if ds.item_neighbours is None:
        raise BundleError("the datastore has no I2I table: call build_item_neighbours(M3) first")
    if len(p.item_raw_ids) != ds.num_items + 1:
        raise BundleError(f"item_raw_ids has {len(p.item_raw_ids)} entries, expected N + 1 = "
                          f"{ds.num_items + 1}")
    others = len(p.other_history_offsets) - 1
    if len(p.user_raw_ids) != ds.num_users + others:
        raise BundleError(f"user_raw_ids has {len(p.user_raw_ids)} entries, expected "
                          f"{ds.num_users} training + {others} other users")
    if p.similar_users.shape[0] != ds.num_users:
        raise BundleError(f"similar_users has {p.similar_users.shape[0]} rows, expected "
                          f"{ds.num_users}")
    if len(set(p.user_raw_ids)) != len(p.user_raw_ids):
        raise BundleError("user_raw_ids holds duplicates")
    if p.history_cap < max(p.maxlen, p.inference.m, p.inference.m2):
        raise BundleError(f"history_cap {p.history_cap} < max(maxlen, M, M2)")


def _is_bundle(folder: Path) -> str | None:
    """`atomic_dir`'s test (None = a bundle this code wrote, so it may be replaced)."""
    if json_marker(folder, META, ("format", "format_version", "version")):
        return None
    return f"no {META}"


def check_target(folder: Path) -> None:
    """Refuses to replace a folder that is not a bundle (an empty folder is fine)."""
    if folder.exists() and _is_bundle(folder) is not None:
        if not folder.is_dir() or any(folder.iterdir()):
            raise BundleError("refusing to overwrite: it exists and is not a serving bundle "
                              f"(no {META}); pass a new or empty folder", path=folder)


def write_bundle(folder, parts: BundleParts, version: str | None = None) -> Path:
    """Writes a bundle atomically; an existing bundle under the same name is replaced only once
    the new one is complete. Returns the folder."""
    folder = Path(folder)
    version = version or new_version()
    if not VERSION_RE.match(version):
        raise BundleError(f"version {version!r} must match {VERSION_RE.pattern}")
    check_target(folder)
    _check_parts(parts)
    ds = parts.datastore
    with atomic_dir(folder, is_ours=_is_bundle, what="serving bundle",
                    hint="Pass a new or empty --bundle_dir.") as tmp:
        parts.write_tower(tmp / "user_tower")
        ds.save(tmp / "datastore")
        _write_ids(tmp / "user_ids.txt", parts.user_raw_ids)
        _write_ids(tmp / "item_ids.txt", list(parts.item_raw_ids[1:]))
        np.save(tmp / "other_history_items.npy", np.asarray(parts.other_history_items, np.int32))
        np.save(tmp / "other_history_offsets.npy",
                np.asarray(parts.other_history_offsets, np.int64))
        np.save(tmp / "similar_users.npy", np.asarray(parts.similar_users, np.int32))
        np.save(tmp / "popular.npy", np.asarray(parts.popular, np.int64).reshape(-1, 2))
        features = 0
        if parts.user_features is not None:
            np.save(tmp / "user_features.npy", np.asarray(parts.user_features, np.int32))
            features = int(parts.user_features.shape[1])
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "version": version,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "inference": dataclasses.asdict(parts.inference), "maxlen": int(parts.maxlen),
                "history_cap": int(parts.history_cap),
                "history_until": float(parts.history_until), "num_user_features": features,
                "num_items": ds.num_items, "num_train_users": ds.num_users,
                "num_users": len(parts.user_raw_ids), "dim": ds.dim,
                "item_score": ds.item_score, "index_type": ds.index_type,
                "index_params": ds.settings()["built_params"]["items"],
                "similar_users_width": int(parts.similar_users.shape[1]),
                "i2i_width": int(ds.item_neighbours.shape[1]), "source": parts.source}
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return folder


def inference_config_from_dict(values: dict) -> InferenceConfig:
    """The stored settings as an `InferenceConfig`: fields this code does not know are refused
    (they would change the answers); fields missing from an older bundle take their defaults."""
    known = {f.name for f in dataclasses.fields(InferenceConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise BundleError(f"the bundle's inference settings hold fields this mic_tf does not "
                          f"know: {unknown}; serve it with the mic_tf that exported it")
    cfg = InferenceConfig(**values)
    cfg.validate()
    return cfg


class Bundle:
    """A bundle folder opened for reading. Arrays are read on demand (the loader needs no Faiss
    index and no TensorFlow)."""

    def __init__(self, folder):
        self.path = Path(folder)
        meta_path = self.path / META
        if not meta_path.exists():
            raise BundleError(f"not a serving bundle (no {META}); export one with `python -m "
                              f"mic_tf.serving export`", path=self.path)
        try:
            self.meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise BundleError(f"unreadable {META}: {e}", path=self.path) from e
        if self.meta.get("format") != FORMAT or self.meta.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"unsupported bundle format {self.meta.get('format')!r} version "
                              f"{self.meta.get('format_version')!r}; expected {FORMAT} "
                              f"{FORMAT_VERSION}", path=self.path)
        for name in ("user_tower", "datastore", "user_ids.txt", "item_ids.txt",
                     "similar_users.npy", "popular.npy", "other_history_items.npy"):
            if not (self.path / name).exists():
                raise BundleError(f"incomplete bundle: {name} is missing", path=self.path)
        self.version = self.meta["version"]
        self.inference = inference_config_from_dict(self.meta["inference"])
        self.maxlen = int(self.meta["maxlen"])
        self.history_cap = int(self.meta["history_cap"])
        self.history_until = float(self.meta["history_until"])
        self.num_train_users = int(self.meta["num_train_users"])
        self.num_items = int(self.meta["num_items"])

    def _array(self, name: str, mmap: bool = False) -> np.ndarray:
        return np.load(self.path / name, mmap_mode="r" if mmap else None)

    def user_ids(self) -> list[str]:
        return (self.path / "user_ids.txt").read_text(encoding="utf-8").split("\n")[:-1]

    def item_ids(self) -> np.ndarray:
        """`[N + 1]` object array of raw item ids ("" at the padding index 0)."""
        ids = (self.path / "item_ids.txt").read_text(encoding="utf-8").split("\n")[:-1]
        if len(ids) != self.num_items:
            raise BundleError(f"item_ids.txt has {len(ids)} lines, expected {self.num_items}",
                              path=self.path)
        return np.array([""] + ids, dtype=object)

    def histories(self) -> tuple[np.ndarray, np.ndarray]:
        """Every known user's last-H history as CSR, training users first: `([nnz] int32,
        [users + 1] int64)`."""
        train_items = self._array("datastore/history_items.npy", mmap=True)
        train_offsets = self._array("datastore/history_offsets.npy")
        other_items = self._array("other_history_items.npy")
        other_offsets = self._array("other_history_offsets.npy")
        items = np.concatenate([np.asarray(train_items, np.int32), other_items])
        offsets = np.concatenate([train_offsets[:-1], other_offsets + train_offsets[-1]])
        return items, offsets.astype(np.int64)

    def other_histories(self) -> tuple[np.ndarray, np.ndarray]:
        return self._array("other_history_items.npy"), self._array("other_history_offsets.npy")

    def similar_users(self) -> np.ndarray:
        return self._array("similar_users.npy")

    def item_neighbours(self) -> np.ndarray:
        return self._array("datastore/item_neighbours.npy", mmap=True)

    def popular(self) -> np.ndarray:
        return self._array("popular.npy")

    def user_features(self) -> np.ndarray | None:
        path = self.path / "user_features.npy"
        return np.load(path) if path.exists() else None

    def load_datastore(self, use_gpu=False):
        from mic_tf.inference.datastore import Datastore

        return Datastore.load(self.path / "datastore", use_gpu=use_gpu)


def copy_tower(source) -> object:
    """A `write_tower` function copying an existing SavedModel folder."""
    source = Path(source)
    if not (source / "saved_model.pb").exists():
        raise BundleError("not a SavedModel folder (no saved_model.pb)", path=source)
    return lambda folder: shutil.copytree(source, folder)
