"""Where ulip2 keeps files of its own: one cache folder for every cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder (`ULIP2_CACHE_DIR`, else ~/.cache/ulip2), created if missing."""
    path = Path(os.environ.get("ULIP2_CACHE_DIR") or Path.home() / ".cache" / "ulip2").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
