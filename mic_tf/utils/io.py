"""File helpers: atomic writes, checksums and resumable downloads.

Every writer here follows one rule: a file or folder only appears under its final name once it is
complete, so a crash or a Ctrl-C never leaves a half-written output that a later run would trust.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from mic_tf.errors import ConfigError, DataError

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, streamed in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def md5_file(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    umask = os.umask(0)  # the only portable way to read it; set back at once
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yields a temporary path beside `final`; renames it to `final` only if the block succeeds.

    The file gets the mode `open()` would give (0666 minus the umask): mkstemp's 0600 would make
    these files private while the rest of a run folder is not.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(final: str | os.PathLike, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(final: str | os.PathLike, obj) -> None:
    """Writes JSON with sorted keys so that the same object always gives the same bytes."""
    atomic_write_text(final, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def json_marker(folder: Path, name: str, keys: tuple[str, ...]) -> bool:
    """True when `folder/name` is a JSON object holding every key of `keys`."""
    try:
        meta = json.loads((folder / name).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(meta, dict) and all(k in meta for k in keys)


def foreign_entries(folder: Path, patterns: tuple[str, ...]) -> list[str]:
    """Names in `folder` that are not regular files matching one of `patterns` (glob)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.is_symlink() or not p.is_file()
                  or not any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns))


def check_replaceable(final: str | os.PathLike, is_ours, what: str, hint: str = "") -> None:
    """Raises ConfigError unless `final` is absent, an empty folder, or a folder `is_ours`
    recognises. Nothing is touched: the caller decides before it writes or deletes anything.

    Args:
      is_ours: `folder -> None` when the folder is one this project wrote and may replace, else a
        short reason (e.g. the unexpected files it holds).
      what: what the folder should be ("processed dataset", "datastore"), for the message.
      hint: what the user can change (a flag, another folder).
    """
    final = Path(final)
    hint = f" {hint}" if hint else ""
    if not final.exists() and not final.is_symlink():
        return
    if final.is_symlink() or not final.is_dir():
        raise ConfigError(f"{final} is a file or a link, not a {what} folder; it was left "
                          f"untouched.{hint}")
    if not any(final.iterdir()):
        return
    reason = is_ours(final)
    if reason is not None:
        raise ConfigError(f"{final} is not a {what} folder written by mic-tf ({reason}), so it "
                          f"was left untouched: nothing in it is deleted or replaced.{hint}")


def ours_if(marker, patterns: tuple[str, ...]):
    """An `is_ours` for `check_replaceable`: the folder passes `marker(folder)` and holds only
    files matching `patterns` (a foreign file inside one of ours is not ours to delete)."""

    def is_ours(folder: Path) -> str | None:
        if not marker(folder):
            found = sorted(p.name for p in folder.iterdir())
            shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
            return f"it holds {shown}"
        foreign = foreign_entries(folder, patterns)
        if foreign:
            return f"it also holds {', '.join(foreign[:5])}, which mic-tf did not write"
        return None

    return is_ours


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, is_ours, what: str, hint: str = ""):
    """Yields an empty temporary folder beside `final`; swaps it into place if the block succeeds.

    An existing `final` is replaced only after the new folder is complete, so readers see either
    the old complete folder or the new complete one. Only an empty folder or one that `is_ours`
    recognises is replaced (see `check_replaceable`); it is checked before the work and again
    just before the swap, since another process may have written there meanwhile.
    """
    final = Path(final)
    check_replaceable(final, is_ours, what, hint)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual mode
    try:
        yield tmp
        check_replaceable(final, is_ours, what, hint)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _progress(done: int, total: int | None, start: float, label: str) -> None:
    elapsed = max(time.time() - start, 1e-6)
    rate = done / elapsed / 1e6
    if total:
        msg = f"\r{label}: {done / 1e6:8.1f} / {total / 1e6:.1f} MB ({100 * done / total:5.1f}%) {rate:6.1f} MB/s"
    else:
        msg = f"\r{label}: {done / 1e6:8.1f} MB {rate:6.1f} MB/s"
    sys.stderr.write(msg)
    sys.stderr.flush()


def download(url: str, dest: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
             progress: bool = True, timeout: float = 60.0) -> Path:
    """Downloads `url` to `dest` with a progress line, resuming a previous partial download.

    The bytes go to `dest + '.part'`; a server that ignores the Range header restarts the download.
    The checksum (when known) is verified before the rename, and a mismatch deletes the partial
    file, so `dest` exists only when it is complete and correct.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "mic-tf"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part file is already complete, or longer than the file
            part.unlink()
            return download(url, dest, sha256=sha256, md5=md5, progress=progress, timeout=timeout)
        raise DataError(f"download failed with HTTP {e.code}; check the URL or pass a local copy "
                        f"of the file instead", path=url) from e
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"download failed ({e}); check the network or pass a local copy of the "
                        f"file instead", path=url) from e
    with response:
        resumed = have and response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            # A partial answer that does not continue our .part file: start again from zero.
            response.close()
            part.unlink()
            return download(url, dest, sha256=sha256, md5=md5, progress=progress, timeout=timeout)
        mode = "ab" if resumed else "wb"
        done = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        start = time.time()
        try:
            with open(part, mode) as f:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    if progress:
                        _progress(done, total, start, dest.name)
        except (http.client.HTTPException, OSError) as e:
            # The bytes received so far stay in the .part file for the next attempt to resume.
            raise DataError(f"download interrupted after {done} bytes ({type(e).__name__}: {e}); "
                            f"run the same command again to resume", path=url) from e
        finally:
            if progress:
                sys.stderr.write("\n")
    if total is not None and done != total:
        raise DataError(f"download ended after {done} of {total} bytes; run the same command "
                        f"again to resume", path=url)
    verify_checksum(part, sha256=sha256, md5=md5, source=url, delete_on_mismatch=True)
    os.replace(part, dest)
    return dest


def verify_checksum(path: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
                    source: str | None = None, delete_on_mismatch: bool = False) -> None:
    """Raises DataError when the file's checksum differs from the expected one."""
    for name, expected, fn in (("sha256", sha256, sha256_file), ("md5", md5, md5_file)):
        if expected is None:
            continue
        actual = fn(path)
        if actual != expected:
            if delete_on_mismatch:
                os.unlink(path)
            raise DataError(f"{name} checksum mismatch: expected {expected}, got {actual}; the file "
                            f"is truncated or corrupt" + (f" (from {source})" if source else "")
                            + ". Delete it and fetch it again", path=path)
