"""One mesh, every reader, both up conventions: the shipped default must embed them alike.

The chair of examples/ is written y-up as .glb (y-up by glTF's spec), .obj, .ply and .stl,
turned z-up (as CAD and game tools save them) as .obj, .ply and .stl, and through Blender
(z-up) as a .blend and an .fbx; `ulip2 index` reads the first seven with trimesh and the
Blender ones in its workers. Every pair of embeddings must have cosine >= 0.9. The mesh is
grey in all of them: .stl holds no colour."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from core.bundle import read_bundle
from core.library.indexer import bundle_id, index_paths
from core.library.store import Library
from core.runtime import PointEncoder

REPO = Path(__file__).resolve().parent.parent
_THROUGH_BLENDER = """
import sys
import bpy

glb, blend, fbx = sys.argv[1:4]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.gltf(filepath=glb)
bpy.ops.wm.save_as_mainfile(filepath=blend)
bpy.ops.export_scene.fbx(filepath=fbx)
"""


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """{file name: unit embedding by the shipped default} of the chair in every form."""
    pytest.importorskip("bpy")
    folder = tmp_path_factory.mktemp("frames")
    mesh = trimesh.load(REPO / "examples" / "chair.glb", force="mesh")
    mesh.visual = trimesh.visual.ColorVisuals(mesh)
    z_up = mesh.copy()
    z_up.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))  # +y onto +z
    mesh.export(folder / "y_up.glb")
    for extension in ("obj", "ply", "stl"):
        mesh.export(folder / f"y_up.{extension}")
        z_up.export(folder / f"z_up.{extension}")
    subprocess.run([sys.executable, "-c", _THROUGH_BLENDER, str(folder / "y_up.glb"), str(folder / "blender.blend"),
                    str(folder / "blender.fbx")], check=True, capture_output=True, timeout=120)
    encoder = PointEncoder(read_bundle("default"))
    with Library(folder / "lib.sqlite") as library:
        report = index_paths([folder], library, encoder, thumbnails=False)
        assert report.failed == [] and report.added == 9
        ids, vectors = library.embeddings(bundle_id(encoder.bundle))
        return {Path(library.assets()[i]["path"]).name: v for i, v in zip(ids, vectors)}


def _worst(embedded, names) -> tuple[float, str]:
    vectors = np.stack([embedded[n] for n in names])
    cosine = vectors @ vectors.T
    a, b = np.unravel_index(cosine.argmin(), cosine.shape)
    return float(cosine.min()), f"{names[a]} vs {names[b]}"


def test_every_reader_of_one_frame_gives_one_embedding(embedded):
    """The y-up files through trimesh, and the Blender ones (z-up in Blender, turned y-up)."""
    cosine, pair = _worst(embedded, ["y_up.glb", "y_up.obj", "y_up.ply", "y_up.stl", "blender.blend", "blender.fbx"])
    assert cosine >= 0.97, f"{pair}: cosine {cosine:.3f}"


# strict: the day the shipped default passes, this marker must go.
@pytest.mark.xfail(strict=True, reason="today's shipped default was trained y-up on one furniture catalogue: "
                   "0.23 between the chair's y-up and z-up files; the next default carries an up-axis scorer "
                   "(core/upright.py) and is trained on the frames it leaves")
def test_both_up_conventions_give_one_embedding(embedded):
    cosine, pair = _worst(embedded, sorted(embedded))
    assert cosine >= 0.9, f"{pair}: cosine {cosine:.3f}"
