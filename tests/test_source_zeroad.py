"""The 0 A.D. source on a tiny public.zip made here: PMD reading, actors, templates, labels."""

from __future__ import annotations

import io
import math
import struct
import zipfile

import numpy as np
import pytest
import trimesh
from PIL import Image

from core.meshio import load_points
from training.recipes.sources import SourceError, zeroad

# A bad file is refused from what it says, before its claims are allocated: a refusal holds a
# few kilobytes at most (tracemalloc), where the counts refused here would take megabytes.
REFUSAL_BYTES = 2**20

MESH = "art/meshes/structural/temple.pmd"
ROOT_Y_UP = [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 2.0, 3.0)]   # game frame
SQRT_HALF = math.sqrt(0.5)


def pmd_bytes(vertices, faces, uvs=None, bones=(), props=(), version=4, blend=0xFF):
    """A PMD file: version 4 layout (3 lacks the UV set count), one UV set, no bone weights."""
    body = struct.pack("<I", len(vertices)) + (struct.pack("<I", 1) if version >= 4 else b"")
    for i, position in enumerate(vertices):
        uv = uvs[i] if uvs is not None else (0.0, 0.0)
        body += struct.pack("<3f3f2f", *position, 0.0, 1.0, 0.0, *uv)
        body += bytes([blend, 0xFF, 0xFF, 0xFF]) + struct.pack("<4f", 1.0, 0.0, 0.0, 0.0)
    body += struct.pack("<I", len(faces)) + b"".join(struct.pack("<3H", *f) for f in faces)
    body += struct.pack("<I", len(bones)) + b"".join(struct.pack("<7f", *b) for b in bones)
    body += struct.pack("<I", len(props))
    for name, translation, rotation, bone in props:
        body += struct.pack("<I", len(name)) + name.encode() + struct.pack("<3f4fB", *translation, *rotation, bone)
    return b"PSMD" + struct.pack("<II", version, len(body)) + body


def square(size=1.0, props=()):
    """A square on the ground (y = 0) of the game frame, UVs over the whole texture."""
    vertices = [(-size, 0.0, -size), (size, 0.0, -size), (size, 0.0, size), (-size, 0.0, size)]
    uvs = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]
    return pmd_bytes(vertices, [(0, 1, 2), (0, 2, 3)], uvs, props=props)


@pytest.fixture
def quick_error(allocated):
    """quick_error(data, match): read_pmd refuses data, naming the member, from what its
    header claims and before allocating it."""
    def refused(data: bytes, match: str):
        with allocated() as peak, pytest.raises(SourceError, match=match) as error:
            zeroad.read_pmd(data, MESH)
        assert str(error.value).startswith(MESH + ":")
        assert peak.bytes < REFUSAL_BYTES, peak.bytes
        return error

    return refused


# ---- PMD ------------------------------------------------------------------------------------

def test_pmd_vertices_come_back_in_the_gltf_frame():
    uvs = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    mesh = zeroad.read_pmd(pmd_bytes(ROOT_Y_UP, [(0, 1, 2)], uvs), MESH)
    # y stays up; the game's left-handed z is negated into glTF's right-handed frame.
    np.testing.assert_allclose(mesh.vertices, [(0, 0, 0), (1, 0, 0), (0, 2, -3)])
    np.testing.assert_array_equal(mesh.faces, [(0, 1, 2)])
    np.testing.assert_allclose(mesh.uv, uvs)
    np.testing.assert_allclose(mesh.normals, [(0, 1, 0)] * 3)
    assert set(mesh.prop_points) == {"root"}


def test_pmd_version_3_has_no_uv_set_count():
    mesh = zeroad.read_pmd(pmd_bytes(ROOT_Y_UP, [(0, 1, 2)], version=3), MESH)
    assert mesh.vertices.shape == (3, 3) and mesh.uv.shape == (3, 2)


def test_prop_point_on_a_bone_sits_where_the_rest_pose_puts_it():
    quarter_turn_y = (0.0, SQRT_HALF, 0.0, SQRT_HALF)
    bone = (0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)   # one up, not turned
    props = [("head", (0.0, 0.0, 1.0), quarter_turn_y, 0), ("loose", (2.0, 0.0, 0.0), (0, 0, 0, 1), 0xFF)]
    mesh = zeroad.read_pmd(pmd_bytes(ROOT_Y_UP, [(0, 1, 2)], bones=[bone], props=props), MESH)
    head = mesh.prop_points["head"]
    np.testing.assert_allclose(head[:3, 3], (0, 1, -1), atol=1e-6)
    # The game turns +x to -z; in the mirrored glTF frame that same turn takes +x to +z.
    np.testing.assert_allclose(head[:3, 0], (0, 0, 1), atol=1e-6)
    np.testing.assert_allclose(mesh.prop_points["loose"][:3, 3], (2, 0, 0))


@pytest.mark.parametrize("cut", [3, 11, 20, 60, -7, -1])
def test_truncated_pmd_names_the_member(cut, quick_error):
    data = pmd_bytes(ROOT_Y_UP, [(0, 1, 2)], props=[("head", (0, 0, 0), (0, 0, 0, 1), 0xFF)])
    # The header's data size no longer matches, or a section runs past the end.
    quick_error(data[:cut], "truncated|data|magic")


def test_truncated_pmd_with_a_fixed_size_stops_in_its_section(quick_error):
    data = pmd_bytes(ROOT_Y_UP, [(0, 1, 2)])
    cut = data[:-10]
    cut = cut[:8] + struct.pack("<I", len(cut) - 12) + cut[12:]
    quick_error(cut, "truncated in the (faces|bone|prop)")


def test_garbage_is_no_pmd(quick_error):
    quick_error(b"\x89PNG\r\n\x1a\n" + bytes(40), "no PSMD magic")
    quick_error(b"", "truncated")


def test_unknown_version_is_refused(quick_error):
    quick_error(pmd_bytes(ROOT_Y_UP, [(0, 1, 2)], version=2), "version 2")


def test_face_index_out_of_range(quick_error):
    quick_error(pmd_bytes(ROOT_Y_UP, [(0, 1, 3)]), "face index 3 out of range")


def test_bone_indices_are_checked(quick_error):
    quick_error(pmd_bytes(ROOT_Y_UP, [(0, 1, 2)], blend=7), "names bone 7 of 0")
    props = [("head", (0, 0, 0), (0, 0, 0, 1), 3)]
    quick_error(pmd_bytes(ROOT_Y_UP, [(0, 1, 2)], props=props), "on bone 3 of 0")


def test_non_finite_positions_are_refused(quick_error):
    quick_error(pmd_bytes([(0, 0, 0), (1, 0, 0), (0, float("nan"), 0)], [(0, 1, 2)]), "non-finite")


def absurd(field_offset: int, value: int) -> bytes:
    data = bytearray(pmd_bytes(ROOT_Y_UP, [(0, 1, 2)]))
    data[field_offset:field_offset + 4] = struct.pack("<I", value)
    return bytes(data)


def test_absurd_counts_fail_fast_without_allocating(quick_error):
    quick_error(absurd(12, 0xFFFFFFFF), "above the limit")                   # vertices
    quick_error(absurd(12, 1_000_000), "truncated in the vertices")         # in bounds, not in the file
    quick_error(absurd(16, 1_000_000), "UV sets")
    faces_at = 20 + 3 * 52   # header, counts, three 52-byte vertices
    quick_error(absurd(faces_at, 3_000_000), "truncated in the faces")
    quick_error(absurd(faces_at + 4 + 6, 1_000_000), "bones")
    quick_error(absurd(faces_at + 4 + 6 + 4, 0xFFFFFFF0), "prop points cannot fit")


# ---- a tiny public.zip ----------------------------------------------------------------------

def dds(top: tuple, bottom: tuple) -> bytes:
    """An 8x8 DXT1 texture: `top` colour in the image's upper half, `bottom` in the lower."""
    image = Image.new("RGB", (8, 8), bottom)
    image.paste(top, (0, 0, 8, 4))
    out = io.BytesIO()
    image.save(out, "DDS", pixel_format="DXT1")
    return out.getvalue()


TEMPLE_ACTOR = """<?xml version="1.0" encoding="utf-8"?>
<actor version="1">
  <group>
    <variant frequency="1" name="Athenian temple">
      <mesh>structural/temple.dae</mesh>
      <props>
        <prop actor="props/structures/athenians/temple_decor.xml" attachpoint="roof"/>
        <prop actor="props/units/weapons/arrow.xml" attachpoint="projectile"/>
        <prop actor="props/missing.xml" attachpoint="root"/>
      </props>
      <textures><texture file="structural/temple.png" name="baseTex"/></textures>
    </variant>
  </group>
  <group>
    <variant frequency="1" name="ungarrisoned"/>
    <variant name="garrisoned">
      <props><prop actor="props/special/common/garrison_flag.xml" attachpoint="garrisoned"/></props>
    </variant>
  </group>
  <group>
    <variant file="structures/alive.xml"/>
  </group>
</actor>
"""
DECOR_ACTOR = """<actor version="1"><group><variant frequency="1">
  <mesh>props/decor.dae</mesh></variant></group></actor>"""
ARROW_ACTOR = """<actor version="1"><group><variant frequency="1">
  <mesh>props/arrow.dae</mesh></variant></group></actor>"""
OAK_ACTOR = """<qualitylevels version="1">
  <actor quality="low"><group><variant><mesh>gaia/low.dae</mesh></variant></group></actor>
  <actor inline=""/>
  <inline version="1"><group>
    <variant frequency="0" name="never at random"><mesh>gaia/low.dae</mesh></variant>
    <variant frequency="1" name="tree_1"><mesh>gaia/oak.dae</mesh></variant>
  </group></inline>
</qualitylevels>"""
DECAL_ACTOR = """<actor version="1"><group><variant>
  <decal width="4" depth="4" angle="0" offsetx="0" offsetz="0"/>
  <textures><texture file="gaia/decal.png" name="baseTex"/></textures></variant></group></actor>"""
ALIVE_VARIANT = """<variant name="alive" frequency="1"><animations/></variant>"""
TEMPLATE_BASE = """<Entity><Identity><GenericName>Structure</GenericName>
  <Classes datatype="tokens">Structure ConquestCritical</Classes></Identity></Entity>"""
TEMPLATE_TEMPLE = """<Entity parent="template_structure"><Identity><GenericName>Temple</GenericName>
  <Classes datatype="tokens">-ConquestCritical</Classes>
  <VisibleClasses datatype="tokens">Town Temple</VisibleClasses></Identity></Entity>"""
TEMPLATE_ATHEN = """<Entity parent="civ/athen|template_structure_temple"><Identity>
  <SpecificName>Naos Parthenos</SpecificName>
  <History>The temple of Athena on the Acropolis. It was built in the fifth century.</History>
  </Identity><VisualActor><Actor>structures/athenians/temple.xml</Actor></VisualActor></Entity>"""
MIXIN_ATHEN = """<Entity><Identity><Classes datatype="tokens">Athenian</Classes></Identity></Entity>"""


@pytest.fixture()
def root(tmp_path):
    archive = tmp_path / zeroad.ARCHIVE
    archive.parent.mkdir(parents=True)
    roof = ("roof", (0.0, 5.0, 2.0), (0.0, 0.0, 0.0, 1.0), 0xFF)
    members = {
        "art/actors/structures/athenians/temple.xml": TEMPLE_ACTOR,
        "art/actors/props/structures/athenians/temple_decor.xml": DECOR_ACTOR,
        "art/actors/props/units/weapons/arrow.xml": ARROW_ACTOR,
        "art/actors/flora/trees/oak.xml": OAK_ACTOR,
        "art/actors/geology/decal_stone.xml": DECAL_ACTOR,
        "art/actors/particle/dust.xml": DECAL_ACTOR,
        "art/actors/units/broken.xml": "<actor><group>",
        "art/variants/structures/alive.xml": ALIVE_VARIANT,
        "art/meshes/structural/temple.dae.cached.pmd": square(4.0, props=[roof]),
        "art/meshes/props/decor.dae.cached.pmd": square(0.5),
        "art/meshes/props/arrow.dae.cached.pmd": square(0.1),
        "art/meshes/gaia/oak.dae.cached.pmd": pmd_bytes(ROOT_Y_UP, [(0, 1, 2)]),
        "art/meshes/gaia/low.dae.cached.pmd": b"PSMD not read at the highest quality",
        "art/textures/skins/structural/temple.png.cached.dds": dds((255, 0, 0), (0, 0, 255)),
        "simulation/templates/template_structure.xml": TEMPLATE_BASE,
        "simulation/templates/template_structure_temple.xml": TEMPLATE_TEMPLE,
        "simulation/templates/structures/athen/temple.xml": TEMPLATE_ATHEN,
        "simulation/templates/mixins/civ/athen.xml": MIXIN_ATHEN,
    }
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return tmp_path


@pytest.fixture()
def listed(root, monkeypatch):
    monkeypatch.setattr(zeroad, "MIN_LABELLED", 1)
    return {o.id: o for o in zeroad.objects(root)}


def test_objects_are_the_actors_with_a_mesh(listed):
    # No decal, particle or projectile object; the broken actor is listed and fails on load.
    assert sorted(listed) == ["flora/trees/oak", "props/structures/athenians/temple_decor",
                              "structures/athenians/temple", "units/broken"]
    with pytest.raises(SourceError, match="units/broken.xml: not well-formed XML"):
        listed["units/broken"].load()


def test_temple_names_texts_label_and_files(listed):
    temple = listed["structures/athenians/temple"]
    assert temple.key == "0ad/structures/athenians/temple"
    assert temple.name == "Athenian temple"
    assert temple.label == "temple"
    assert temple.texts == [
        "a temple", "Naos Parthenos, a temple",
        "Naos Parthenos: The temple of Athena on the Acropolis.",
        "Temple: town, temple", "an athenian temple", "Athenian temple, a building"]
    inside = [f.removeprefix(zeroad.ARCHIVE + ":") for f in temple.files]
    assert inside == ["art/actors/structures/athenians/temple.xml",
                      "art/meshes/structural/temple.dae.cached.pmd",
                      "art/textures/skins/structural/temple.png.cached.dds",
                      "art/actors/props/structures/athenians/temple_decor.xml",
                      "art/meshes/props/decor.dae.cached.pmd",
                      "simulation/templates/structures/athen/temple.xml"]


def test_template_parents_merge_tokens(root):
    archive = zeroad._Archive(root / zeroad.ARCHIVE)
    templates = {t.name: t for t in zeroad._Templates(archive).all()}
    # "-ConquestCritical" takes the parent's token away; the mixin (mixins/civ/athen) adds one.
    assert templates["template_structure_temple"].fields["Classes"] == ("Structure",)
    assert templates["structures/athen/temple"].fields["Classes"] == ("Structure", "Athenian")


def test_tree_without_template_is_named_by_its_path(listed):
    oak = listed["flora/trees/oak"]
    assert (oak.name, oak.label) == ("Oak tree", "tree")
    assert oak.texts == ["an oak tree", "Oak tree, a plant"]
    mesh, = oak.load()   # the highest quality level, its first variant the game picks at random
    np.testing.assert_allclose(mesh.vertices, [(0, 0, 0), (1, 0, 0), (0, 2, -3)])


def test_prop_sits_at_its_prop_point_and_the_texture_is_sampled_the_right_way_up(listed, tmp_path):
    temple, decor = listed["structures/athenians/temple"].load()
    # The roof point is at game (0, 5, 2): glTF (0, 5, -2).
    np.testing.assert_allclose(decor.vertices.mean(axis=0), (0, 5, -2))
    assert temple.visual.material.baseColorTexture.size == (8, 8)
    assert decor.visual.material.baseColorFactor.tolist() == list(zeroad.GREY)
    # UV v = 0.9 is near the top of the image (red), as glTF readers sample it.
    near_top = trimesh.Trimesh(vertices=temple.vertices, faces=temple.faces, process=False,
                               visual=trimesh.visual.TextureVisuals(
                                   uv=np.full((4, 2), 0.9), material=temple.visual.material))
    path = tmp_path / "temple.glb"
    trimesh.Scene([near_top]).export(path)
    rgb = load_points(path, 64)[:, 3:6]
    assert rgb[:, 0].mean() > 0.8 and rgb[:, 2].mean() < 0.2


def test_labels_under_the_threshold_are_dropped(root):
    assert all(o.label is None for o in zeroad.objects(root))
