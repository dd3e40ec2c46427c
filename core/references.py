"""The files an asset file names besides itself (glTF buffers and images, OBJ material
libraries and their texture maps, USD layers), checked before Blender opens it.

Blender's importers follow such references wherever they point (`../../etc/passwd`, an
absolute path, a URL); trimesh stays inside the asset's folder, and so must every path that
reads an asset. Standard library only: the Blender extension carries it.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import struct
from pathlib import Path
from urllib.parse import unquote

from .errors import AssetError

#: The most of a file read to find its references (a glTF's JSON, an .mtl, a .usda's text).
MAX_HEADER_BYTES = 64 * 1024 * 1024

_MTLLIB = re.compile(rb"^[ \t]*mtllib[ \t]+([^\r\n]+)", re.MULTILINE)
# Texture statements of an .mtl: options, then the file name.
_MTL_MAP = re.compile(r"^\s*(map_\w+|bump|disp|decal|refl|norm)\s+(.+)$", re.MULTILINE | re.IGNORECASE)
_USDA_ASSET = re.compile(r"@([^@\r\n]+)@")


def leaves_folder(folder: str | os.PathLike, reference: str) -> bool:
    """Whether `reference`, as a file named by an asset in `folder`, resolves outside it
    (absolute paths, `..`, links that point out, and any URL but data: all do)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", reference):  # a URL scheme or a Windows drive
        return True
    root = Path(folder).resolve()
    return not (root / reference.replace("\\", "/")).resolve().is_relative_to(root)


def check_references(path: str | os.PathLike) -> None:
    """Raise AssetError naming the first file `path` refers to outside its own folder."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        return
    refuse_outside(path, reader(path), "refer to it by a relative name")


def refuse_outside(path: Path, references, fix: str) -> None:
    """Raise AssetError naming the first of `references` (files `path` names) that leaves
    its folder; `fix` ends the advice after "copy that file next to the asset"."""
    for reference in references:
        if leaves_folder(path.parent, reference):
            raise AssetError(path, f"refers to {reference!r}, outside the asset's folder: refused "
                                   f"(copy that file next to the asset and {fix})")


def _gltf_uris(path: Path) -> list[str]:
    if path.stat().st_size == 0:
        raise AssetError(path, "empty file (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(20)
        if head[:4] == b"glTF" and len(head) == 20:  # binary: 12-byte header, the JSON chunk's length, its type
            (length,) = struct.unpack_from("<I", head, 12)
            text = fh.read(min(length, MAX_HEADER_BYTES + 1))
        else:
            text = head + fh.read(MAX_HEADER_BYTES)
    if len(text) > MAX_HEADER_BYTES:  # unread JSON could name anything: refuse rather than guess
        raise AssetError(path, f"its glTF JSON is over {MAX_HEADER_BYTES >> 20} MB; "
                               "store the data in a .glb or in .bin files beside it")
    try:
        document = json.loads(text)
    except ValueError:
        raise AssetError(path, "its glTF JSON does not parse (corrupt or truncated?)") from None
    uris = [item.get("uri") for key in ("buffers", "images") if isinstance(document, dict)
            for item in document.get(key) or [] if isinstance(item, dict)]
    return [unquote(u) for u in uris if isinstance(u, str) and not u.startswith("data:")]


def _obj_libraries(path: Path) -> list[str]:
    if path.stat().st_size == 0:
        return []
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        lines = [m.group(1).decode("utf-8", "replace").strip() for m in _MTLLIB.finditer(data)]
    names = []
    for line in lines:
        # Blender reads the whole line as one name when such a file exists, else each word.
        names += [line] if (path.parent / line).is_file() else line.split()
    found = []
    for name in names:
        found.append(name)
        library = path.parent / name
        if not leaves_folder(path.parent, name) and library.is_file():
            found += _mtl_maps(library)
    return found


def _text(path: Path) -> str:
    with open(path, "rb") as fh:
        return fh.read(MAX_HEADER_BYTES).decode("utf-8", "replace")


def _mtl_maps(library: Path) -> list[str]:
    text = _text(library)
    # The name comes after any options and may hold spaces: every word, and the whole rest.
    return [name for m in _MTL_MAP.finditer(text) for name in (*m.group(2).split(), m.group(2).strip())]


def _usda_layers(path: Path) -> list[str]:
    return _USDA_ASSET.findall(_text(path))


_READERS = {".gltf": _gltf_uris, ".glb": _gltf_uris, ".obj": _obj_libraries, ".usda": _usda_layers}
