"""Thumbnails: a software-rasterised preview of an asset's sampled, coloured points.

Assets the Blender workers read (.blend, .fbx, .usd*) get a Workbench render instead
(blender_addon.render.thumbnail_settings, same size); this preview is for the rest and the
fallback. Pure numpy + Pillow (PNG encoding), so it runs in the indexer's loader processes
next to the sampler.
"""

from __future__ import annotations

import io

import numpy as np

from core.sampling import NORMAL, RGB, XYZ

THUMBNAIL_SIZE = 128
_BACKGROUND = (236, 236, 236)
# A three-quarter view from above, the way assets are usually shown in a browser.
_AZIMUTH, _ELEVATION = np.radians(35.0), np.radians(25.0)
_LIGHT = np.array([0.4, 0.8, 0.45]) / np.linalg.norm([0.4, 0.8, 0.45])


def _view_rotation() -> np.ndarray:
    """World -> camera: y up, the camera looking down -z after the rotation."""
    ca, sa, ce, se = np.cos(_AZIMUTH), np.sin(_AZIMUTH), np.cos(_ELEVATION), np.sin(_ELEVATION)
    yaw = np.array([[ca, 0, -sa], [0, 1, 0], [sa, 0, ca]])
    pitch = np.array([[1, 0, 0], [0, ce, -se], [0, se, ce]])
    return pitch @ yaw


def render_points(points: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 image of (N, 9) points (xyz on the unit sphere, rgb, normal):
    orthographic, painter's order (far points drawn first), 2x2 splats, lambert shading."""
    rotation = _view_rotation()
    xyz = points[:, XYZ].astype(np.float64) @ rotation.T
    normals = points[:, NORMAL].astype(np.float64) @ rotation.T
    # Normals face either way on open meshes; light the side facing the camera.
    shade = 0.45 + 0.55 * np.abs(normals @ (rotation @ _LIGHT))
    colour = np.clip(points[:, RGB] * shade[:, None], 0.0, 1.0)
    image = np.empty((size, size, 3), np.uint8)
    image[:] = _BACKGROUND
    margin = 0.06 * size
    scale = (size - 2 * margin - 2) / 2.0  # xyz lies within the unit sphere
    col = np.clip((xyz[:, 0] * scale + size / 2).astype(np.int64), 0, size - 2)
    row = np.clip((size / 2 - xyz[:, 1] * scale).astype(np.int64), 0, size - 2)
    order = np.argsort(xyz[:, 2])  # camera looks down -z: larger z is nearer, drawn last
    rgb = (np.nan_to_num(colour[order]) * 255).astype(np.uint8)
    for dr in (0, 1):
        for dc in (0, 1):
            image[row[order] + dr, col[order] + dc] = rgb
    return image


def thumbnail_png(points: np.ndarray, size: int = THUMBNAIL_SIZE) -> bytes:
    """render_points encoded as PNG bytes (what the store keeps)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(render_points(points, size), mode="RGB").save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
