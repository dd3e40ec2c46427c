"""The file formats Blender opens, and its importer for each: one table for the headless
workers, the Blender panels' Append and the desktop app's Open in Blender. Standard library
only: the Blender extension carries it."""

from __future__ import annotations

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
