"""Files an asset names besides itself: each kind of reference that leaves the asset's
folder is refused by name before Blender opens the file; references inside it pass."""

import json
import struct

import pytest

from core.errors import AssetError
from core.references import MAX_HEADER_BYTES, check_references, leaves_folder


def gltf(uris: list[str]) -> dict:
    return {"asset": {"version": "2.0"}, "buffers": [{"uri": u, "byteLength": 4} for u in uris[:1]],
            "images": [{"uri": u} for u in uris[1:]]}


def glb(document: dict) -> bytes:
    chunk = json.dumps(document).encode().ljust(4 * ((len(json.dumps(document)) + 3) // 4), b" ")
    return struct.pack("<4sII", b"glTF", 2, 20 + len(chunk)) + struct.pack("<I4s", len(chunk), b"JSON") + chunk


@pytest.mark.parametrize("reference", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin", "..%2Fsecret.bin",
                                       "file:///etc/passwd", "https://example.com/a.bin", "C:\\Windows\\a.bin",
                                       "..\\secret.bin"])
def test_gltf_references_outside_the_folder_are_refused(tmp_path, reference):
    path = tmp_path / "a.gltf"
    path.write_text(json.dumps(gltf([reference])))
    with pytest.raises(AssetError, match="outside the asset's folder") as caught:
        check_references(path)
    assert str(path) in str(caught.value)


def test_glb_image_uri_outside_is_refused_and_inside_ones_pass(tmp_path):
    path = tmp_path / "a.glb"
    path.write_bytes(glb(gltf(["data:application/octet-stream;base64,AAAA", "tex/wood.png", "../../x.png"])))
    with pytest.raises(AssetError, match=r"'\.\./\.\./x\.png'"):
        check_references(path)
    path.write_bytes(glb(gltf(["data:application/octet-stream;base64,AAAA", "tex/wood.png"])))
    check_references(path)


def test_obj_material_library_and_its_texture_maps(tmp_path):
    obj = tmp_path / "a.obj"
    obj.write_text("v 0 0 0\nmtllib /etc/passwd\n")
    with pytest.raises(AssetError, match="/etc/passwd"):
        check_references(obj)
    (tmp_path / "ok.mtl").write_text("newmtl a\nmap_Kd -s 1 1 1 ../outside.png\n")
    obj.write_text("mtllib ok.mtl\nv 0 0 0\n")
    with pytest.raises(AssetError, match="outside.png"):
        check_references(obj)
    (tmp_path / "ok.mtl").write_text("newmtl a\nmap_Kd -s 1 1 1 textures/in side.png\nbump b.png\n")
    check_references(obj)


def test_a_link_inside_the_folder_that_points_out_is_outside(tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "asset").mkdir()
    (tmp_path / "asset" / "tex").symlink_to(tmp_path / "outside")
    assert leaves_folder(tmp_path / "asset", "tex/wood.png")
    assert not leaves_folder(tmp_path / "asset", "wood/../wood.png")


def test_usda_layers(tmp_path):
    path = tmp_path / "a.usda"
    path.write_text('#usda 1.0\ndef "A" (references = @../../props/secret.usda@</A>) {}\n')
    with pytest.raises(AssetError, match="secret.usda"):
        check_references(path)
    path.write_text('#usda 1.0\ndef "A" (references = @./parts/wheel.usda@) {}\n')
    check_references(path)


def test_unreadable_or_oversized_gltf_json_is_refused_not_guessed(tmp_path):
    path = tmp_path / "a.gltf"
    path.write_text('{"buffers": [{"uri": "../x.bin"')
    with pytest.raises(AssetError, match="does not parse"):
        check_references(path)
    path = tmp_path / "big.glb"
    path.write_bytes(struct.pack("<4sII", b"glTF", 2, 0) + struct.pack("<I4s", MAX_HEADER_BYTES + 8, b"JSON")
                     + b" " * (MAX_HEADER_BYTES + 8))
    with pytest.raises(AssetError, match="over 64 MB"):
        check_references(path)
