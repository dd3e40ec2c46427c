"""The procedural source: deterministic, every kind present, closed solids, upright in the
glTF frame, texts that tell the truth about colour, counts and provenance."""

from __future__ import annotations

import collections
import functools

import numpy as np
import pytest

from training.recipes.sources import procedural

OBJECTS = list(procedural.objects())
BY_ID = {o.id: o for o in OBJECTS}


@functools.cache
def parts_of(object_id: str):
    """Each object's meshes, built once for all the tests (read-only use)."""
    return BY_ID[object_id].load()


def first(label: str, n: int = 3):
    return [o for o in OBJECTS if o.label == label][:n]


def test_every_kind_in_every_variant():
    counts = collections.Counter(o.label for o in OBJECTS)
    assert set(counts) == {k.label for k in procedural.KINDS}
    assert set(counts.values()) == {procedural.VARIANTS}
    assert 300 <= len(OBJECTS) <= 700
    assert len(BY_ID) == len(OBJECTS)  # ids are unique
    assert {o.source for o in OBJECTS} == {"procedural"} and procedural.PACKAGES == ()


def test_deterministic_and_independent_of_order(tmp_path):
    again = list(procedural.objects(tmp_path))  # the root is ignored
    assert [(o.id, o.name, o.texts) for o in again] == [(o.id, o.name, o.texts) for o in OBJECTS]
    for o in (o for o in again if o.id in ("torus/05", "stairs/17", "snowman/03")):
        a, b = o.load(), BY_ID[o.id].load()
        assert [m.vertices.tolist() for m in a] == [m.vertices.tolist() for m in b]
    assert [m.vertices.tolist() for m in BY_ID["cone/00"].load()] != \
        [m.vertices.tolist() for m in BY_ID["cone/01"].load()]


def test_closed_solids_standing_on_the_floor():
    # a third of the variants of every kind: the builders, not the numbers, make them closed
    for o in [o for o in OBJECTS if int(o.id.rsplit("/", 1)[1]) % 3 == 0]:
        parts = parts_of(o.id)
        assert all(p.is_volume for p in parts), o.id  # watertight, wound outward, volume > 0
        vertices = np.concatenate([p.vertices for p in parts])
        assert abs(vertices[:, 1].min()) < 1e-9, o.id
        lo, hi = vertices.min(0), vertices.max(0)
        np.testing.assert_allclose((lo + hi)[[0, 2]], 0, atol=1e-9, err_msg=o.id)


def apex_on_axis(o) -> bool:
    [mesh] = o.load()
    top = mesh.vertices[mesh.vertices[:, 1].argmax()]
    radius = np.abs(mesh.vertices[:, [0, 2]]).max()
    return np.hypot(top[0], top[2]) < 0.25 * radius and (mesh.vertices[:, 1] > top[1] - 1e-9).sum() == 1


@pytest.mark.parametrize("label", ["cone", "pyramid"])
def test_points_rise_to_an_apex(label):
    assert all(apex_on_axis(o) for o in first(label))


def test_stairs_rise_step_by_step_and_say_how_many():
    for o in first("stairs"):
        parts = o.load()
        tops = [p.bounds[1][1] for p in parts]
        assert np.all(np.diff(tops) > 0)
        assert f"with {len(parts)} steps" in o.texts[-1]


def test_table_top_over_its_legs_and_arch_open_below():
    for o in first("table"):
        top, *legs = o.load()
        assert len(legs) == 4 and all(leg.bounds[1][1] <= top.bounds[0][1] + 1e-9 for leg in legs)
    for o in first("arch"):
        [arch] = o.load()
        foot = arch.vertices[arch.vertices[:, 1] < 1e-9]
        assert np.hypot(foot[:, 0], foot[:, 2]).min() > 0.1  # nothing stands under the span


def test_snowman_balls_shrink_upward():
    for o in first("snowman"):
        radii = [p.extents[1] / 2 for p in o.load()]
        assert np.all(np.diff(radii) < 0)
        assert f"of {len(radii)} stacked balls" in o.texts[-1]


def test_texts_tell_colour_label_and_provenance():
    for o in OBJECTS[::4]:
        assert 2 <= len(o.texts) <= 4
        colour = o.texts[1].split()[1]
        rgb = parts_of(o.id)[0].visual.face_colors[0, :3].tolist()
        assert list(procedural.COLOURS[colour]) == rgb, o.id
        assert any("synthetic" in t for t in o.texts) and o.files == []
    cylinder = BY_ID["cylinder/00"]
    assert cylinder.texts[0] == "a cylinder" and cylinder.label == "cylinder"
    assert BY_ID["torus/00"].texts[2].endswith("a ring-shaped solid")
    assert BY_ID["arch/00"].texts[0] == "an arch"


def test_proportion_words_measure_the_shape():
    for o in [o for o in OBJECTS if o.name.startswith("tall ")]:
        lo = np.min([p.bounds[0] for p in parts_of(o.id)], axis=0)
        hi = np.max([p.bounds[1] for p in parts_of(o.id)], axis=0)
        # measured before the seeded turn about y, which widens the box by at most sqrt(2)
        assert hi[1] - lo[1] > 1.6 / np.sqrt(2) * max(hi[0] - lo[0], hi[2] - lo[2]), o.id
    words = collections.Counter(o.name.split()[0] for o in OBJECTS)
    assert words["tall"] and words["long"] and words["flat"]
