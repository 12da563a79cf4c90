"""MovieLens-100K in RecBole's atomic format, taken from the `recbole==1.2.1` wheel on PyPI.

The wheel is fetched alone (`pip download --no-deps`, never installed), its sha256 is verified, and
only `ml-100k.inter`, `ml-100k.item` and `ml-100k.user` are extracted (each verified too).
Category = first genre of the `class` field; user fields = age, gender, occupation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mic_tf.data.raw import RawDataset
from mic_tf.data.sources import wheel
from mic_tf.data.sources.common import read_recbole_atomic, require_file

WHEEL = wheel.WheelData(
    requirement="recbole==1.2.1",
    filename="recbole-1.2.1-py3-none-any.whl",
    sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    member_dir="recbole/dataset_example/ml-100k/",
    files={
        "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
        "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
        "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    })


def locate(raw_dir: Path, options: dict) -> list[Path]:
    """Returns the three raw files, fetching them from PyPI when they are missing."""
    return wheel.locate(WHEEL, raw_dir)


def read(files: list[Path], options: dict) -> RawDataset:
    inter_path, item_path, user_path = (require_file(f, "run datasets/prepare.py to fetch it")
                                        for f in files)
    inter = read_recbole_atomic(inter_path, ["user_id", "item_id", "timestamp"], ("timestamp",))
    items = read_recbole_atomic(item_path, ["item_id", "movie_title", "class"])
    users = read_recbole_atomic(user_path, ["user_id", "age", "gender", "occupation"])
    first_genre = items["class"].str.split(" ").str[0]
    return RawDataset(
        name="ml-100k",
        users=inter["user_id"].to_numpy(dtype=object),
        items=inter["item_id"].to_numpy(dtype=object),
        timestamps=inter["timestamp"].to_numpy(dtype=np.float64),
        item_category=pd.Series(first_genre.to_numpy(dtype=object),
                                index=items["item_id"].to_numpy(dtype=object)),
        item_title=pd.Series(items["movie_title"].to_numpy(dtype=object),
                             index=items["item_id"].to_numpy(dtype=object)),
        user_features=users.set_index("user_id")[["age", "gender", "occupation"]],
        files=list(files))
