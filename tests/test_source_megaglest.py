"""The MegaGlest source on G3D files and XML written here (no megaglest-data package needed)."""

import struct

import numpy as np
import pytest
from PIL import Image

from training.recipes.sources import SourceError, megaglest

# A bad file is refused from what it says, before its claims are allocated: a refusal holds a
# few kilobytes at most (tracemalloc), where the counts refused here would take megabytes.
REFUSAL_BYTES = 2**20

GAME = "usr/share/games/megaglest"
QUAD = np.array([[0, 0, 0], [1, 0, 0], [1, 2, 0], [0, 2, 0]], dtype=np.float32)
QUAD_UV = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float32)
QUAD_INDICES = [0, 1, 2, 0, 2, 3]


def g3d_v4(vertices=QUAD, indices=QUAD_INDICES, texture="tex.png", frames=2, n_frames=None,
           n_vertices=None, n_indices=None, mesh_count=1) -> bytes:
    """A one-mesh G3D v4 file: frame 0 is `vertices`, frame 1 the same moved up by 10.
    n_frames, n_vertices, n_indices: what the header claims, if not the truth."""
    n_frames = frames if n_frames is None else n_frames
    n_vertices = len(vertices) if n_vertices is None else n_vertices
    n_indices = len(indices) if n_indices is None else n_indices
    textures = 1 if texture else 0
    header = struct.pack("<64s3I3f3f2f2I", b"mesh", n_frames, n_vertices, n_indices,
                         1.0, 0.0, 0.0, 0, 0, 0, 0, 1.0, 0, textures)
    frame_data = np.concatenate([vertices + [0, 10 * f, 0] for f in range(frames)]).astype("<f4")
    body = header + (struct.pack("64s", texture.encode()) if texture else b"")
    body += frame_data.tobytes() + np.zeros_like(frame_data).tobytes()
    if texture:
        body += QUAD_UV[:len(vertices)].astype("<f4").tobytes()
    body += np.asarray(indices, dtype="<u4").tobytes()
    return b"G3D\x04" + struct.pack("<HB", mesh_count, 0) + body


def g3d_v3(vertices=QUAD, indices=QUAD_INDICES, texture="tex.png") -> bytes:
    properties = 0 if texture else 1
    header = struct.pack("<7I64s", 1, 1, 1, 1, len(vertices), len(indices), properties,
                         texture.encode())
    data = vertices.astype("<f4").tobytes() * 2 + QUAD_UV.astype("<f4").tobytes()
    data += struct.pack("<4f", 0.5, 0.5, 0.5, 1.0) + np.asarray(indices, "<u4").tobytes()
    return b"G3D\x03" + struct.pack("<I", 1) + header + data


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def texture_png(path, colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


UNIT_XML = """<?xml version="1.0"?><unit><parameters><fields><field value="land"/></fields>
</parameters><skills>
<skill><type value="be_hit"/><animation path="models/swordman_dying.g3d"/></skill>
<skill><type value= "stop"/><animation path="models/swordman_standing.g3d"/></skill>
<skill><type value="attack"/><animation path="models/swordman_attacking.g3d"/>
<attack-fields><field value="land"/></attack-fields></skill>
</skills></unit>"""


@pytest.fixture
def root(tmp_path):
    """A tech with one unit (three animations) and two tilesets sharing one model."""
    unit = tmp_path / GAME / "techs/mytech/factions/knights/units/swordman"
    write(unit / "swordman.xml", UNIT_XML)
    for pose in ("attacking", "dying", "standing"):
        write(unit / f"models/swordman_{pose}.g3d", g3d_v4(QUAD * (3 if pose == "standing" else 1)))
    texture_png(unit / "models/tex.png")
    slots = "".join(f'<model path="models/tanne{i}.g3d"/>' for i in range(5))
    for name in ("forest", "winter"):
        tileset = tmp_path / GAME / "tilesets" / name
        write(tileset / f"{name}.xml", f"<tileset><objects><object>{slots}</object>"
                                      '<object><model path="models/stone.g3d"/></object></objects></tileset>')
        for i in range(5):
            write(tileset / f"models/tanne{i}.g3d", g3d_v4(QUAD + i))
        write(tileset / "models/stone.g3d", g3d_v4(QUAD, texture=""))
        texture_png(tileset / "models/tex.png", (20, 160, 20))
    return tmp_path


def by_id(root):
    return {o.id: o for o in megaglest.objects(root)}


def test_unit_is_its_standing_model_once_with_texts(root):
    objects = by_id(root)
    unit = objects["mytech/knights/swordman"]
    assert unit.name == "swordman"
    assert unit.texts[:2] == ["a swordman", "a swordman, a unit of the knights faction"]
    assert "a swordman that attacks land targets" in unit.texts
    assert unit.files[1].endswith("models/swordman_standing.g3d")
    assert sum(o.id.startswith("mytech/") for o in objects.values()) == 1
    (mesh,) = unit.load()
    # Frame 0 of the standing model (scaled by 3), y up as G3D already is.
    np.testing.assert_allclose(mesh.vertices, QUAD * 3)
    np.testing.assert_array_equal(mesh.faces, np.reshape(QUAD_INDICES, (-1, 3)))
    np.testing.assert_allclose(mesh.visual.uv, QUAD_UV)
    assert mesh.visual.material.baseColorTexture.getpixel((0, 0))[:3] == (200, 30, 30)


def test_tileset_objects_labels_and_duplicates(root):
    objects = by_id(root)
    trees = [o for o in objects.values() if o.id.startswith("tilesets/")]
    # The winter copies have the same bytes as the forest ones: counted once.
    expected = ["tilesets/forest/stone"] + [f"tilesets/forest/tanne{i}" for i in range(5)]
    assert sorted(o.id for o in trees) == expected
    assert all(objects[f"tilesets/forest/tanne{i}"].label == "tree" for i in range(5))
    assert objects["tilesets/forest/tanne0"].name == "fir"
    assert objects["tilesets/forest/tanne0"].texts == ["a fir", "a fir in a forest landscape"]
    assert objects["tilesets/forest/stone"].label is None          # 1 rock: under 5
    assert objects["mytech/knights/swordman"].label is None        # 1 swordsman: under 5
    (stone,) = objects["tilesets/forest/stone"].load()
    assert stone.visual.material.baseColorTexture is None
    assert tuple(stone.visual.material.baseColorFactor[:3]) == (255, 0, 0)  # the mesh's diffuse


def test_v3_reader():
    (mesh,) = megaglest.read_g3d(g3d_v3(), "old.g3d")
    np.testing.assert_allclose(mesh.vertices, QUAD)
    assert mesh.texture == "tex.png" and mesh.diffuse == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("data, reason", [
    (g3d_v4()[:-5], "truncated"),
    (b"hello world", "not a G3D"),
    (b"G3D\x09" + bytes(20), "version 9"),
    (g3d_v4(indices=[0, 1, 7, 0, 2, 3]), "outside"),
    (g3d_v4(n_vertices=2**31), "above the limit"),
    (g3d_v4(n_frames=2**30), "truncated"),
    (g3d_v4(mesh_count=60000), "cannot fit"),
    (g3d_v4(n_indices=5), "multiple of 3"),
])
def test_bad_files_raise_naming_the_file(data, reason, allocated):
    with allocated() as peak, pytest.raises(SourceError, match=reason) as caught:
        megaglest.read_g3d(data, "units/x/bad.g3d")
    assert "units/x/bad.g3d" in str(caught.value)
    assert peak.bytes < REFUSAL_BYTES, "refused from what the header claims, before allocating it"


def test_texture_path_leaving_the_faction_is_refused(root):
    unit = root / GAME / "techs/mytech/factions/knights/units/swordman"
    (unit / "models/swordman_standing.g3d").write_bytes(g3d_v4(texture="../../../../../secret.png"))
    texture_png(root / GAME / "techs/mytech/secret.png")
    with pytest.raises(SourceError, match="leaves the asset's folder") as caught:
        by_id(root)["mytech/knights/swordman"].load()
    assert "swordman_standing.g3d" in str(caught.value)


def test_texture_link_leaving_the_root_is_refused(root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "tex.png"
    texture_png(outside)
    models = root / GAME / "techs/mytech/factions/knights/units/swordman/models"
    (models / "tex.png").unlink()
    (models / "tex.png").symlink_to(outside)
    with pytest.raises(SourceError, match="links outside"):
        by_id(root)["mytech/knights/swordman"].load()
