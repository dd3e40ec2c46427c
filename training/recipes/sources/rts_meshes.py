"""What the MegaGlest and Warzone 2100 readers share: bounded reads, textures, meshes, words.

Labels use Sweet Home 3D's keyword rule (training.recipes.sweethome3d.classify: whole words,
the rightmost keyword of a name wins), so every classes file reads the same way.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image
from scipy import ndimage

from training.recipes.sources import MAX_TEXTURE_SIDE, SourceError, bounded_image
from training.recipes.sweethome3d import assign_classes, load_keyword_map

__all__ = ["decode_image", "bleed_cutouts", "checked_faces", "build_mesh",
           "labels_for", "with_article", "join_words"]

# A texture header may claim any size; refuse before decoding what no asset needs.
_MAX_TEXTURE_PIXELS = (8 * MAX_TEXTURE_SIDE) ** 2


def decode_image(data: bytes, shown: str) -> Image.Image:
    """Encoded image bytes (PNG, TGA, BMP, JPEG) -> a bounded RGB(A) PIL image."""
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > _MAX_TEXTURE_PIXELS:
            raise SourceError(f"{shown}: a {width}x{height} texture is above the limit")
        image.load()
    except SourceError:
        raise
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, struct.error...
        raise SourceError(f"{shown}: not a readable image ({type(exc).__name__}: {exc})") from None
    return bounded_image(image)


def checked_faces(faces: np.ndarray, n_vertices: int, shown: str) -> np.ndarray:
    """(F, 3) int64 faces, refused when an index falls outside the vertex list."""
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        raise SourceError(f"{shown}: a face index ({faces.min()}..{faces.max()}) is outside "
                          f"the {n_vertices} vertices")
    return faces


def build_mesh(vertices: np.ndarray, faces: np.ndarray, *, uv: np.ndarray | None = None,
               image: Image.Image | None = None, colour=None, alpha_mask: bool = False,
               two_sided: bool = False, name: str = "") -> trimesh.Trimesh:
    """A trimesh mesh with a glTF material: the texture over uv, or a flat colour (rgb(a) 0..1).

    uv follow OpenGL (v = 0 at the bottom row of the image), as trimesh keeps them.
    alpha_mask: the texture's alpha cuts the surface out (leaves), as the game renders it
    (see bleed_cutouts for the colour under the cut-outs).
    """
    rgba = None if colour is None else np.clip(np.r_[np.asarray(colour, float)[:4], [1.0]][:4], 0, 1)
    material = trimesh.visual.material.PBRMaterial(
        name=name or None,
        baseColorTexture=image if uv is not None else None,
        baseColorFactor=None if image is not None and uv is not None else rgba,
        alphaMode="MASK" if alpha_mask and image is not None and image.mode == "RGBA" else None,
        doubleSided=two_sided)
    visual = trimesh.visual.TextureVisuals(uv=uv if image is not None else None, material=material)
    return trimesh.Trimesh(vertices=np.asarray(vertices, dtype=np.float64), faces=faces,
                           visual=visual, process=False, validate=False)


def bleed_cutouts(image: Image.Image) -> Image.Image:
    """An RGBA texture whose cut-out texels (alpha < 0.5, never drawn under MASK) take the
    colour of the nearest kept texel: a sampler that ignores alpha then sees leaf green on
    a billboard tree, not the black the artist left under the cut-outs."""
    if image.mode != "RGBA":
        return image
    pixels = np.array(image)
    cut = pixels[..., 3] < 128
    if cut.any() and not cut.all():
        rows, cols = ndimage.distance_transform_edt(cut, return_distances=False, return_indices=True)
        pixels[..., :3] = pixels[rows, cols, :3]
    return Image.fromarray(pixels, "RGBA")


def labels_for(texts: dict[str, str], classes_file: Path, min_items: int = 5) -> dict[str, str]:
    """id -> label from each id's classification text, keeping labels with >= min_items ids."""
    kept, _dropped = assign_classes(texts, load_keyword_map(classes_file), min_items)
    return kept


def with_article(phrase: str) -> str:
    """'archer' -> 'an archer', 'tree' -> 'a tree', 'unit' -> 'a unit'."""
    vowel = phrase[:1] in "aeio" or (phrase[:1] == "u" and not phrase.startswith(("uni", "use")))
    return f"{'an' if vowel else 'a'} {phrase}"


def join_words(items: list[str]) -> str:
    """['gold', 'stone', 'wood'] -> 'gold, stone and wood'."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"
