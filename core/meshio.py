"""Mesh files -> SurfaceParts (world space, one colour source each) via trimesh.

.blend/.fbx/.usd are not read here: they go through the Blender worker, which extracts
arrays in bpy and calls the same sampler.
"""

from __future__ import annotations

import os

import numpy as np
import trimesh

from core.blender_formats import BLENDER_ONLY
from core.errors import AssetError
from core.sampling import SurfacePart, sample_points

SUPPORTED_EXTENSIONS = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")


def load_parts(path: str | os.PathLike) -> list[SurfacePart]:
    """Read a mesh file into world-space SurfaceParts, one per mesh instance in its scene.

    Degenerate or non-finite geometry is left for sample_points to judge (load_points
    names the file in that error).
    """
    scene = _load_scene(path)
    parts = []
    textures: dict = {}  # converted textures, shared by instances of one material
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        mesh = scene.geometry.get(name)
        if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
            continue
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


def _load_scene(path) -> trimesh.Scene:
    name = os.fspath(path)
    extension = os.path.splitext(name)[1].lower()
    if not os.path.exists(name):
        raise AssetError(path, "file not found")
    if not os.path.isfile(name):
        raise AssetError(path, "not a file")
    if extension not in SUPPORTED_EXTENSIONS:
        hint = (
            f"; {extension} files need the Blender worker"
            if extension in BLENDER_ONLY
            else "; .blend/.fbx/.usd files need the Blender worker"
        )
        raise AssetError(
            path,
            f"unsupported file type {extension or '(no extension)'!r} "
            f"(supported: {', '.join(SUPPORTED_EXTENSIONS)}){hint}",
        )
    if os.path.getsize(name) == 0:
        raise AssetError(path, "empty file (0 bytes)")
    try:
        # process=False: keep the file's arrays as they are; sampling needs no merging.
        return trimesh.load_scene(name, file_type=extension[1:], process=False)
    except MemoryError:  # this machine ran short, which says nothing of the file
        raise
    except Exception as error:  # trimesh raises anything from KeyError to struct.error
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


def _part(mesh: trimesh.Trimesh, transform: np.ndarray, textures: dict) -> SurfacePart:
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


def _colour_source(mesh: trimesh.Trimesh, faces: np.ndarray, textures: dict) -> dict:
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
            return {
                "corner_uvs": np.asarray(uv, dtype=np.float64)[faces],
                "texture": _texture(image, tint, textures),
            }
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


def _texture(image, factor: np.ndarray | None, textures: dict) -> np.ndarray:
    """Image as (H, W, 3) uint8, tinted by a base colour factor as glTF shades it."""
    key = (id(image), None if factor is None else tuple(factor))
    if key not in textures:
        rgb = np.asarray(image.convert("RGB"))
        if factor is not None and (factor[:3] < 255).any():
            rgb = (rgb * (factor[:3] / 255.0)).round().astype(np.uint8)
        textures[key] = rgb
    return textures[key]
