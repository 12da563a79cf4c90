"""The Redis key layout and value encodings of the online store (BUILD_NOTES, "Serving").

Per bundle version V (model outputs, written by `load`, never edited online):
  {p}:V:ready        JSON of the load (counts, seconds); written LAST, so a version whose load
                     crashed half-way is never used
  {p}:V:h:{user}     the user's history in the bundle: the last H item ids, int32 little-endian
  {p}:V:su:{user}    a training user's M1 similar training users (indices), int32
  {p}:V:si:{item}    item `item`'s M3 similar items (internal ids, 0 = missing), int32
Shared by every version (raw data, not a model output):
  {p}:ev:{user}      the user's click events since the bundles' histories, a list of
                     "TIMESTAMP<TAB>RAW_ITEM_ID" (raw ids: they outlive a refresh that renumbers
                     items), capped at H entries
  {p}:active         the version the service serves (set on start and on reload)
  {p}:versions       the set of loaded versions
`{user}` is the raw user id; internal ids are the bundle's (1..N items, 0..U-1 training users).
"""

from __future__ import annotations

import re

import numpy as np

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")


class Keys:
    """Key names of one bundle version under one prefix."""

    def __init__(self, prefix: str, version: str):
        if not PREFIX_RE.match(prefix):
            raise ValueError(f"key prefix {prefix!r} must match {PREFIX_RE.pattern}")
        if not VERSION_RE.match(version):
            raise ValueError(f"bundle version {version!r} must match {VERSION_RE.pattern}")
        self.prefix, self.version = prefix, version
        self._v = f"{prefix}:{version}:"

    @property
    def ready(self) -> str:
        return self._v + "ready"

    @property
    def version_pattern(self) -> str:
        """SCAN pattern of every key of this version (versions hold no glob characters)."""
        return self._v + "*"

    @property
    def active(self) -> str:
        return f"{self.prefix}:active"

    @property
    def versions(self) -> str:
        return f"{self.prefix}:versions"

    def history(self, user: str) -> str:
        return f"{self._v}h:{user}"

    def similar_users(self, user: str) -> str:
        return f"{self._v}su:{user}"

    def similar_items(self, item: int) -> str:
        return f"{self._v}si:{item}"

    def events(self, user: str) -> str:
        return f"{self.prefix}:ev:{user}"


def encode_ids(ids) -> bytes:
    """`[K]` ints -> int32 little-endian bytes (4 K bytes)."""
    return np.asarray(ids, dtype="<i4").tobytes()


def decode_ids(blob: bytes | None) -> np.ndarray:
    """Bytes from `encode_ids` (or None for a missing key) -> `[K]` int64."""
    if not blob:
        return np.zeros(0, np.int64)
    return np.frombuffer(blob, dtype="<i4").astype(np.int64)


def encode_event(timestamp: float, raw_item: str) -> str:
    return f"{timestamp!r}\t{raw_item}"


def decode_event(entry: bytes) -> tuple[float, str]:
    ts, _, item = entry.decode("utf-8").partition("\t")
    return float(ts), item
