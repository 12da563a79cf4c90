import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ml100k_raw_dir():
    """The real MovieLens-100K raw files; the README's test command fetches them before pytest."""
    raw = REPO / "datasets" / "raw" / "ml-100k"
    if not (raw / "ml-100k.inter").exists():
        pytest.fail("datasets/raw/ml-100k is missing: run `python datasets/prepare.py "
                    "--dataset=ml-100k` first (the README's test command does)")
    return raw
