"""Blender's importer for each file format it brings in, one table for the headless workers,
the panels' Append and the desktop app's Open in Blender. A .blend opens as it is. No bpy at
import: the desktop app reads the table outside Blender."""

from __future__ import annotations

import os

#: Blender's importer per file extension: (bpy.ops module, operator).
IMPORTERS = {
    ".glb": ("import_scene", "gltf"), ".gltf": ("import_scene", "gltf"),
    ".fbx": ("import_scene", "fbx"),
    ".obj": ("wm", "obj_import"), ".ply": ("wm", "ply_import"), ".stl": ("wm", "stl_import"),
    ".usd": ("wm", "usd_import"), ".usda": ("wm", "usd_import"), ".usdc": ("wm", "usd_import"),
    ".usdz": ("wm", "usd_import"), ".abc": ("wm", "alembic_import"),
}


def import_file(path: str | os.PathLike) -> set[str]:
    """Run the importer of `path`'s format on it; its operator's result. KeyError when
    Blender has none (the caller says so, naming the file)."""
    import bpy

    group, name = IMPORTERS[os.path.splitext(os.fspath(path))[1].lower()]
    return getattr(getattr(bpy.ops, group), name)(filepath=os.fspath(path))
