"""Fetch, preprocess and cache a dataset: the library side of `datasets/prepare.py`."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from mic_tf.data import store
from mic_tf.data.dataset import ProcessedDataset
from mic_tf.data.paths import DEFAULT_DATA_DIR, DEFAULT_RAW_DIR
from mic_tf.data.protocol import ProtocolParams, apply_comirec_protocol
from mic_tf.data.sources import get_source
from mic_tf.utils.io import sha256_file


def _raw_fingerprint(files: list[Path]) -> list[dict]:
    return [{"name": Path(f).name, "size": Path(f).stat().st_size, "sha256": sha256_file(f)}
            for f in files]


def prepare_dataset(name: str, data_dir: str | Path | None = None, raw_dir: str | Path | None = None,
                    params: ProtocolParams = ProtocolParams(), source_options: dict | None = None,
                    force: bool = False, verbose: bool = True) -> ProcessedDataset:
    """Returns the processed dataset `name`, building `data_dir/name/` when it is missing or stale.

    The cache key covers the format version, the protocol parameters, the source options and the
    sha256 of every raw file, so a changed parameter or raw file never reuses an old folder.

    Args:
      name: a source name from `mic_tf.data.sources.SOURCES`.
      data_dir: where processed folders live (default `datasets/data`).
      raw_dir: where this source's raw files live (default `datasets/raw/NAME`).
      params: the ComiRec protocol parameters.
      source_options: per-source options (paths, URLs, column names, synthetic sizes).
      force: rebuild even when the cache is valid.
    """
    source = get_source(name)
    params.validate()  # before any file is read or written
    options = dict(source_options or {})
    data_dir = Path(data_dir) if data_dir else DEFAULT_DATA_DIR
    raw_dir = Path(raw_dir) if raw_dir else DEFAULT_RAW_DIR / name
    out_dir = data_dir / name
    log = (lambda *a: print(*a, file=sys.stderr)) if verbose else (lambda *a: None)

    start = time.time()
    files = source.locate(raw_dir, options)
    inputs = {"dataset": name, "source_version": getattr(source, "VERSION", 1),
              "params": dataclasses.asdict(params),
              "source_options": {k: str(v) for k, v in sorted(options.items())},
              "raw_files": _raw_fingerprint(files)}
    key = store.cache_key(inputs)
    store.check_writable(out_dir)  # before reading meta.json or any raw file: never a user's folder
    meta = store.read_meta(out_dir)
    if meta is not None and meta.get("cache_key") == key and not force:
        log(f"{name}: processed data is up to date in {out_dir}")
        return store.load(out_dir)
    if meta is not None:
        log(f"{name}: processed data in {out_dir} was made from other inputs; rebuilding")
    log(f"{name}: reading the raw data")
    raw = source.read(files, options)
    log(f"{name}: read {raw.num_rows} raw interactions in {time.time() - start:.1f}s")
    ds = apply_comirec_protocol(raw, params, log=lambda msg: log(f"{name}: {msg}"))
    store.save(ds, out_dir, {**inputs, "cache_key": key})
    log(f"{name}: wrote {out_dir} in {time.time() - start:.1f}s")
    return ds
