"""Where ulip2 keeps files of its own (one cache folder for every cache), and the one
content hash of a file. Standard library only: the Blender extension carries this module."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder (`ULIP2_CACHE_DIR`, else ~/.cache/ulip2), created if missing."""
    path = Path(os.environ.get("ULIP2_CACHE_DIR") or Path.home() / ".cache" / "ulip2").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """sha-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
