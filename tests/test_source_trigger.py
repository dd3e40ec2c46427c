"""The Trigger Rally source on a tiny data.zip made here (CI has no trigger-rally-data):
assembly of body and wheels, the game's frame, texts and labels, and hostile archives."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.recipes.sources import SourceError, trigger

VEHICLE = """<?xml version="1.0" ?>
<vehicle name="Buggy" class="WRC" type="car">
  <genparams mass="900" wheelmodel="{wheel}" wheelscale="2.0" />
  <part name="body" pos="0.0, 0.0, 0.1" orientation="1.0, 0.0, 0.0, 0.0" model="{model}" scale="0.01">
    <wheel pos="0.5, 1.0, 0.0" radius="0.25" steer="0.8" />
    <wheel pos="-0.5, 1.0, 0.0" radius="0.25" steer="0.8" />
    <wheel pos="0.5, -1.0, 0.0" radius="0.25" />
    <wheel pos="-0.5, -1.0, 0.0" radius="0.25" />
  </part>
</vehicle>
"""


def box_obj(size, mtllib="car.mtl", usemtl="a_name_the_mtl_lacks", bad_index=False) -> str:
    """A box centred on the origin, z up, with uv, as Blender writes OBJ for the game."""
    corners = np.array([[x, y, z] for x in (-.5, .5) for y in (-.5, .5) for z in (0, 1)]) * size
    faces = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    lines = [f"mtllib {mtllib}", "o body"] + [f"v {x} {y} {z}" for x, y, z in corners]
    lines += ["vt 0 0", "vt 1 0", "vt 1 1", f"usemtl {usemtl}"]
    for a, b, c, d in faces:
        lines += [f"f {a + 1}/1 {b + 1}/2 {c + 1}/3", f"f {a + 1}/1 {c + 1}/3 {d + 1}/2"]
    if bad_index:
        lines.append("f 1/1 2/2 99/3")
    return "\n".join(lines) + "\n"


def png_bytes(colour=(220, 20, 20)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(out, format="PNG")
    return out.getvalue()


def car_members(folder="vehicles/buggy/", **changes) -> dict[str, bytes | str]:
    members = {
        folder + "buggy.vehicle": VEHICLE.format(model="car.obj", wheel="wheel.obj"),
        folder + "car.obj": box_obj((100, 300, 50)),
        folder + "car.mtl": "newmtl _car.png\nKd 0.8 0.8 0.8\nmap_Kd car.png\n",
        folder + "car.png": png_bytes(),
        folder + "wheel.obj": box_obj((0.5, 1, 1), mtllib="car.mtl"),
    }
    members.update({folder + k: v for k, v in changes.items()})
    return members


def make_archive(root: Path, *member_sets: dict) -> Path:
    path = root / trigger.ARCHIVE
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("textures/sky.png", png_bytes((0, 0, 255)))
        for members in member_sets:
            for name, data in members.items():
                zf.writestr(name, data)
    return path


def test_car_is_body_and_wheels_in_y_up(tmp_path):
    make_archive(tmp_path, car_members())
    [car] = trigger.objects(tmp_path)
    assert car.id == "vehicles/buggy" and car.name == "Buggy WRC"
    assert car.label is None  # one car: below five
    assert car.texts == ["a car", "a Buggy rally car of the WRC class",
                         "a car from the racing game Trigger Rally", "a 3D model of a car with 4 wheels"]
    assert car.files[0] == f"{trigger.ARCHIVE.as_posix()}:vehicles/buggy/buggy.vehicle"
    body, *wheels = car.load()
    assert len(wheels) == 4
    lo, hi = body.bounds
    np.testing.assert_allclose(hi - lo, [1.0, 0.5, 3.0], atol=1e-9)  # wide x, tall y, long z
    np.testing.assert_allclose(lo[1], 0.1)  # the part's z offset is height
    # a front wheel (game y = +1, x = 0.5) sits at glTF z = -1: forward is -z; the wheel box
    # rises 0.5 from the part's height 0.1, so its centre is at y 0.35
    centres = sorted(tuple(np.round(w.bounds.mean(axis=0), 6)) for w in wheels)
    assert (0.5, 0.35, -1.0) in centres
    np.testing.assert_allclose(wheels[0].extents, [0.25, 0.5, 0.5])  # wheelscale x radius x model
    assert body.visual.kind == "texture"  # found through mtllib's map_Kd despite usemtl
    assert np.asarray(body.visual.material.image)[0, 0].tolist() == [220, 20, 20]


def test_five_cars_make_a_class(tmp_path):
    make_archive(tmp_path, *(car_members(f"vehicles/car{i}/") for i in range(5)))
    cars = list(trigger.objects(tmp_path))
    assert len(cars) == 5 and {c.label for c in cars} == {"car"}


@pytest.mark.parametrize("changes, reason", [
    ({"car.obj": box_obj((100, 300, 50), mtllib="../../etc/passwd")}, "mtllib"),
    ({"car.mtl": "newmtl a\nmap_Kd ../other/car.png\n"}, "map_Kd"),
    ({"car.obj": box_obj((100, 300, 50), bad_index=True)}, "car.obj"),
    ({"car.png": b"not a png"}, "texture"),
    ({"..": b"x"}, "unsafe member"),
])
def test_hostile_models_raise_on_load(tmp_path, changes, reason):
    make_archive(tmp_path, car_members(**changes))
    [car] = trigger.objects(tmp_path)
    with pytest.raises(SourceError, match=reason):
        car.load()


@pytest.mark.parametrize("vehicle, reason", [
    (VEHICLE.format(model="../../elsewhere.obj", wheel="wheel.obj"), "not a file in the car's folder"),
    ("<vehicle name='x'", "not readable XML"),
    ("<car/>", "not <vehicle>"),
    (VEHICLE.format(model="car.obj", wheel="wheel.obj").replace('pos="0.5, 1.0, 0.0"', 'pos="1, 2"'),
     "is not 3 number"),
])
def test_hostile_vehicle_files_are_logged_and_skipped(tmp_path, caplog, vehicle, reason):
    make_archive(tmp_path, car_members(**{"buggy.vehicle": vehicle}), car_members("vehicles/ok/"))
    with caplog.at_level(logging.WARNING):
        cars = list(trigger.objects(tmp_path))
    assert [c.id for c in cars] == ["vehicles/ok"]
    assert "buggy.vehicle" in caplog.text and reason in caplog.text


def test_unsafe_vehicle_member_is_skipped(tmp_path, caplog):
    make_archive(tmp_path, {"vehicles/../evil.vehicle": VEHICLE}, car_members())
    with caplog.at_level(logging.WARNING):
        assert [c.id for c in trigger.objects(tmp_path)] == ["vehicles/buggy"]
    assert "unsafe member name" in caplog.text


def test_members_above_the_bound_are_refused(tmp_path, monkeypatch):
    make_archive(tmp_path, car_members())
    [car] = trigger.objects(tmp_path)
    monkeypatch.setattr(trigger, "MAX_FILE_BYTES", 100)
    with pytest.raises(SourceError, match="above"):
        car.load()


def test_not_a_zip_and_missing_archive(tmp_path):
    with pytest.raises(SourceError, match="trigger-rally-data"):
        list(trigger.objects(tmp_path))
    path = tmp_path / trigger.ARCHIVE
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 garbage" * 10)
    with pytest.raises(SourceError, match="data.zip: not a readable zip"):
        list(trigger.objects(tmp_path))
