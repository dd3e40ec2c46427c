"""Which ulip2 command reads which asset format. An asset walk names each file it passes
over for its format, with the commands that do read that format, so no file is left out
without a word."""

from __future__ import annotations

import functools
from pathlib import Path

from core.paths import NOT_REGULAR


@functools.cache
def readers() -> dict[str, tuple[str, ...]]:
    """The extensions read by each command that walks asset folders."""
    from core.library.indexer import ASSET_EXTENSIONS as indexed
    from core.meshio import SUPPORTED_EXTENSIONS as sampled
    from core.triplets import ASSET_EXTENSIONS as rendered

    return {"ulip2 eval": sampled, "ulip2 index": indexed, "ulip2 triplets build": rendered}


def is_asset(path: Path) -> bool:
    """Whether some ulip2 command reads files of `path`'s format."""
    return any(path.suffix.lower() in extensions for extensions in readers().values())


def not_read(path: Path, command: str) -> dict:
    """The summary entry of a file `command` does not read: its path, and which commands do."""
    extension = path.suffix.lower() or "extensionless"
    others = [name for name, extensions in readers().items() if name != command and extension in extensions]
    where = f"; {' and '.join(others)} read{'s' if len(others) == 1 else ''} them" if others else ""
    return {"path": str(path), "reason": f"{command} does not read {extension} files{where}"}


def not_regular(path: Path) -> dict:
    """The summary entry of an asset-named path that is no regular file (a FIFO, a socket, a
    link to a device), which is never opened."""
    return {"path": str(path), "reason": NOT_REGULAR}
