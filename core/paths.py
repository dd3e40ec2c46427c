"""Where ulip2 keeps files of its own (one cache folder for every cache), the one content
hash of a file, the one way a folder is replaced without a half-written state, and the
check of a file name that is not UTF-8. Standard library only: the Blender extension carries this module."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder (`ULIP2_CACHE_DIR`, else ~/.cache/ulip2), created if missing."""
    path = Path(os.environ.get("ULIP2_CACHE_DIR") or Path.home() / ".cache" / "ulip2").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


#: Why a FIFO, a socket or a link to a device is never opened: reading one can hang or never end.
NOT_REGULAR = "not a regular file: only regular files are assets"
NOT_UTF8_NAME = "the file name is not valid UTF-8; rename it (e.g. convmv -f latin1 -t utf-8 -r FOLDER)"


def not_utf8_name(path: str | os.PathLike) -> str | None:
    """A readable form of `path` when its name is not UTF-8 (latin-1 from an old archive,
    which can be neither stored as text nor printed), else None."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return None


def file_sha256(path: str | os.PathLike) -> str:
    """sha-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def replacing_folder(target: str | os.PathLike) -> Iterator[Path]:
    """A fresh folder beside `target` to fill; when the block ends without an error it
    replaces `target` (removed, then the new one renamed into place), else it is deleted.
    An interrupted write so never leaves a half folder at `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(target.parent.stat().st_mode & 0o777)  # mkdtemp's 0700 would hide it from other users
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
