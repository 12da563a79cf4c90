"""The run's evaluation outputs (spec 8): `metrics.json` and `recommendations.jsonl`.

Both are written through `mic_tf.utils.io.atomic_path`: the content goes to a temporary file
beside the target and is renamed over it only once complete, so a crash mid-write never leaves a
truncated file under the final name that a table script would trust.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from mic_tf.utils.io import atomic_path, atomic_write_json


def _jsonable(obj):
    """Converts numpy scalars / arrays and paths (recursively) to plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def write_metrics(path, metrics_by_split: dict, extra: dict | None = None) -> Path:
    """Writes `metrics.json` as `{"valid": {...}, "test": {...}, **extra}` atomically.

    Args:
      path: the output file (e.g. `OUT/metrics.json`); parent folders are created.
      metrics_by_split: split name -> `{metric name: value}`. Every value must be a finite number
        in [0, 1] (the file contract of spec 8), so timings or losses belong in `extra`.
      extra: other top-level entries (e.g. alignment/uniformity, the basic loss used). Must be
        JSON-serialisable after numpy scalars/arrays are converted, without NaN or inf, and must
        not reuse a split name.

    Returns:
      The written path.
    """
    out = {}
    for split, metrics in metrics_by_split.items():
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics_by_split[{split!r}] must be a dict of metric values")
        values = {}
        for name, value in metrics.items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{split}/{name} must be a number, got {value!r}") from None
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{split}/{name} = {value} is not in [0, 1]; metrics.json holds "
                                 f"only rate metrics, put other numbers in `extra`")
            values[str(name)] = value
        out[str(split)] = values
    if extra:
        clash = sorted(set(map(str, extra)) & set(out))
        if clash:
            raise ValueError(f"extra entries {clash} collide with split names")
        out.update(_jsonable(extra))
    try:
        json.dumps(out, allow_nan=False)  # fail before creating anything, with a clear message
    except (TypeError, ValueError) as e:
        raise ValueError(f"metrics.json content is not valid JSON: {e}") from e
    atomic_write_json(path, out)
    return Path(path)


def write_recommendations(path, user_raw_ids, ranked, item_raw_ids) -> Path:
    """Writes `recommendations.jsonl` atomically: one `{"user": ..., "items": [...]}` per line.

    Args:
      path: the output file (e.g. `OUT/recommendations.jsonl`).
      user_raw_ids: `[U]` raw user ids, in the row order of `ranked`.
      ranked: `[U, N]` int item ids, best first; 0 = empty slot, omitted from the output.
      item_raw_ids: `[N_items + 1]` raw item ids indexed by item id (entry 0 unused).

    Returns:
      The written path. Ids are written as strings, exactly as `str()` of the raw ids.
    """
    ranked = np.asarray(ranked)
    user_raw_ids = np.asarray(user_raw_ids, dtype=object)
    item_raw_ids = np.asarray(item_raw_ids, dtype=object)
    if ranked.ndim != 2 or (ranked.size and not np.issubdtype(ranked.dtype, np.integer)):
        raise ValueError(f"ranked must be a [U, N] int array, got shape {ranked.shape} "
                         f"dtype {ranked.dtype}")
    if user_raw_ids.ndim != 1 or len(user_raw_ids) != len(ranked):
        raise ValueError(f"user_raw_ids must have one id per row of ranked ({len(ranked)}), got "
                         f"shape {user_raw_ids.shape}")
    if ranked.size and (ranked.min() < 0 or ranked.max() >= len(item_raw_ids)):
        raise ValueError(f"ranked holds item ids outside [0, {len(item_raw_ids) - 1}]")
    names = item_raw_ids[ranked]  # [U, N] raw ids, gathered in one shot
    filled = ranked != 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            # One line per user is I/O-bound; the loop only formats already-gathered strings.
            for user, row, keep in zip(user_raw_ids, names, filled):
                line = {"user": str(user), "items": [str(x) for x in row[keep]]}
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return Path(path)
