"""`load`: bulk-loads a bundle's online data into Redis under its version's keys (`keys.py`).

Values are packed int32 strings cut from one bytes buffer per array (no per-item Python work),
sent as `MSET`s of `batch` pairs, `depth` commands per pipeline round trip. The `ready` key is
written last: a crash half-way leaves a version the service refuses to use, and loading again
overwrites the same keys with the same values.
"""

from __future__ import annotations

import json
import time

import numpy as np

from mic_tf.serving.bundle import Bundle
from mic_tf.serving.keys import Keys


def _csr_blobs(items: np.ndarray, offsets: np.ndarray, lo: int, hi: int) -> list[bytes]:
    """Rows lo..hi-1 of a CSR int array as int32 little-endian strings."""
    a, b = int(offsets[lo]), int(offsets[hi])
    buf = np.asarray(items[a:b], dtype="<i4").tobytes()
    cuts = (np.asarray(offsets[lo:hi + 1]) - a) * 4
    return [buf[x:y] for x, y in zip(cuts[:-1].tolist(), cuts[1:].tolist())]


def _row_blobs(table: np.ndarray, lo: int, hi: int, drop_negative: bool = False) -> list[bytes]:
    """Rows lo..hi-1 of a fixed-width table as int32 strings (negatives -1 dropped if asked)."""
    rows = np.asarray(table[lo:hi], dtype="<i4")
    if drop_negative and (rows < 0).any():
        return [r[r >= 0].tobytes() for r in rows]  # only rows of users with < M1 neighbours
    width = rows.shape[1] * 4
    buf = rows.tobytes()
    return [buf[x:x + width] for x in range(0, len(buf), width)]


def _send(client, pairs, batch: int, depth: int) -> None:
    """MSETs of `batch` (key, value) pairs, `depth` of them per pipeline round trip."""
    pipe = client.pipeline(transaction=False)
    queued = 0
    for lo in range(0, len(pairs), batch):
        pipe.mset(dict(pairs[lo:lo + batch]))
        queued += 1
        if queued == depth:
            pipe.execute()
            queued = 0
    if queued:
        pipe.execute()


def bulk_load(bundle: Bundle, client, prefix: str = "mic", batch: int = 1000, depth: int = 20,
              chunk: int = 100_000, force: bool = False, log=print) -> dict:
    """Writes every known user's history, every training user's similar users and every item's
    similar items under `bundle`'s version.

    Args:
      bundle: an opened `Bundle`.
      client: a `redis.Redis`.
      prefix: the key prefix.
      batch: pairs per MSET; depth: MSETs per round trip; chunk: rows encoded at a time.
      force: load again even if the version is already marked ready.

    Returns:
      `{"version", "users", "items", "keys", "seconds", "skipped"}`.
    """
    keys = Keys(prefix, bundle.version)
    if not force and client.exists(keys.ready):
        log(f"version {bundle.version} is already loaded (pass --force to load it again)")
        return {"version": bundle.version, "skipped": True}
    start = time.perf_counter()
    users = bundle.user_ids()
    items, offsets = bundle.histories()
    similar = bundle.similar_users()
    table = bundle.item_neighbours()
    written = 0
    for lo in range(0, len(users), chunk):
        hi = min(lo + chunk, len(users))
        names = [keys.history(u) for u in users[lo:hi]]
        _send(client, list(zip(names, _csr_blobs(items, offsets, lo, hi))), batch, depth)
        written += hi - lo
    for lo in range(0, bundle.num_train_users, chunk):
        hi = min(lo + chunk, bundle.num_train_users)
        names = [keys.similar_users(u) for u in users[lo:hi]]
        _send(client, list(zip(names, _row_blobs(similar, lo, hi, drop_negative=True))), batch,
              depth)
        written += hi - lo
    for lo in range(1, bundle.num_items + 1, chunk):
        hi = min(lo + chunk, bundle.num_items + 1)
        names = [keys.similar_items(i) for i in range(lo, hi)]
        _send(client, list(zip(names, _row_blobs(table, lo, hi))), batch, depth)
        written += hi - lo
    seconds = round(time.perf_counter() - start, 2)
    info = {"version": bundle.version, "users": len(users), "items": bundle.num_items,
            "keys": written + 1, "seconds": seconds, "skipped": False,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    pipe = client.pipeline(transaction=True)
    pipe.set(keys.ready, json.dumps(info, sort_keys=True))
    pipe.sadd(keys.versions, bundle.version)
    pipe.execute()
    log(f"loaded version {bundle.version}: {info['keys']} keys in {seconds} s")
    return info


def drop_version(client, prefix: str, version: str, force: bool = False, scan: int = 10_000,
                 log=print) -> int:
    """Deletes every key of one version (`UNLINK`, in SCAN batches); refuses the version the
    service is serving (`{prefix}:active`) unless `force`. Returns the number of keys removed."""
    from mic_tf.serving.errors import ServingConfigError

    keys = Keys(prefix, version)
    active = client.get(keys.active)
    if active is not None and active.decode() == version and not force:
        raise ServingConfigError(f"version {version} is the active one ({keys.active}); reload "
                                 f"the service onto another bundle first, or pass --force")
    client.unlink(keys.ready)  # first: a half-dropped version is never taken for a loaded one
    removed = 1
    pipe = client.pipeline(transaction=False)
    for found in client.scan_iter(match=keys.version_pattern, count=scan):
        pipe.unlink(found)
        removed += 1
        if removed % scan == 0:
            pipe.execute()
    pipe.srem(keys.versions, version)
    pipe.execute()
    log(f"dropped version {version}: {removed} keys")
    return removed
