"""Default folders: `datasets/raw/NAME` for raw files and `datasets/data/NAME` for processed ones."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASETS_DIR = REPO_ROOT / "datasets"
DEFAULT_DATA_DIR = DATASETS_DIR / "data"
DEFAULT_RAW_DIR = DATASETS_DIR / "raw"
