"""Mesh files -> SurfaceParts (world space, one colour source each) via trimesh.

The formats only Blender reads (core.formats.BLENDER_FORMATS) are not read here: they go
through the Blender worker, which extracts arrays in bpy and calls the same sampler.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import trimesh
from PIL import Image

from core.errors import AssetError
from core.formats import BLENDER_FORMATS, TRIMESH_FORMATS
from core.paths import NOT_REGULAR, NOT_UTF8_NAME, not_utf8_name
from core.sampling import FileBudget, SurfacePart, sample_points

#: Textures are decoded whole before they are downscaled (3 or 4 bytes a pixel): larger ones
#: are not read at all, as decompression bombs.
MAX_DECODED_PIXELS = 16384 * 16384
# And PIL refuses them elsewhere in the process (it warns past its limit, refuses past twice).
PIL_LIMIT = MAX_DECODED_PIXELS // 2
Image.MAX_IMAGE_PIXELS = PIL_LIMIT

log = logging.getLogger(__name__)


def load_parts(path: str | os.PathLike) -> list[SurfacePart]:
    """Read a mesh file into world-space SurfaceParts, one per mesh instance in its scene.

    Degenerate or non-finite geometry is left for sample_points to judge (load_points
    names the file in that error).
    """
    shown = not_utf8_name(path)
    if shown is not None:  # trimesh names scene nodes after the file, and cannot encode it
        raise AssetError(shown, NOT_UTF8_NAME)
    scene = _load_scene(path)
    parts = []
    budget = FileBudget(path)
    textures = _Textures(path, budget)
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        mesh = scene.geometry.get(name)
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            continue
        budget.add_mesh(len(mesh.faces), len(mesh.vertices))
        parts.append(_part(mesh, np.asarray(transform, dtype=np.float64), textures))
    if not parts:
        raise AssetError(path, "no triangles (a point cloud or lines only?)")
    return parts


def load_points(path: str | os.PathLike, n_points: int, *, seed: int = 0) -> np.ndarray:
    """load_parts + sample_points: (n_points, 9) float32 xyz, rgb, normal on the unit sphere."""
    parts = load_parts(path)
    try:
        return sample_points(parts, n_points, seed=seed)
    except AssetError as error:
        raise AssetError(path, error.reason) from None


#: Material slots that may hold a texture image (trimesh's SimpleMaterial, then PBRMaterial).
_TEXTURE_SLOTS = ("image", "baseColorTexture", "metallicRoughnessTexture", "normalTexture", "emissiveTexture",
                  "occlusionTexture")


def as_glb(path: str | os.PathLike) -> bytes:
    """A file Blender has no importer for (.off, .dae) as glTF binary, so a Blender worker
    renders the mesh trimesh reads: checked and bounded as load_parts reads it, in the same
    frame (glTF is y-up, as trimesh reads every format). Textures too large to decode are
    left out, as load_parts leaves them out of the points."""
    load_parts(path)  # the same checks and bounds; raises AssetError naming the file
    scene = _load_scene(path)  # read again: load_parts closes each texture once it has its pixels
    for mesh in scene.geometry.values():
        material = getattr(getattr(mesh, "visual", None), "material", None)
        for slot in _TEXTURE_SLOTS:
            image = getattr(material, slot, None)
            if isinstance(image, Image.Image) and image.width * image.height > MAX_DECODED_PIXELS:
                setattr(material, slot, None)
    Image.MAX_IMAGE_PIXELS = None  # decoded within MAX_DECODED_PIXELS, checked just above
    try:
        return scene.export(file_type="glb")
    finally:
        Image.MAX_IMAGE_PIXELS = PIL_LIMIT


def _load_scene(path) -> trimesh.Scene:
    name = os.fspath(path)
    extension = os.path.splitext(name)[1].lower()
    if not os.path.exists(name):
        raise AssetError(path, "file not found")
    if not os.path.isfile(name):
        raise AssetError(path, NOT_REGULAR)
    if extension not in TRIMESH_FORMATS:
        hint = (
            f"; {extension} files need the Blender worker"
            if extension in BLENDER_FORMATS
            else f"; {', '.join(BLENDER_FORMATS)} files need the Blender worker"
        )
        raise AssetError(
            path,
            f"unsupported file type {extension or '(no extension)'!r} "
            f"(supported: {', '.join(TRIMESH_FORMATS)}){hint}",
        )
    if os.path.getsize(name) == 0:
        raise AssetError(path, "empty file (0 bytes)")
    # trimesh opens images lazily (their headers only) and drops those PIL refuses without a
    # word: _Textures judges their sizes instead, and says what it drops. The limit is put
    # back as set above, not as found, so that loads in two threads cannot leave it off.
    Image.MAX_IMAGE_PIXELS = None
    try:
        # process=False: keep the file's arrays as they are; sampling needs no merging.
        return trimesh.load_scene(name, file_type=extension[1:], process=False)
    except MemoryError:  # this machine ran short, which says nothing of the file
        raise
    except Exception as error:  # trimesh raises anything from KeyError to struct.error
        if extension in (".glb", ".gltf") and _is_gltf_1(name):
            raise AssetError(path, "glTF 1.0 is not supported: re-export it as glTF 2.0") from None
        # trimesh retries with fallbacks; the first error in the chain names the real problem.
        while error.__context__ is not None and isinstance(error.__context__, Exception):
            error = error.__context__
        if isinstance(error, FileNotFoundError):
            # A .gltf's .bin buffer or an .obj's texture that did not travel with it.
            raise AssetError(path, f"a file it refers to is missing: {error}") from None
        message = str(error).strip().splitlines()
        detail = message[0][:200] if message else ""
        reason = f"cannot read as {extension[1:]} (corrupt or truncated?): {type(error).__name__}"
        raise AssetError(path, f"{reason}: {detail}" if detail else reason) from None
    finally:
        Image.MAX_IMAGE_PIXELS = PIL_LIMIT


def _is_gltf_1(name: str) -> bool:
    """Whether a file trimesh could not read is glTF 1.0: a binary header of version 1, or
    JSON whose asset.version is 1.x."""
    with open(name, "rb") as fh:
        head = fh.read(8)
        if head[:4] == b"glTF":
            return head[4:8] == (1).to_bytes(4, "little")
        fh.seek(0)
        try:
            version = json.load(fh)["asset"]["version"]
        except (ValueError, KeyError, TypeError):
            return False
    return str(version).split(".")[0] == "1"


def _part(mesh: trimesh.Trimesh, transform: np.ndarray, textures: _Textures) -> SurfacePart:
    """One mesh instance in world space with its colour source."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64) @ transform[:3, :3].T + transform[:3, 3]
    faces = np.asarray(mesh.faces, dtype=np.int64)
    colour = _colour_source(mesh, faces, textures)
    if np.linalg.det(transform[:3, :3]) < 0:
        # A mirroring transform turns the winding inside out; flip it to keep normals outward.
        faces = faces[:, ::-1]
        for key in ("corner_uvs", "corner_colors"):
            if key in colour:
                colour[key] = colour[key][:, ::-1]
    return SurfacePart(vertices=vertices, faces=faces, **colour)


def _colour_source(mesh: trimesh.Trimesh, faces: np.ndarray, textures: _Textures) -> dict:
    """SurfacePart colour keyword arguments for a mesh's visual; {} means grey."""
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.TextureVisuals):
        material = visual.material
        factor = _base_color(material)
        uv = visual.uv
        if isinstance(material, trimesh.visual.material.PBRMaterial):
            image, tint = material.baseColorTexture, factor
        else:
            # OBJ exporters write Kd beside map_Kd without meaning it as a tint.
            image, tint = getattr(material, "image", None), None
        if image is not None and uv is not None and len(uv) == len(mesh.vertices):
            texture = textures.get(image)
            if texture is not None:  # else over the caps: the material colour stands in
                return {"corner_uvs": np.asarray(uv, dtype=np.float64)[faces], "texture": texture,
                        "base_color": tint}
        return {} if factor is None else {"base_color": factor}
    if isinstance(visual, trimesh.visual.ColorVisuals):
        if visual.kind == "vertex":
            return {"corner_colors": np.asarray(visual.vertex_colors)[faces]}
        if visual.kind == "face":
            return {"corner_colors": np.repeat(np.asarray(visual.face_colors)[:, None], 3, axis=1)}
    return {}


def _base_color(material) -> np.ndarray | None:
    """RGBA uint8 base colour of a PBR (baseColorFactor) or simple (diffuse) material."""
    if isinstance(material, trimesh.visual.material.PBRMaterial):
        factor = material.baseColorFactor
    else:
        factor = getattr(material, "diffuse", None)
    return None if factor is None else trimesh.visual.color.to_rgba(factor)


class _Textures:
    """A file's texture images as (H, W, 3) uint8, each read once (materials and instances
    share them) and within the file's budget; None for one that is not read."""

    def __init__(self, path, budget: FileBudget):
        self.path, self.budget, self.read = path, budget, {}

    def get(self, image: Image.Image) -> np.ndarray | None:
        if id(image) not in self.read:  # the scene keeps every image alive, so ids stay theirs
            try:
                self.read[id(image)] = self._read(image)
            finally:
                image.close()  # its full-size pixels go before the next texture's come
        return self.read[id(image)]

    def _read(self, image: Image.Image) -> np.ndarray | None:
        width, height = image.size
        if width * height > MAX_DECODED_PIXELS:
            log.warning("%s: a %dx%d texture is over %s pixels (a decompression bomb?): not read, the material "
                        "colour stands in", self.path, width, height, f"{MAX_DECODED_PIXELS:,}")
            return None
        size = self.budget.texture_size(width, height)
        if size != image.size:
            log.warning("%s: a %s", self.path, self.budget.texture_note(width, height, size))
            if size is None:
                return None
            image.draft("RGB", size)  # a JPEG decodes at 1/2 to 1/8 of its size, never whole
            # Nearest texels, as the sampler picks them: no filtered full-size copy is made.
            image = image.resize(size, Image.Resampling.NEAREST)
        return np.asarray(image.convert("RGB"))
