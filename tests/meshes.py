"""Small generated meshes shared by the library and desktop-app tests."""

from __future__ import annotations

from pathlib import Path

import trimesh


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
