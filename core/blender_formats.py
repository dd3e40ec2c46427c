"""The file formats Blender opens, its importer for each (one table for the headless workers,
the Blender panels' Append and the desktop app's Open in Blender), and the turn from Blender's
frame to the encoder's. numpy and the standard library only: the Blender extension carries it."""

from __future__ import annotations

import numpy as np

#: Blender's importer per file extension: (bpy.ops module, operator). A .blend opens as it is.
IMPORTERS = {
    ".glb": ("import_scene", "gltf"), ".gltf": ("import_scene", "gltf"),
    ".fbx": ("import_scene", "fbx"),
    ".obj": ("wm", "obj_import"), ".ply": ("wm", "ply_import"), ".stl": ("wm", "stl_import"),
    ".usd": ("wm", "usd_import"), ".usda": ("wm", "usd_import"), ".usdc": ("wm", "usd_import"),
    ".usdz": ("wm", "usd_import"), ".abc": ("wm", "alembic_import"),
}
#: Every file Blender can bring in: its own .blend and what it imports.
BLENDER_READS = (".blend", *IMPORTERS)
#: Formats only Blender reads here; trimesh reads the others in-process.
BLENDER_ONLY = (".blend", ".fbx", ".usd", ".usda", ".usdc", ".usdz")


def y_up(points: np.ndarray) -> np.ndarray:
    """Points sampled in Blender's z-up world, turned into the y-up frame the encoder sees
    every other asset in (glTF's, and OBJ's by convention, as trimesh reads them; Blender's
    importers turn those files z-up): (x, y, z) -> (x, z, -y), normals too. A .blend scene,
    an .fbx and an OBJ imported by Blender so all stand upright as they do in trimesh."""
    out = np.array(points, dtype=np.float32, copy=True)
    for start in (0, 6) if out.shape[1] >= 9 else (0,):  # xyz, and the normals after rgb
        out[:, start + 1], out[:, start + 2] = points[:, start + 2], -points[:, start + 1]
    return out
