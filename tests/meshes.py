"""Small generated meshes shared by the library and desktop-app tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import trimesh

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write_meshes(folder: Path, count: int, subdivisions: int = 1) -> list[Path]:
    """`count` small coloured meshes of varied shapes and formats under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    makers = [lambda i: trimesh.creation.box(extents=(1 + i % 3, 1, 0.5)),
              lambda i: trimesh.creation.icosphere(subdivisions=subdivisions, radius=1 + i % 2),
              lambda i: trimesh.creation.cylinder(radius=0.3, height=1 + i % 4),
              lambda i: trimesh.creation.cone(radius=0.5, height=1 + i % 3)]
    formats = ["glb", "ply", "obj", "stl"]
    paths = []
    for i in range(count):
        mesh = makers[i % len(makers)](i)
        mesh.visual.face_colors = [(37 * i) % 256, (91 * i) % 256, 120, 255]
        path = folder / f"mesh_{i:03d}.{formats[(i // len(makers)) % len(formats)]}"
        mesh.export(path)
        paths.append(path)
    return paths


def example_folders(root: Path) -> Path:
    """props/ with three examples (chair, lamp, table) and other/ with a copy of the chair
    named "chair copy.glb" under `root`: a library with a near twin to search. Returns root."""
    (root / "props").mkdir(parents=True)
    for name in ("chair.glb", "lamp.glb", "table.glb"):
        shutil.copy(EXAMPLES / name, root / "props" / name)
    (root / "other").mkdir()
    shutil.copy(EXAMPLES / "chair.glb", root / "other" / "chair copy.glb")
    return root
