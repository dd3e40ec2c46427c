"""The Red Eclipse source on tiny files made here (CI has no redeclipse-data): model scripts,
the OBJ/IQM/md5mesh/md3 readers, frames, names and classes, and hostile files."""

from __future__ import annotations

import io
import logging
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.recipes.sources import SourceError, redeclipse

# A tetrahedron 1 wide and 3 tall along the file's up axis (z), counter-clockwise outward.
TETRA = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0.3, 0.3, 3]], dtype=np.float32)
TETRA_CCW = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [2, 0, 3]])
UV = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float32)


def data_dir(root: Path) -> Path:
    data = root / redeclipse.DATA
    data.mkdir(parents=True, exist_ok=True)
    return data


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    return path


def png(path: Path, colour=(200, 30, 30)) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buffer, format="PNG")
    return write(path, buffer.getvalue())


def obj_text(tall_axis: int = 1, bad_index: bool = False) -> str:
    """The tetrahedron as a y-up OBJ (tall along `tall_axis`) with uv, in group 'body'."""
    v = TETRA[:, [0, 2, 1]] if tall_axis == 1 else TETRA
    lines = [f"v {x} {y} {z}" for x, y, z in v] + [f"vt {a} {b}" for a, b in UV] + ["g body"]
    faces = TETRA_CCW[:, ::-1] if tall_axis == 1 else TETRA_CCW  # the y/z swap mirrors
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in faces]
    if bad_index:
        lines.append("f 1/1 2/2 99/1")
    return "\n".join(lines) + "\n"


def iqm_bytes(positions=TETRA, triangles=TETRA_CCW[:, ::-1], uv=UV, num_vertexes=None,
              mesh_triangles=None) -> bytes:
    """An IQM v2 file with one mesh 'body' (material 'skin.png'); triangles clockwise, as
    the format stores them."""
    text = b"\0body\0skin.png\0"
    n = len(positions)
    header_size = 124
    ofs_text = header_size
    ofs_meshes = ofs_text + len(text)
    ofs_arrays = ofs_meshes + 24
    ofs_pos = ofs_arrays + 2 * 20
    ofs_uv = ofs_pos + n * 12
    ofs_tris = ofs_uv + n * 8
    size = ofs_tris + len(triangles) * 12
    counts = [0] * 27
    fields = dict(version=2, filesize=size, num_text=len(text), ofs_text=ofs_text, num_meshes=1,
                  ofs_meshes=ofs_meshes, num_vertexarrays=2, num_vertexes=num_vertexes or n,
                  ofs_vertexarrays=ofs_arrays, num_triangles=len(triangles), ofs_triangles=ofs_tris)
    names = ("version filesize flags num_text ofs_text num_meshes ofs_meshes num_vertexarrays "
             "num_vertexes ofs_vertexarrays num_triangles ofs_triangles").split()
    for key, value in fields.items():
        counts[names.index(key)] = value
    out = struct.pack("<16s27I", b"INTERQUAKEMODEL\0", *counts) + text
    out += struct.pack("<6I", 1, 6, 0, n, 0, mesh_triangles if mesh_triangles is not None else len(triangles))
    out += struct.pack("<5I", 0, 0, 7, 3, ofs_pos) + struct.pack("<5I", 1, 0, 7, 2, ofs_uv)
    out += np.asarray(positions, "<f4").tobytes() + np.asarray(uv, "<f4").tobytes()
    return out + np.asarray(triangles, "<u4").tobytes()


def md5_text(weight_joint: int = 1, bad_triangle: bool = False) -> str:
    """Joint 0 at the origin unturned, joint 1 at (0, 0, 1) turned 90 degrees about z
    (stored as md5 does: x, y, z with w implied <= 0). Vertex 3 hangs half on each."""
    s = np.sin(np.pi / 4)
    joints = ['"root" -1 ( 0 0 0 ) ( 0 0 0 )', f'"top" 0 ( 0 0 1 ) ( 0 0 {-s:.9f} )']
    verts = [f"vert {i} ( {u} {v} ) {i} {1 if i < 3 else 2}" for i, (u, v) in enumerate(UV)]
    triangles = TETRA_CCW[:, ::-1].copy()
    if bad_triangle:
        triangles[1, 2] = 9
    tris = [f"tri {i} {a} {b} {c}" for i, (a, b, c) in enumerate(triangles)]
    weights = [f"weight {i} 0 1.0 ( {x} {y} {z} )" for i, (x, y, z) in enumerate(TETRA[:3])]
    weights.append(f"weight 3 {weight_joint} 0.5 ( 2 0 0 )")  # -> (0, 2, 1) after the turn
    weights.append("weight 4 0 0.5 ( 0 0 1 )")  # half each: vertex 3 at (0, 1, 1)
    return "\n".join(["MD5Version 10", 'commandline ""', "numJoints 2", "numMeshes 1",
                      "joints {", *joints, "}", "mesh {", "// meshes: body", 'shader "skin.png"',
                      "numverts 4", *verts, "numtris 4", *tris, "numweights 5", *weights, "}"]) + "\n"


def md3_bytes(triangles=TETRA_CCW[:, ::-1], surfaces: int = 1) -> bytes:
    """An md3 (version 15) of one frame and one surface: triangles, st, then xyz + normal."""
    n, t = len(TETRA), len(triangles)
    ofs_uv, ofs_xyz = 108 + t * 12, 108 + t * 12 + n * 8
    size = ofs_xyz + n * 8
    header = struct.pack("<4si64si4i4i", b"IDP3", 15, b"tree", 0, 1, 0, surfaces, 0,
                         0, 0, 108, 108 + size)
    surface = struct.pack("<4s64si4i5i", b"IDP3", b"bark", 0, 1, 0, n, t,
                          108, 108, ofs_uv, ofs_xyz, size)
    xyz = np.concatenate([(TETRA * 64).astype("<i2"), np.zeros((n, 1), "<i2")], axis=1)
    body = np.asarray(triangles, "<i4").tobytes() + np.asarray(UV, "<f4").tobytes() + xyz.tobytes()
    return header + surface + body


def y_extent_is_largest(meshes) -> bool:
    vertices = np.concatenate([m.vertices for m in meshes])
    extent = vertices.max(0) - vertices.min(0)
    return extent[1] == extent.max() and extent[1] > 2 * max(extent[0], extent[2])


def outward(meshes) -> bool:
    m = meshes[0]
    return m.volume > 0


# ---- formats and frames --------------------------------------------------------------------

def test_obj_y_up_stays_up_with_its_skin(tmp_path):
    data = data_dir(tmp_path)
    write(data / "dziq/hydrant/hydrant.obj", obj_text())
    png(data / "dziq/hydrant/diffuse.png")
    write(data / "dziq/hydrant/obj.cfg", "objload hydrant.obj  // the mesh\nobjskin body diffuse.png\n")
    [obj] = redeclipse.objects(tmp_path)
    meshes = obj.load()
    assert y_extent_is_largest(meshes) and outward(meshes)
    assert meshes[0].visual.kind == "texture"
    assert meshes[0].visual.material.image.size == (4, 4)
    assert obj.id == "dziq/hydrant/hydrant" and obj.name == "hydrant"
    assert obj.texts[0] == "a hydrant" and "Red Eclipse" in obj.texts[1] and "dziq" in obj.texts[1]
    assert 2 <= len(obj.texts) <= 4
    assert obj.files == [f"{redeclipse.DATA.as_posix()}/dziq/hydrant/{f}"
                         for f in ("obj.cfg", "hydrant.obj", "diffuse.png")]


def test_iqm_z_up_turns_to_y_up_counter_clockwise(tmp_path):
    path = write(tmp_path / "m.iqm", iqm_bytes())
    [part] = redeclipse.read_iqm(path)
    assert part.name == "body" and part.texture == "skin.png"
    assert len(part.faces) == 4
    np.testing.assert_allclose(part.uv[:, 1], 1 - UV[:, 1])  # top-origin -> bottom-origin
    data = data_dir(tmp_path)
    write(data / "vanities/hat/hat.iqm", iqm_bytes())
    png(data / "vanities/hat/skin.png")
    write(data / "vanities/hat/iqm.cfg", "iqmload hat.iqm\n")
    [obj] = redeclipse.objects(tmp_path)
    meshes = obj.load()
    assert y_extent_is_largest(meshes) and outward(meshes)
    assert meshes[0].visual.kind == "texture"  # the engine's default skin.png beside the mesh
    assert "wearable accessory" in obj.texts[1]


def test_md5mesh_bind_pose_from_joints_and_weights(tmp_path):
    path = write(tmp_path / "m.md5mesh", md5_text())
    [part] = redeclipse.read_md5mesh(path)
    np.testing.assert_allclose(part.vertices[:3], TETRA[:3], atol=1e-6)
    np.testing.assert_allclose(part.vertices[3], [0, 1, 1], atol=1e-6)
    assert part.name == "body" and part.texture == "skin.png"


def test_md3_frame_zero_in_y_up(tmp_path):
    data = data_dir(tmp_path)
    write(data / "vegetation/tree01/tris.md3", md3_bytes())
    write(data / "vegetation/tree01/md3.cfg", 'md3load "tris.md3"\nmdlscale 80\n')
    [obj] = redeclipse.objects(tmp_path)
    meshes = obj.load()
    assert y_extent_is_largest(meshes) and outward(meshes)
    assert obj.name == "tree" and obj.texts[1].startswith("a tree, a plant")


def test_mdlpitch_turns_the_model_over(tmp_path):
    data = data_dir(tmp_path)
    write(data / "snipergoth/fan/fan.obj", obj_text())
    write(data / "snipergoth/fan/obj.cfg", "objload fan.obj\nmdlpitch 180\n")
    [obj] = redeclipse.objects(tmp_path)
    [mesh] = obj.load()
    apex = mesh.vertices[3]
    assert apex[1] == mesh.vertices[:, 1].min()  # the tall tip now points down


# ---- discovery: one object per mesh, names, classes ----------------------------------------

def test_variants_and_duplicates_are_one_object(tmp_path):
    data = data_dir(tmp_path)
    write(data / "weapons/pistol/pistol.iqm", iqm_bytes())
    write(data / "weapons/pistol/item/iqm.cfg", "iqmload ../pistol.iqm\nmdlroll 15\n")
    write(data / "weapons/pistol/vwep/iqm.cfg", "iqmload ../pistol.iqm\n")
    write(data / "weapons/pistol/hwep/iqm.cfg", "iqmload ../hud.iqm\n")  # first-person view
    write(data / "weapons/pistol/hud.iqm", iqm_bytes())
    write(data / "vanities/horn/left/mesh.iqm", iqm_bytes(positions=TETRA * 2))
    write(data / "vanities/horn/left/iqm.cfg", "iqmload mesh.iqm\n")
    write(data / "vanities/horn/right/mesh.iqm", iqm_bytes(positions=TETRA * 3))
    write(data / "vanities/horn/right/iqm.cfg", "iqmload mesh.iqm\n")
    write(data / "vanities/copy/mesh.iqm", iqm_bytes(positions=TETRA * 2))  # same bytes as left
    write(data / "vanities/copy/iqm.cfg", "iqmload mesh.iqm\n")
    write(data / "weapons/pistol/anim.iqm", b"INTERQUAKEMODEL\0")  # loaded by no script
    found = {o.id: o for o in redeclipse.objects(tmp_path)}
    # the right twin is skipped; copy/ holds the same bytes as horn/left/ and comes first
    assert sorted(found) == ["vanities/copy/mesh", "weapons/pistol/pistol"]
    assert found["weapons/pistol/pistol"].files[0].endswith("weapons/pistol/item/iqm.cfg")
    assert found["weapons/pistol/pistol"].texts[1] == "a pistol, a weapon from the game Red Eclipse"


def test_labels_need_five_models_and_names_read_well(tmp_path):
    data = data_dir(tmp_path)
    for i in range(1, 6):
        write(data / f"unnamed/door{i:02d}/mesh.obj", obj_text() + f"# {i}\n")
        write(data / f"unnamed/door{i:02d}/obj.cfg", "objload mesh.obj\n")
    for folder in ("dziq/palm_tree01a", "nieb/sign_exit"):
        write(data / folder / "model.obj", obj_text() + f"# {folder}\n")
        write(data / folder / "obj.cfg", "objload model.obj\n")
    found = {o.id: o for o in redeclipse.objects(tmp_path)}
    assert {found[f"unnamed/door{i:02d}/mesh"].label for i in range(1, 6)} == {"door"}
    assert found["unnamed/door01/mesh"].texts[1] == "a door, a map model from the game Red Eclipse"
    assert found["dziq/palm_tree01a/model"].name == "palm tree"
    assert found["dziq/palm_tree01a/model"].label is None  # one tree: below five
    assert found["nieb/sign_exit/model"].name == "exit sign"  # from the classes file's names
    assert found["nieb/sign_exit/model"].texts[0] == "an exit sign"


def test_script_words(tmp_path):
    data = data_dir(tmp_path)
    write(data / "actors/player/player.cfg",
          'iqmdir "actors/player"\niqmskin * "<dds>diffuse.png" "<dds>mask.png"\nmdlyaw -90\n')
    write(data / "actors/player/male/iqm.cfg",
          'iqmload "RE_Player_male.iqm" player\nexec "actors/player/player.cfg"\n'
          'mdlpitch "" 1 // not an angle\n')
    script = redeclipse.read_script(data, Path("actors/player/male/iqm.cfg"))
    assert script.mesh == Path("actors/player/male/RE_Player_male.iqm") and script.format == "iqm"
    assert script.skins == {"*": Path("actors/player/diffuse.png")}
    assert script.rotation == (-90.0, 0.0, 0.0)
    assert redeclipse.read_script(data, Path("actors/player/player.cfg")) is None


# ---- hostile files -------------------------------------------------------------------------

@pytest.mark.parametrize("line", ["objload ../../../../../../etc/passwd",
                                  "objload /etc/passwd",
                                  "objload m.obj\nobjskin * ../../other/secret.png",
                                  "objload m.obj\nexec ../../outside.cfg"])
def test_references_leaving_the_collection_are_refused(tmp_path, line, caplog):
    data = data_dir(tmp_path)
    write(data / "dziq/crate/m.obj", obj_text())
    write(data / "dziq/crate/obj.cfg", line + "\n")
    with pytest.raises(SourceError, match=r"dziq/crate/obj\.cfg"):
        redeclipse.read_script(data, Path("dziq/crate/obj.cfg"))
    with caplog.at_level(logging.WARNING):
        assert list(redeclipse.objects(tmp_path)) == []
    assert "obj.cfg" in caplog.text


def test_exec_loop_is_bounded(tmp_path):
    data = data_dir(tmp_path)
    write(data / "dziq/loop/obj.cfg", "exec dziq/loop/obj.cfg\n")
    with pytest.raises(SourceError, match="nested deeper"):
        redeclipse.read_script(data, Path("dziq/loop/obj.cfg"))


def test_missing_mesh_is_a_logged_failure(tmp_path, caplog):
    data = data_dir(tmp_path)
    write(data / "dziq/ghost/obj.cfg", "objload ghost.obj\n")
    with caplog.at_level(logging.WARNING):
        assert list(redeclipse.objects(tmp_path)) == []
    assert "ghost.obj, which is missing" in caplog.text


def hostile_iqms() -> dict[str, bytes]:
    big = bytearray(iqm_bytes())
    struct.pack_into("<I", big, 16 + 4 * 8, 10 ** 9)  # num_vertexes
    return {
        "garbage": b"\x00\xff" * 300,
        "truncated": iqm_bytes()[:-20],
        "bad index": iqm_bytes(triangles=np.array([[0, 1, 7]])),
        "absurd count": bytes(big),
        "past the arrays": iqm_bytes(mesh_triangles=50),
    }


@pytest.mark.parametrize("case", ["garbage", "truncated", "bad index", "absurd count", "past the arrays"])
def test_hostile_iqm_raises_naming_the_file(tmp_path, case):
    path = write(tmp_path / f"{case.replace(' ', '_')}.iqm", hostile_iqms()[case])
    with pytest.raises(SourceError, match=path.name):
        redeclipse.read_iqm(path)


def test_animation_only_iqm_is_refused(tmp_path):
    raw = bytearray(iqm_bytes())
    struct.pack_into("<I", raw, 16 + 4 * 5, 0)  # num_meshes
    path = write(tmp_path / "idle.iqm", bytes(raw))
    with pytest.raises(SourceError, match="animation-only"):
        redeclipse.read_iqm(path)


@pytest.mark.parametrize("text", [md5_text(weight_joint=5), md5_text(bad_triangle=True),
                                  "garbage\n" * 10, md5_text().replace("numverts 4", "numverts 9"),
                                  md5_text().replace("MD5Version 10", "MD5Version 6")])
def test_hostile_md5mesh_raises_naming_the_file(tmp_path, text):
    path = write(tmp_path / "bad.md5mesh", text)
    with pytest.raises(SourceError, match="bad.md5mesh"):
        redeclipse.read_md5mesh(path)


@pytest.mark.parametrize("raw", [md3_bytes()[:150], b"IDP3" + b"\xff" * 200,
                                 md3_bytes(triangles=np.array([[0, 1, 40]])),
                                 md3_bytes(surfaces=100000)])
def test_hostile_md3_raises_naming_the_file(tmp_path, raw):
    path = write(tmp_path / "bad.md3", raw)
    with pytest.raises(SourceError, match="bad.md3"):
        redeclipse.read_md3(path)


def test_obj_with_a_bad_index_raises_on_load(tmp_path):
    data = data_dir(tmp_path)
    write(data / "dziq/bad/bad.obj", obj_text(bad_index=True))
    write(data / "dziq/bad/obj.cfg", "objload bad.obj\n")
    [obj] = redeclipse.objects(tmp_path)
    with pytest.raises(SourceError, match="bad.obj"):
        obj.load()


def test_missing_data_folder(tmp_path):
    with pytest.raises(SourceError, match="redeclipse-data"):
        list(redeclipse.objects(tmp_path))
