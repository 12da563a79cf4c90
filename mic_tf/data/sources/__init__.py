"""Dataset sources, chosen by name (spec 2.1).

Each source is a module with two functions:
  locate(raw_dir: Path, options: dict) -> list[Path]   # fetches what it can; returns the raw files
  read(files: list[Path], options: dict) -> RawDataset # parses them strictly
Adding a source is one module plus one line in `SOURCES`.
"""

from __future__ import annotations

import importlib

from mic_tf.errors import ConfigError

# name -> module under mic_tf.data.sources
SOURCES = {
    "ml-100k": "ml100k",
    "ml-1m": "ml1m",
    "book": "amazon_book",
    "taobao": "taobao",
    "steam": "steam",
    "custom": "custom",
    "synthetic": "synthetic",
}


def get_source(name: str):
    if name not in SOURCES:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {sorted(SOURCES)}")
    return importlib.import_module(f"mic_tf.data.sources.{SOURCES[name]}")
