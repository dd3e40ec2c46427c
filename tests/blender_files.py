"""Asset files only Blender writes (.blend with marked assets, .fbx), made by bpy in a child
process so this test process's own bpy state (if any) is left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import sys
import bpy

blend, fbx, mark, abc = sys.argv[1], sys.argv[2], sys.argv[3] == "mark", sys.argv[4]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.mesh.primitive_cube_add(location=(0, 0, 0))
bpy.context.object.name = "Crate"
if mark:
    bpy.context.object.asset_mark()
bpy.ops.mesh.primitive_uv_sphere_add(location=(4, 0, 0), segments=16, ring_count=8)
bpy.context.object.name = "Ball"
if mark:
    bpy.context.object.asset_mark()
bpy.ops.mesh.primitive_cone_add(location=(-4, 0, 0))
bpy.context.object.name = "Cone"  # not marked: no asset of its own
bpy.ops.wm.save_as_mainfile(filepath=blend)
if fbx:
    bpy.ops.object.select_all(action="DESELECT")
    bpy.data.objects["Cone"].select_set(True)
    bpy.ops.export_scene.fbx(filepath=fbx, use_selection=True)
if abc:
    bpy.ops.object.select_all(action="DESELECT")
    bpy.data.objects["Cone"].select_set(True)
    bpy.ops.wm.alembic_export(filepath=abc, selected=True)
"""

MARKED = ["Ball", "Crate"]


def write_blend_files(folder: Path, *, mark: bool = True, fbx: bool = True, abc: bool = False) -> tuple[Path, Path | None]:
    """folder/scene.blend (Crate, Ball and Cone; Crate and Ball marked as assets when `mark`),
    folder/cone.fbx (the Cone alone) when `fbx`, and folder/cone.abc (Alembic) when `abc`."""
    folder.mkdir(parents=True, exist_ok=True)
    blend, fbx_path = folder / "scene.blend", folder / "cone.fbx" if fbx else None
    subprocess.run([sys.executable, "-c", _SCRIPT, str(blend), str(fbx_path or ""),
                    "mark" if mark else "-", str(folder / "cone.abc") if abc else ""], check=True,
                   capture_output=True, timeout=120)
    return blend, fbx_path
