"""The asset sources of the multi-source corpus: one module a source, one interface.

Each source module defines

    NAME       short name ("0ad"), used in object keys and reports
    PACKAGES   the Debian packages it reads, unpacked together into one folder
    objects(root) -> Iterator[SourceObject]
               every object of the source found under `root` (the folder the packages
               were `dpkg -x`-ed into), in a stable order

Readers of game formats live here, not in core: core reads the formats studios exchange
(glTF, OBJ, PLY, STL, OFF, and Blender's); a game's private format is the recipe's business.

Geometry comes back as trimesh meshes in the glTF frame (y up, -z forward where the
source says so), with their visuals (texture + uv, vertex or face colours, or a material
colour), so the corpus can write each object as one .glb that the rest of ulip2 reads as
any studio asset. Every file is hostile until checked: readers bound sizes and counts
(MAX_* below), read archive members into memory by name and never write them out, and
raise SourceError naming the file and the reason.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.errors import Ulip2Error

# Bounds on what one object may cost a reader (far above any asset of these packages).
MAX_VERTICES = 2_000_000
MAX_FACES = 4_000_000
MAX_TEXTURE_SIDE = 1024     # textures are downscaled to this before they reach a mesh
MAX_FILE_BYTES = 256 << 20  # one mesh, texture or archive member read into memory


class SourceError(Ulip2Error):
    """A source file that cannot be read; the message names it and why."""


@dataclasses.dataclass
class SourceObject:
    """One object of a source: what it is called, what its metadata says, how to load it."""

    source: str                  # the source's NAME
    id: str                      # stable, unique within the source (e.g. the actor's path)
    name: str                    # readable name ("Athenian hoplite", "oak tree")
    label: str | None            # evaluation class from the source's own metadata, or None
    texts: list[str]             # sentences made from the source's metadata, no human labelling
    files: list[str]             # the files it is read from, relative to root (provenance)
    load: Callable[[], list]     # -> list[trimesh.Trimesh], y-up, with visuals; raises SourceError
    split: str | None = None     # "train" | "test" where the source fixes its own split, else None

    @property
    def key(self) -> str:
        return f"{self.source}/{self.id}"


def sentence_words(text: str) -> str:
    """A file or template name as words: 'athen_infantry_spearman_b' -> 'athen infantry spearman b'."""
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    return re.sub(r"[\s_\-./]+", " ", text).strip().lower()


def bounded_image(image):
    """A PIL image as RGB(A), no side above MAX_TEXTURE_SIDE (downscaled, aspect kept)."""
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    if max(image.size) > MAX_TEXTURE_SIDE:
        image = image.copy()
        image.thumbnail((MAX_TEXTURE_SIDE, MAX_TEXTURE_SIDE))
    return image


def read_bounded(path: Path, shown: str | None = None) -> bytes:
    """A file's bytes, refused above MAX_FILE_BYTES before it is read; errors name `shown` (else the path)."""
    shown = shown or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise SourceError(f"{shown}: {size} bytes is above the limit of {MAX_FILE_BYTES}")
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{shown}: not readable ({exc.strerror or exc})") from None


def check_counts(path: str, vertices: int, faces: int) -> None:
    """Refuse meshes above the bounds before their arrays are allocated."""
    if vertices > MAX_VERTICES or faces > MAX_FACES:
        raise SourceError(f"{path}: {vertices} vertices / {faces} faces is above the limit "
                          f"({MAX_VERTICES} / {MAX_FACES}); a corrupt file?")


def z_up_to_y_up(vertices: np.ndarray) -> np.ndarray:
    """(x, y, z) z-up -> the glTF frame (x, z, -y), as Blender's glTF exporter turns it."""
    v = np.asarray(vertices, dtype=np.float64)
    return np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1)


def licence(root: Path, package: str) -> dict:
    """The licences a package's DEP-5 copyright file names, most frequent first, and its path."""
    path = root / "usr/share/doc" / package / "copyright"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise SourceError(f"{path}: not readable ({exc}); unpack {package} again") from None
    names = re.findall(r"^License:\s*(\S.*?)\s*$", text, flags=re.MULTILINE)
    counted = {n: names.count(n) for n in names}
    files_star = re.search(r"^Files:\s*\*\s*$.*?^License:\s*(.+?)\s*$", text, flags=re.MULTILINE | re.DOTALL)
    return {"package": package, "copyright_file": str(path.relative_to(root)),
            "main": files_star.group(1) if files_star else None,
            "all": sorted(counted, key=lambda n: (-counted[n], n))}
