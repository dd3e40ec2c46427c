"""Surface sampling: triangles (+ colour sources) in, normalised (N, 9) point arrays out.

The one sampler every caller uses (trimesh files, Blender, tests). Pure numpy, so it runs
inside an artist's Blender as well as in the ulip2 environment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from core.errors import AssetError

# Column layout of a sampled point array.
XYZ = slice(0, 3)
RGB = slice(3, 6)
NORMAL = slice(6, 9)
N_COLUMNS = 9

# ULIP-2 fills colourless assets with this grey (rgb = 0.4 everywhere).
DEFAULT_GREY = 0.4

#: What one file may cost, read by trimesh or from Blender's evaluated scene, every instance
#: counted: past these it is refused (sampling copies its arrays several times over).
MAX_FACES = 10_000_000
MAX_VERTICES = 10_000_000
#: The most pixels a texture is read at, and all of a file's textures together (8-bit RGB:
#: 48 MB and 192 MB). The sampler reads one texel a point: 10k points see nothing finer.
MAX_TEXTURE_PIXELS = 4096 * 4096
MAX_FILE_TEXTURE_PIXELS = 4 * MAX_TEXTURE_PIXELS


@dataclass
class SurfacePart:
    """One triangle mesh in world space with its colour source.

    Priority when several are given: texture (needs corner_uvs) > corner_colors >
    base_color > DEFAULT_GREY; a texture is tinted by base_color (glTF's base colour
    factor). Integer colours are read as 0..255, floats as 0..1.
    """

    vertices: np.ndarray  # (V, 3) float
    faces: np.ndarray  # (F, 3) int
    corner_uvs: np.ndarray | None = None  # (F, 3, 2) float
    texture: np.ndarray | None = None  # (H, W, 3 or 4) uint8
    corner_colors: np.ndarray | None = None  # (F, 3, 3 or 4)
    base_color: np.ndarray | None = None  # (3 or 4,)


class FileBudget:
    """What is left of one file's caps while its meshes and textures are read."""

    def __init__(self, path=None) -> None:
        self.path, self.faces, self.vertices = path, 0, 0
        self.texture_pixels = MAX_FILE_TEXTURE_PIXELS

    def add_mesh(self, faces: int, vertices: int) -> None:
        """Count one mesh instance; AssetError once the file passes MAX_FACES or MAX_VERTICES."""
        self.faces += faces
        self.vertices += vertices
        if self.faces > MAX_FACES or self.vertices > MAX_VERTICES:
            raise AssetError(self.path, f"too large to sample: at least {self.faces:,} faces and "
                                        f"{self.vertices:,} vertices, every instance counted (the caps are "
                                        f"{MAX_FACES:,} and {MAX_VERTICES:,}); decimate it or split it into files")

    def texture_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The size to read a width x height texture at, its aspect kept, taken from the
        file's pixels; None when none are left (the texture is then not read)."""
        pixels = min(width * height, MAX_TEXTURE_PIXELS, self.texture_pixels)
        if pixels < 1:
            return None
        scale = math.sqrt(pixels / (width * height))
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        self.texture_pixels -= size[0] * size[1]
        return size

    @staticmethod
    def texture_note(width: int, height: int, size: tuple[int, int] | None) -> str:
        """What is said of a width x height texture read at `size` (None: not read)."""
        if size is None:
            return (f"{width}x{height} texture not read: the file's textures have had their "
                    f"{MAX_FILE_TEXTURE_PIXELS:,} pixels; the material colour stands in")
        return (f"{width}x{height} texture read at {size[0]}x{size[1]} (textures are capped at "
                f"{MAX_TEXTURE_PIXELS:,} pixels, a file's at {MAX_FILE_TEXTURE_PIXELS:,})")


def normalize_unit_sphere(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre on the mean and scale so the farthest point has norm 1 (ULIP's pc_normalize).

    Returns (normalised xyz, centre, scale) with normalised = (xyz - centre) / scale.
    A single point (or all points coincident) keeps scale 1.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    centre = xyz.mean(axis=0)
    centred = xyz - centre
    scale = float(np.sqrt((centred**2).sum(axis=1)).max())
    if not scale > 0:
        scale = 1.0
    return centred / scale, centre, scale


def unit_sphere(points: np.ndarray) -> np.ndarray:
    """(B, N, C) float32 copy with each cloud's xyz centred and scaled to the unit sphere, as
    sample_points leaves one cloud and the encoder expects them (a no-op, to rounding, for
    sampled points)."""
    out = np.array(points, dtype=np.float32)
    xyz = out[..., :3] - out[..., :3].mean(axis=1, keepdims=True)
    scale = np.linalg.norm(xyz, axis=-1).max(axis=1)
    out[..., :3] = xyz / np.where(scale > 0, scale, 1.0)[:, None, None]
    return out


def sample_points(
    parts: SurfacePart | Sequence[SurfacePart], n_points: int, *, seed: int = 0
) -> np.ndarray:
    """Sample n_points uniformly by area over all parts' triangles.

    Returns (n_points, 9) float32: xyz normalised to the unit sphere, rgb in 0..1, and the
    unit face normal of each point's triangle. Same seed, same array.
    """
    if isinstance(parts, SurfacePart):
        parts = [parts]
    if int(n_points) < 1:
        raise AssetError(None, f"n_points must be at least 1 (got {n_points})")
    n_points = int(n_points)

    cleaned = [_clean(part, i, len(parts)) for i, part in enumerate(parts)]
    if not any(len(np.asarray(part.faces)) for part in parts):
        raise AssetError(None, "no faces (nothing to sample from)")
    cleaned = [c for c in cleaned if len(c.faces)]
    if not cleaned:
        raise AssetError(None, "every face touches a non-finite (NaN or inf) vertex")

    # Areas only at first; triangles are gathered again just for the sampled faces.
    double_area = np.concatenate([_double_areas(c.vertices, c.faces) for c in cleaned])
    cumulative = np.cumsum(double_area)
    total = cumulative[-1]
    if not np.isfinite(total):
        raise AssetError(None, "surface area overflows (vertex coordinates too large)")
    if not total > 0:
        raise AssetError(None, "zero total surface area (every triangle is degenerate)")

    rng = np.random.default_rng(seed)
    # Inverse-CDF face choice: faster than rng.choice(p=...) on millions of faces.
    face = np.searchsorted(cumulative, rng.random(n_points) * total, side="right")
    face = np.minimum(face, len(cumulative) - 1)
    # sqrt trick: uniform over the triangle rather than clustered at a corner.
    r1 = np.sqrt(rng.random(n_points))
    r2 = rng.random(n_points)
    bary = np.stack([1.0 - r1, r1 * (1.0 - r2), r1 * r2], axis=1)  # (n, 3)

    xyz = np.empty((n_points, 3))
    normals = np.empty((n_points, 3))
    rgb = np.empty((n_points, 3))
    offsets = np.cumsum([0] + [len(c.faces) for c in cleaned])
    owner = np.searchsorted(offsets, face, side="right") - 1
    for p in np.unique(owner):
        mask = owner == p
        part, local = cleaned[p], face[mask] - offsets[p]
        triangles = part.vertices[part.faces[local]]  # (k, 3, 3)
        xyz[mask] = np.einsum("nk,nkd->nd", bary[mask], triangles)
        cross = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
        normals[mask] = cross / np.linalg.norm(cross, axis=1, keepdims=True)
        rgb[mask] = _colours(part, local, bary[mask])

    out = np.empty((n_points, N_COLUMNS), dtype=np.float32)
    out[:, XYZ], _, _ = normalize_unit_sphere(xyz)
    out[:, RGB] = rgb
    out[:, NORMAL] = normals
    return out


def _double_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Twice each triangle's area, gathering one coordinate at a time (fast on 1M faces)."""
    x, y, z = (np.take(coord, faces) for coord in np.ascontiguousarray(vertices.T))
    ax, ay, az = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0], z[:, 1] - z[:, 0]
    bx, by, bz = x[:, 2] - x[:, 0], y[:, 2] - y[:, 0], z[:, 2] - z[:, 0]
    cx, cy, cz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
    return np.sqrt(cx * cx + cy * cy + cz * cz)


def _clean(part: SurfacePart, index: int, count: int) -> SurfacePart:
    """Validate one part's arrays; drop faces that touch non-finite vertices."""
    where = f"part {index}: " if count > 1 else ""
    vertices = np.asarray(part.vertices, dtype=np.float64)
    faces = np.asarray(part.faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise AssetError(None, f"{where}vertices must be (V, 3), got {vertices.shape}")
    if faces.size == 0:
        faces = faces.reshape(0, 3).astype(np.int64)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise AssetError(None, f"{where}faces must be (F, 3) triangles, got {faces.shape}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise AssetError(None, f"{where}faces must be integer indices, got {faces.dtype}")
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise AssetError(
            None,
            f"{where}face indices out of range ({faces.min()}..{faces.max()} "
            f"for {len(vertices)} vertices)",
        )

    corner_uvs = _corner_array(part.corner_uvs, len(faces), (2,), "corner_uvs", where)
    corner_colors = _corner_array(part.corner_colors, len(faces), (3, 4), "corner_colors", where)

    bad_vertex = ~np.isfinite(vertices).all(axis=1)
    if bad_vertex.any():
        keep = ~bad_vertex[faces].any(axis=1)
        faces = faces[keep]
        corner_uvs = None if corner_uvs is None else corner_uvs[keep]
        corner_colors = None if corner_colors is None else corner_colors[keep]

    texture = None
    if part.texture is not None and corner_uvs is not None:
        texture = np.asarray(part.texture)
        if texture.ndim != 3 or texture.shape[2] not in (3, 4) or 0 in texture.shape:
            raise AssetError(None, f"{where}texture must be (H, W, 3 or 4), got {texture.shape}")
    base_color = None
    if part.base_color is not None:
        base_color = np.asarray(part.base_color).reshape(-1)
        if base_color.shape not in ((3,), (4,)):
            raise AssetError(None, f"{where}base_color must have 3 or 4 values, got {base_color.shape}")
    return SurfacePart(vertices, faces, corner_uvs, texture, corner_colors, base_color)


def _corner_array(array, n_faces: int, last: tuple[int, ...], name: str, where: str):
    if array is None:
        return None
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[:2] != (n_faces, 3) or array.shape[2] not in last:
        want = " or ".join(str(n) for n in last)
        raise AssetError(None, f"{where}{name} must be ({n_faces}, 3, {want}), got {array.shape}")
    return array


def _unit_rgb(colors: np.ndarray) -> np.ndarray:
    """First three channels as floats in 0..1 (integers are read as 0..255)."""
    colors = np.asarray(colors)
    rgb = colors[..., :3].astype(np.float64)
    if np.issubdtype(colors.dtype, np.integer):
        rgb /= 255.0
    return np.clip(np.nan_to_num(rgb, nan=DEFAULT_GREY), 0.0, 1.0)


def _colours(part: SurfacePart, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """rgb (k, 3) for points on the given local faces, from the best colour source."""
    if part.texture is not None:
        uv = np.einsum("nk,nkd->nd", bary, part.corner_uvs[face].astype(np.float64))
        rgb = _unit_rgb(_texture_lookup(part.texture, uv))
        return rgb if part.base_color is None else rgb * _unit_rgb(part.base_color)
    if part.corner_colors is not None:
        return np.einsum("nk,nkd->nd", bary, _unit_rgb(part.corner_colors[face]))
    if part.base_color is not None:
        return np.broadcast_to(_unit_rgb(part.base_color), (len(face), 3))
    return np.full((len(face), 3), DEFAULT_GREY)


def _texture_lookup(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Nearest-texel lookup, v flipped (glTF/OBJ), UVs outside 0..1 wrapped (REPEAT)."""
    uv = np.nan_to_num(uv)
    # Wrap only what lies outside 0..1 so that u == 1.0 stays on the right edge.
    uv = np.where((uv < 0) | (uv > 1), np.mod(uv, 1.0), uv)
    height, width = texture.shape[:2]
    col = np.rint(uv[:, 0] * (width - 1)).astype(np.int64)
    row = np.rint((1.0 - uv[:, 1]) * (height - 1)).astype(np.int64)
    return texture[row, col]


def y_up(points: np.ndarray) -> np.ndarray:
    """Points sampled in Blender's z-up world, turned into the y-up frame the encoder sees
    every other asset in (glTF's, and OBJ's by convention, as trimesh reads them; Blender's
    importers turn those files z-up): (x, y, z) -> (x, z, -y), normals too. A .blend scene,
    an .fbx and an OBJ imported by Blender so all stand upright as they do in trimesh.
    Applied once, where points leave Blender (blender_addon.scene.extract.Geometry.points), and to
    version-1 triplet records, which kept Blender's frame."""
    out = np.array(points, dtype=np.float32, copy=True)
    for start in (0, 6) if out.shape[1] >= 9 else (0,):  # xyz, and the normals after rgb
        out[:, start + 1], out[:, start + 2] = points[:, start + 2], -points[:, start + 1]
    return out
