"""The asset contract: which files are assets, who reads each format, and the one walk
that finds them for `ulip2 index`, `triplets build`, `eval` and `retrain`.

Every command reads every format here. trimesh reads its formats in this process
(core.meshio); a headless Blender worker (core.blender_pool) reads the others. Rendering
always needs Blender: the formats Blender has no importer for are handed to it as a glTF
converted by trimesh (core.meshio.as_glb). Blender's importer per format lives with the
Blender room (blender_addon/scene/importers.py). Standard library only.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import AssetError

#: Read in-process by trimesh.
TRIMESH_FORMATS = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off", ".dae")
#: Read by a headless Blender worker: its own .blend and what only its importers open.
BLENDER_FORMATS = (".blend", ".fbx", ".usd", ".usda", ".usdc", ".usdz", ".abc")
ASSET_EXTENSIONS = TRIMESH_FORMATS + BLENDER_FORMATS
#: Formats that say which way is up, so an encoder's up-axis scorer is not asked: glTF is
#: y-up by its specification, and Blender's importers read the axes FBX, USD and Alembic
#: files state (or their format's convention) into its z-up world, which ulip2 turns y-up,
#: as it does a .blend. OBJ, STL, PLY, OFF and COLLADA as trimesh reads them do not.
FRAME_STATED = (".glb", ".gltf") + BLENDER_FORMATS


def extension(path: str | os.PathLike) -> str:
    return os.path.splitext(os.fspath(path))[1].lower()


def is_asset(path: str | os.PathLike) -> bool:
    return extension(path) in ASSET_EXTENSIONS


def states_frame(path: str | os.PathLike) -> bool:
    """Whether `path`'s format says which axis is up (FRAME_STATED)."""
    return extension(path) in FRAME_STATED


def needs_blender(path: str | os.PathLike) -> bool:
    """Whether only a Blender worker reads `path`'s points."""
    return extension(path) in BLENDER_FORMATS


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a plain file"


def find_assets(roots) -> list[str]:
    """The one walk: the files given, and the asset-named entries under the folders given
    (absolute paths as given: links are not replaced by their targets' names), sorted, each
    once. Nothing is opened; `walk` judges what was found, `ulip2 index` records it."""
    found: set[str] = set()
    for root in roots:
        root = os.path.abspath(os.fspath(root))
        if os.path.isdir(root):
            for folder, _, names in os.walk(root):
                found.update(os.path.join(folder, n) for n in names if is_asset(n))
        elif os.path.lexists(root):
            found.add(root)
        else:
            raise AssetError(root, "no such file or folder")
    return sorted(found)


def unreadable(path: str, mode: int) -> str | None:
    """Why `path` (of stat mode `mode`) is not read as an asset, or None when it is one."""
    if not stat.S_ISREG(mode):
        return f"not a regular file ({_kind(mode)}): only regular files are assets; replace it with the file itself"
    if not is_asset(path):
        return f"not an asset file: ulip2 reads {', '.join(ASSET_EXTENSIONS)}"
    return None


@dataclass
class Walk:
    """What a walk found: asset files to read, and the paths passed over, each with why."""

    files: list[Path] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {path, reason}


def walk(roots, *, formats: tuple[str, ...] = ASSET_EXTENSIONS, command: str = "") -> Walk:
    """find_assets, judged: the regular asset files of `formats`, and the rest passed over
    with a reason a user can act on (no regular file: a FIFO or a link to a device, which
    could block a read for ever; a file given by name that is no asset; an asset of a format
    `command` leaves out of `formats`, with who reads it). A name that is not UTF-8 is the
    reader's to judge: a triplet store keys records by content, a library stores the name."""
    out = Walk()
    for path in find_assets(roots):
        try:
            reason = unreadable(path, os.stat(path).st_mode)
        except OSError as exc:  # a dangling link, or gone since the listing
            reason = f"cannot read: {exc.strerror or exc}"
        if reason is None and extension(path) not in formats:
            reason = f"{command} does not read {extension(path)} files; ulip2 index and ulip2 triplets build read them"
        if reason is None:
            out.files.append(Path(path))
        else:
            out.skipped.append({"path": path, "reason": reason})
    return out
