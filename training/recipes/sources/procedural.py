"""Procedural shapes: SYNTHETIC geometry made here by a program (trimesh primitives and
simple compositions), not assets of any package or artist.

Twenty kinds (cube, box, sphere, cylinder, cone, torus, capsule, square and triangular
pyramids, ring, plane, stairs, arch, and compositions: table, snowman, dumbbell, mushroom,
L-shape, cross, tower), each in VARIANTS seeded variants of proportion and colour. A variant
is a pure function of (SEED, kind, variant), so the corpus is the same on every machine and
any one object can be rebuilt alone. Every part is a closed (watertight) solid; every object
stands on y = 0, centred on the y axis, rises along +y (the glTF frame) and is turned about
y by a seeded angle. The label is the kind; the texts say the true colour and the
proportions measured on the built shape, and one says outright that the shape is synthetic.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import trimesh
from trimesh import creation

from training.recipes.sources import SourceObject

NAME = "procedural"
PACKAGES = ()
SEED = 0
VARIANTS = 24

COLOURS = {  # names a reader agrees on; all start with a consonant, so 'a' always fits
    "red": (200, 35, 35), "green": (40, 160, 60), "blue": (40, 80, 200), "yellow": (230, 200, 40),
    "purple": (130, 50, 170), "white": (235, 235, 235), "grey": (128, 128, 128),
    "brown": (120, 75, 40), "pink": (240, 130, 170), "black": (25, 25, 25),
}
Y_UP = trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0])  # trimesh's z axis -> y


@dataclasses.dataclass
class Kind:
    label: str
    noun: str                 # with its article: "a cube", "an arch"
    definition: str           # what the shape is, said plainly
    build: Callable[[np.random.Generator], tuple[list[trimesh.Trimesh], str]]  # parts, detail


# ---- primitives, upright: their axis along y -----------------------------------------------

def _upright(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    return mesh.apply_transform(Y_UP)


def _box(x: float, y: float, z: float, at=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    """A box with its bottom face centred on `at`."""
    return creation.box((x, y, z)).apply_translation((at[0], at[1] + y / 2, at[2]))


def _cylinder(radius: float, height: float, at=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    """An upright cylinder with its bottom centred on `at`."""
    mesh = _upright(creation.cylinder(radius=radius, height=height, sections=32))
    return mesh.apply_translation((at[0], at[1] + height / 2, at[2]))


def _sphere(radius: float, at=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    return creation.icosphere(subdivisions=3, radius=radius).apply_translation(at)


def _prism(outline: np.ndarray, triangles: np.ndarray, depth: float) -> trimesh.Trimesh:
    """A 2D outline in the x-y plane, triangulated (triangles counter-clockwise), extruded
    along z and centred on z = 0."""
    mesh = creation.extrude_triangulation(outline, triangles, depth)
    return mesh.apply_translation((0, 0, -depth / 2))


# ---- the kinds: each returns its parts and a detail phrase ("" when none) ------------------

def build_cube(rng):
    return [_box(1, 1, 1)], ""


def build_box(rng):
    while True:  # proportions far enough from a cube to be no cube
        x, y, z = rng.uniform(0.25, 2.0, 3)
        if max(x, y, z) / min(x, y, z) > 1.4:
            return [_box(x, y, z)], ""


def build_sphere(rng):
    return [_sphere(1.0)], ""


def build_cylinder(rng):
    return [_cylinder(rng.uniform(0.15, 1.0), rng.uniform(0.3, 3.0))], ""


def build_cone(rng):
    return [_upright(creation.cone(radius=rng.uniform(0.3, 1.0), height=rng.uniform(0.5, 3.0),
                                   sections=32))], ""


def build_torus(rng):
    return [_upright(creation.torus(major_radius=1.0, minor_radius=rng.uniform(0.1, 0.45),
                                    major_sections=48, minor_sections=16))], ""


def build_capsule(rng):
    return [_upright(creation.capsule(height=rng.uniform(0.3, 2.5), radius=rng.uniform(0.2, 0.6)))], ""


def _pyramid(sides: int, rng) -> trimesh.Trimesh:
    # trimesh's cone of 4 sections has its corners on the axes: a turn of 45 degrees squares it
    cone = creation.cone(radius=rng.uniform(0.5, 1.0), height=rng.uniform(0.4, 2.0), sections=sides)
    turn = trimesh.transformations.rotation_matrix(np.pi / sides if sides == 4 else 0, [0, 0, 1])
    return _upright(cone.apply_transform(turn))


def build_pyramid(rng):
    return [_pyramid(4, rng)], ""


def build_triangular_pyramid(rng):
    return [_pyramid(3, rng)], ""


def build_ring(rng):
    outer = 1.0
    washer = creation.annulus(r_min=outer * rng.uniform(0.3, 0.8), r_max=outer,
                              height=rng.uniform(0.04, 0.4), sections=48)
    return [_upright(washer)], ""


def build_plane(rng):
    return [_box(rng.uniform(0.5, 2.0), rng.uniform(0.01, 0.05), rng.uniform(0.5, 2.0))], ""


def build_stairs(rng):
    steps = int(rng.integers(3, 10))
    rise, run, width = rng.uniform(0.12, 0.25), rng.uniform(0.2, 0.35), rng.uniform(0.5, 1.5)
    # each step a column from the floor: closed boxes side by side, rising along +x
    parts = [_box(run, rise * (i + 1), width, at=(run * (i + 0.5), 0, 0)) for i in range(steps)]
    return parts, f"with {steps} steps"


def build_arch(rng):
    """Two legs and a half-ring span, one outline: the band between an outer and an inner
    path (same number of points), triangulated as a strip."""
    outer, leg, depth = rng.uniform(0.6, 1.2), rng.uniform(0.2, 1.5), rng.uniform(0.2, 0.8)
    inner = outer * rng.uniform(0.5, 0.8)
    angles = np.linspace(np.pi, 0, 25)

    def path(radius):
        arc = np.stack([radius * np.cos(angles), leg + radius * np.sin(angles)], axis=1)
        return np.concatenate([[[-radius, 0.0]], arc, [[radius, 0.0]]])

    out, inn = path(outer), path(inner)
    n = len(out)
    outline = np.concatenate([out, inn[::-1]])  # outer left->right, inner right->left
    strip = [t for i in range(n - 1)
             for t in ([i, 2 * n - 1 - i, i + 1], [i + 1, 2 * n - 1 - i, 2 * n - 2 - i])]
    triangles = np.array(strip)
    return [_prism(outline, triangles[:, ::-1], depth)], ""


def build_table(rng):
    width, depth = rng.uniform(0.8, 2.0), rng.uniform(0.5, 1.2)
    height, top, leg = rng.uniform(0.5, 1.1), rng.uniform(0.03, 0.08), rng.uniform(0.03, 0.08)
    legs = [_box(leg, height - top, leg, at=(sx * (width / 2 - leg), 0, sz * (depth / 2 - leg)))
            for sx in (-1, 1) for sz in (-1, 1)]
    return [_box(width, top, depth, at=(0, height - top, 0)), *legs], "with four legs"


def build_snowman(rng):
    balls = int(rng.integers(2, 4))
    radius, parts, y = rng.uniform(0.4, 0.6), [], 0.0
    for _ in range(balls):
        parts.append(_sphere(radius, at=(0, y + radius, 0)))
        y += 2 * radius * 0.85  # each ball sits a little into the one below
        radius *= rng.uniform(0.6, 0.8)
    return parts, f"of {balls} stacked balls"


def build_dumbbell(rng):
    length, bar, weight = rng.uniform(0.8, 2.0), rng.uniform(0.04, 0.12), rng.uniform(0.15, 0.4)
    along_x = trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0])
    rod = creation.cylinder(radius=bar, height=length, sections=24).apply_transform(along_x)
    ends = [_sphere(weight, at=(side * length / 2, 0, 0)) for side in (-1, 1)]
    return [rod, *ends], ""


def build_mushroom(rng):
    """One solid of revolution: the stem, the cap's flat underside, its dome to the axis."""
    stem_r, stem_h = rng.uniform(0.1, 0.3), rng.uniform(0.4, 1.2)
    cap_r = stem_r * rng.uniform(2.0, 4.0)
    cap_h = cap_r * rng.uniform(0.3, 0.8)
    arc = np.linspace(0, np.pi / 2, 16)
    profile = np.concatenate([[[0, 0], [stem_r, 0], [stem_r, stem_h]],
                              np.stack([cap_r * np.cos(arc), stem_h + cap_h * np.sin(arc)], axis=1)])
    profile[-1, 0] = 0.0  # the dome ends on the axis, which closes the solid
    return [_upright(creation.revolve(profile, sections=32))], ""


def build_l_shape(rng):
    a, b, t = rng.uniform(0.8, 2.0), rng.uniform(0.8, 2.0), rng.uniform(0.2, 0.45)
    outline = np.array([[0, 0], [a, 0], [a, t], [t, t], [t, b], [0, b]], dtype=np.float64)
    triangles = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 5], [3, 4, 5]])
    return [_prism(outline, triangles, rng.uniform(0.2, 1.0))], ""


def build_cross(rng):
    """An upright cross: a post and a crossbar in one outline of five rectangles."""
    height, arm, t = rng.uniform(1.5, 3.0), rng.uniform(0.4, 0.9), rng.uniform(0.08, 0.2)
    low, high = height * 0.6, height * 0.6 + 2 * t
    outline = np.array([[-t, 0], [t, 0], [t, low], [arm, low], [arm, high], [t, high], [t, height],
                        [-t, height], [-t, high], [-arm, high], [-arm, low], [-t, low]])
    triangles = np.array([[0, 1, 2], [0, 2, 11], [11, 2, 5], [11, 5, 8], [2, 3, 4], [2, 4, 5],
                          [10, 11, 8], [10, 8, 9], [8, 5, 6], [8, 6, 7]])
    return [_prism(outline, triangles, rng.uniform(0.1, 0.4))], ""


def build_tower(rng):
    count, y, parts = int(rng.integers(2, 7)), 0.0, []
    size = rng.uniform(0.8, 1.4)
    for _ in range(count):
        height = rng.uniform(0.3, 0.9)
        parts.append(_box(size, height, size, at=(0, y, 0)))
        y += height
        size *= rng.uniform(0.65, 0.95)
    return parts, f"of {count} stacked boxes"


KINDS = [
    Kind("cube", "a cube", "a box with six equal square faces", build_cube),
    Kind("box", "a box", "a rectangular block", build_box),
    Kind("sphere", "a sphere", "a round ball", build_sphere),
    Kind("cylinder", "a cylinder", "a round column with flat ends", build_cylinder),
    Kind("cone", "a cone", "a round base narrowing to a point", build_cone),
    Kind("torus", "a torus", "a ring-shaped solid", build_torus),
    Kind("capsule", "a capsule", "a cylinder with rounded ends", build_capsule),
    Kind("pyramid", "a pyramid", "four triangular sides on a square base meeting at a point",
         build_pyramid),
    Kind("triangular pyramid", "a triangular pyramid", "three triangular sides on a triangular base",
         build_triangular_pyramid),
    Kind("ring", "a ring", "a flat washer with a round hole in the middle", build_ring),
    Kind("plane", "a plane", "a thin flat slab", build_plane),
    Kind("stairs", "a staircase", "a flight of steps rising one after another", build_stairs),
    Kind("arch", "an arch", "a curved span on two legs", build_arch),
    Kind("table", "a table", "a flat top on legs", build_table),
    Kind("snowman", "a snowman", "balls stacked from large to small", build_snowman),
    Kind("dumbbell", "a dumbbell", "two round weights joined by a bar", build_dumbbell),
    Kind("mushroom", "a mushroom", "a round cap on a stem", build_mushroom),
    Kind("L-shape", "an L-shaped block", "two bars joined at a right angle", build_l_shape),
    Kind("cross", "a cross", "an upright post with a crossbar", build_cross),
    Kind("tower", "a tower", "blocks stacked one on another", build_tower),
]


# ---- objects -------------------------------------------------------------------------------

def _variant_rng(kind: int, variant: int) -> np.random.Generator:
    return np.random.default_rng([SEED, kind, variant])


def build(kind_index: int, variant: int) -> tuple[list[trimesh.Trimesh], str, str, str]:
    """A variant's parts (turned about y by a seeded angle, standing on y = 0, centred,
    coloured), its colour name, its proportion words (measured before the turn) and detail."""
    rng = _variant_rng(kind_index, variant)
    parts, detail = KINDS[kind_index].build(rng)
    proportions = proportion_words(parts)
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    yaw = trimesh.transformations.rotation_matrix(rng.uniform(0, 2 * np.pi), [0, 1, 0])
    for part in parts:
        part.apply_transform(yaw)
    lo, hi = _bounds(parts)
    shift = (-(lo[0] + hi[0]) / 2, -lo[1], -(lo[2] + hi[2]) / 2)
    for part in parts:
        part.apply_translation(shift)
        part.visual.face_colors = (*COLOURS[colour], 255)
    return parts, colour, proportions, detail


def _bounds(parts: list[trimesh.Trimesh]) -> tuple[np.ndarray, np.ndarray]:
    return (np.min([p.bounds[0] for p in parts], axis=0), np.max([p.bounds[1] for p in parts], axis=0))


def proportion_words(parts: list[trimesh.Trimesh]) -> str:
    """'tall', 'long', 'flat', 'long flat' or '' from the shape's extents (height is y)."""
    lo, hi = _bounds(parts)
    x, height, z = hi - lo
    across, narrow = max(x, z), min(x, z)
    if height > 1.6 * across:
        return "tall"
    words = ["long"] if across > 1.8 * max(narrow, height) else []
    if height < 0.5 * narrow:
        words.append("flat")
    return " ".join(words)


def texts(kind: Kind, colour: str, proportions: str, detail: str) -> list[str]:
    noun = kind.noun.split(" ", 1)[1]
    shaped = f"a {proportions} {noun}" if proportions else kind.noun
    tail = f" {detail}" if detail else ""
    return [kind.noun, f"a {colour} {noun}", f"{shaped}, {kind.definition}",
            f"a synthetic {colour} {noun} shape{tail}, made by a program"]


def objects(root: Path | None = None) -> Iterator[SourceObject]:
    """Every kind x variant; `root` is ignored (no packages)."""
    for k, kind in enumerate(KINDS):
        for variant in range(VARIANTS):
            _parts, colour, proportions, detail = build(k, variant)
            yield SourceObject(
                source=NAME, id=f"{kind.label.lower().replace(' ', '_')}/{variant:02d}",
                name=" ".join(w for w in (proportions, colour, kind.noun.split(" ", 1)[1]) if w),
                label=kind.label, texts=texts(kind, colour, proportions, detail), files=[],
                load=lambda k=k, v=variant: build(k, v)[0])
