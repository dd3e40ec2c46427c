"""Headless bpy worker: `python -m blender_addon.worker` (the ulip2 CLI starts these).

Reads one JSON job per line on stdin, {"path", "key", "store", "settings": {...}}, imports
the file into an empty Blender, writes its triplet record (render + points) and answers
one JSON line {"key", "ok", "reason"}. Blender prints its own progress on stdout, so the
answers go to the stdout the parent reads and everything else is moved to stderr. A file
that crashes Blender kills only this process; the parent records it as failed and starts
a new worker.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import bpy

from core.errors import AssetError
from core.triplets import TripletStore

from .render import ViewSettings
from .triplets import write_triplet

# Importer per file extension (operator path under bpy.ops, keyword arguments).
IMPORTERS = {
    ".glb": ("import_scene.gltf", {}), ".gltf": ("import_scene.gltf", {}),
    ".fbx": ("import_scene.fbx", {}),
    ".obj": ("wm.obj_import", {}), ".ply": ("wm.ply_import", {}), ".stl": ("wm.stl_import", {}),
    ".usd": ("wm.usd_import", {}), ".usda": ("wm.usd_import", {}), ".usdc": ("wm.usd_import", {}),
    ".usdz": ("wm.usd_import", {}), ".abc": ("wm.alembic_import", {}),
}


def load_asset(path: Path) -> list:
    """Open or import `path` into an empty Blender; its renderable top-level objects."""
    if path.suffix.lower() == ".blend":
        bpy.ops.wm.open_mainfile(filepath=str(path), load_ui=False)
    else:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        operator, kwargs = IMPORTERS[path.suffix.lower()]
        group, name = operator.split(".")
        try:
            result = getattr(getattr(bpy.ops, group), name)(filepath=str(path), **kwargs)
        except RuntimeError as exc:  # importers report bad files as operator errors
            raise AssetError(path, f"Blender could not import it: {str(exc).strip().splitlines()[-1]}") from None
        if "FINISHED" not in result:
            raise AssetError(path, f"Blender's importer gave up ({', '.join(result)})")
    # Every object the file's scene renders (instancers bring their instances along).
    return [obj for obj in bpy.context.scene.objects if not obj.hide_render]


def run_job(job: dict) -> dict:
    path = Path(job["path"])
    try:
        objects = load_asset(path)
        write_triplet(TripletStore(job["store"]), objects, settings=ViewSettings(**job["settings"]),
                      source=str(path), name=path.stem, key=job["key"], redo=True)
    except AssetError as exc:
        return {"key": job["key"], "ok": False, "reason": exc.reason}
    except Exception as exc:  # any other Python error in this file must not stop the batch
        traceback.print_exc()
        return {"key": job["key"], "ok": False, "reason": f"{type(exc).__name__}: {exc}"}
    return {"key": job["key"], "ok": True, "reason": None}


def main() -> None:
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # Blender's C code prints to fd 1: send it to the log, not the parent
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if line.strip():
            answers.write(json.dumps(run_job(json.loads(line))) + "\n")


if __name__ == "__main__":
    main()
