"""The Warzone 2100 source on PIE text and stats JSON zipped here (no warzone2100-data needed)."""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from training.recipes.sources import SourceError, warzone

# A bad file is refused from what it says, before its claims are allocated: a refusal holds a
# few kilobytes at most (tracemalloc), where the counts refused here would take megabytes.
REFUSAL_BYTES = 2**20

DATA = "usr/share/games/warzone2100"

# PIE 2: one level, a quad (a 4-point fan) standing in the x-y plane, uv in texels of 256.
HQ = """PIE 2
TYPE 200
TEXTURE 0 page-1.png 256 256
LEVELS 1
LEVEL 1
POINTS 4
\t0 0 10
\t64 0 10
\t64 128 10
\t0 128 10
POLYGONS 1
\t200 4 0 1 2 3 0 256 128 256 128 0 0 0
CONNECTORS 1
\t0 0 20
"""


def pie3(points, polygons, texture="page-1.png", extra=""):
    lines = [f"\t{x} {y} {z}" for x, y, z in points]
    return (f"PIE 3\nTYPE 200\nTEXTURE 0 {texture} 0 0\n{extra}LEVELS 1\nLEVEL 1\n"
            f"POINTS {len(points)}\n" + "\n".join(lines) + f"\nPOLYGONS {len(polygons)}\n"
            + "\n".join(f"\t{p}" for p in polygons) + "\n")


TRIANGLE = [(0, 0, 0), (1, 0, 0), (0, 1, 0)]
TREE = pie3(TRIANGLE, ["200 3 0 1 2 0 0 1 0 0 1"])


def png(colour=(10, 200, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (16, 16), (*colour, 255)).save(out, "PNG")
    return out.getvalue()


def zip_bytes(members: dict) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def make_root(tmp_path, base: dict, mp: dict | None = None):
    folder = tmp_path / DATA
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.wz").write_bytes(zip_bytes(base))
    (folder / "mp.wz").write_bytes(zip_bytes(mp or {"readme.txt": "mp"}))
    warzone._archives_of.cache_clear()
    warzone._page.cache_clear()
    return tmp_path


def base_members(hq=HQ):
    features = {f"Tree{i}": {"id": f"Tree{i}", "name": f"*Tree{i}*", "model": f"MITREE{i}.PIE",
                             "type": "TREE"} for i in range(5)}
    return {
        "structs/blhq.pie": hq,
        "structs/blhq_anim.pie": TREE,
        "structs/blwall.pie": TREE.replace("TYPE 200\n", "TYPE 200\nEVENT 1 blhq_anim.pie\n"),
        **{f"features/mitree{i}.pie": TREE for i in range(5)},
        "effects/fxboom.pie": TREE,
        "texpages/page-1.png": png(),
        "stats/structure.json": json.dumps({"A0CommandCentre": {
            "id": "A0CommandCentre", "name": "Command Centre (old)", "type": "HQ",
            "structureModel": ["BLHQ.PIE"]}}),
        "stats/features.json": json.dumps(features),
    }


@pytest.fixture
def root(tmp_path):
    # mp.wz's stats replace base.wz's, as the game loads them.
    mp = {"stats/structure.json": json.dumps({"A0CommandCentre": {
        "id": "A0CommandCentre", "name": "Command Center", "type": "HQ",
        "structureModel": ["blhq.pie"], "weapons": ["MG1"]}}),
          "stats/weapons.json": json.dumps({"MG1": {"name": "Machinegun"}})}
    return make_root(tmp_path, base_members(), mp)


def by_id(root):
    return {o.id: o for o in warzone.objects(root)}


def test_catalogue_names_texts_labels_and_variants(root):
    objects = by_id(root)
    # effects/ are no objects; blhq_anim only animates blwall (its EVENT model).
    assert sorted(objects) == ["features/mitree0", "features/mitree1", "features/mitree2",
                               "features/mitree3", "features/mitree4", "structs/blhq", "structs/blwall"]
    hq = objects["structs/blhq"]
    assert hq.name == "command center"
    assert hq.texts == ["a command center", "a command center, a hq structure",
                        "a command center armed with a machinegun"]
    assert hq.files == ["base.wz:structs/blhq.pie"]
    assert hq.label is None                                   # one HQ: under 5
    assert [objects[f"features/mitree{i}"].label for i in range(5)] == ["tree"] * 5
    assert objects["features/mitree0"].name == "tree"         # '*Tree0*' without its number


def test_pie2_quad_in_the_gltf_frame(root):
    (mesh,) = by_id(root)["structs/blhq"].load()
    # The fan 0-1-2-3 becomes (0,1,2), (0,2,3); z is mirrored and the winding reversed.
    expected = np.array([[2, 1, 0], [3, 2, 0]])
    points = np.array([[0, 0, -10], [64, 0, -10], [64, 128, -10], [0, 128, -10]], dtype=float)
    np.testing.assert_allclose(mesh.vertices, points[expected].reshape(-1, 3))
    np.testing.assert_array_equal(mesh.faces, np.arange(6).reshape(2, 3))
    # Texels of 256 -> 0..1, v flipped to OpenGL's bottom-up.
    uv = np.array([[0, 0], [0.5, 0], [0.5, 1], [0, 1]])
    np.testing.assert_allclose(mesh.visual.uv, uv[expected].reshape(-1, 2))
    assert mesh.visual.material.baseColorTexture.getpixel((0, 0))[:3] == (10, 200, 30)
    # The file's quad faces +z; mirrored it faces -z, its winding turned with the mirror.
    normal = np.cross(*(mesh.vertices[1:3] - mesh.vertices[0]))
    assert normal[2] < 0 and normal[0] == normal[1] == 0


def test_every_level_is_kept(tmp_path):
    two_levels = TREE.replace("LEVELS 1", "LEVELS 2") + (
        "LEVEL 2\nPOINTS 3\n\t0 5 0\n\t1 5 0\n\t0 6 0\nPOLYGONS 1\n\t200 3 0 1 2 0 0 1 0 0 1\n")
    root = make_root(tmp_path, {**base_members(), "structs/blhq.pie": two_levels})
    meshes = by_id(root)["structs/blhq"].load()
    assert [len(m.faces) for m in meshes] == [1, 1]
    assert meshes[1].vertices[:, 1].min() == 5


@pytest.mark.parametrize("text, reason", [
    (HQ[:HQ.index("\t64 128")], "truncated"),
    ("hello world\n", "not a PIE"),
    (HQ.replace("POINTS 4", "POINTS 999999999"), "above the limit"),
    (HQ.replace("POLYGONS 1", "POLYGONS 99999999"), "above the limit"),
    (HQ.replace("200 4 0 1 2 3", "200 4 0 1 2 9"), "outside"),
    (HQ.replace("200 4 0 1 2 3", "200 4 0 1 2 x"), "whole numbers"),
    (HQ.replace("\t64 0 10", "\t64 zero 10"), "non-number"),
    (HQ.replace("page-1.png", "../../etc/passwd.png"), "not a plain .png name"),
    (HQ.replace("page-1.png", "sub/page-1.png"), "not a plain .png name"),
])
def test_bad_files_raise_naming_the_file(text, reason, allocated):
    with allocated() as peak, pytest.raises(SourceError, match=reason) as caught:
        warzone.read_pie(text, "base.wz:structs/bad.pie")
    assert "base.wz:structs/bad.pie" in str(caught.value)
    assert peak.bytes < REFUSAL_BYTES, "refused from what the header claims, before allocating it"


def test_a_bad_model_fails_its_load_not_the_catalogue(tmp_path):
    root = make_root(tmp_path, {**base_members(), "structs/blhq.pie": "PIE 3\nPOINTS 5\n"})
    hq = by_id(root)["structs/blhq"]
    with pytest.raises(SourceError, match="structs/blhq.pie"):
        hq.load()


def test_missing_texture_page_names_it(tmp_path):
    root = make_root(tmp_path, {**base_members(HQ.replace("page-1.png", "page-2.png"))})
    with pytest.raises(SourceError, match="texpages/page-2.png"):
        by_id(root)["structs/blhq"].load()


def test_cut_out_texels_take_the_nearest_kept_colour():
    from training.recipes.sources.rts_meshes import bleed_cutouts

    pixels = np.zeros((4, 4, 4), dtype=np.uint8)        # all cut out, black
    pixels[:, :2] = (0, 180, 0, 255)                     # left half: kept leaf green
    bled = np.asarray(bleed_cutouts(Image.fromarray(pixels, "RGBA")))
    assert (bled[..., :3] == (0, 180, 0)).all()          # right half painted green
    np.testing.assert_array_equal(bled[..., 3], pixels[..., 3])  # alpha kept: still cut out
