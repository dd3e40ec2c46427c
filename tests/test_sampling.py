"""The sampler on plain arrays: area weighting, normalisation, normals, colours, errors."""


import numpy as np
import pytest

from core.errors import AssetError
from core.sampling import (
    DEFAULT_GREY,
    NORMAL,
    RGB,
    XYZ,
    SurfacePart,
    normalize_unit_sphere,
    sample_points,
)

# A right triangle with unit legs in the z = 0 plane, counter-clockwise seen from +z.
UNIT_TRIANGLE = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
QUAD = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
QUAD_FACES = np.array([[0, 1, 2], [0, 2, 3]])


def _triangle(scale=1.0, z=0.0, **colour):
    vertices = UNIT_TRIANGLE * scale + [0, 0, z]
    return SurfacePart(vertices, np.array([[0, 1, 2]]), **colour)


def _two_triangles_by_z(points):
    """Split normalised points of two triangles lying in two z planes."""
    z = points[:, 2]
    low = z < (z.min() + z.max()) / 2
    return low, ~low


@pytest.mark.parametrize("as_parts", [True, False], ids=["two parts", "one part"])
def test_points_follow_area_and_lie_on_the_triangles(as_parts):
    n = 20_000
    # Legs 1 and sqrt(3): areas 1:3, the larger one 5 units above the smaller one.
    small, large = _triangle(1.0, z=0.0), _triangle(np.sqrt(3.0), z=5.0)
    if as_parts:
        parts = [small, large]
    else:
        parts = SurfacePart(
            np.concatenate([small.vertices, large.vertices]), np.array([[0, 1, 2], [3, 4, 5]])
        )
    points = sample_points(parts, n, seed=1)
    low, high = _two_triangles_by_z(points)

    # Binomial: the small triangle holds a quarter of the points, within 5 std.
    std = np.sqrt(n * 0.25 * 0.75)
    assert abs(low.sum() - n / 4) < 5 * std

    # Each group is flat, and the 5-unit z gap gives the normalisation scale back.
    for group in (low, high):
        assert np.ptp(points[group, 2]) < 1e-5
    scale = 5.0 / (points[high, 2].mean() - points[low, 2].mean())
    for group, leg in ((low, 1.0), (high, np.sqrt(3.0))):
        xy = points[group, :2] * scale
        corner = xy.min(axis=0)
        # Inside the triangle: below the hypotenuse x + y = leg (relative to the corner).
        along = (xy - corner).sum(axis=1) / leg
        assert along.max() <= 1 + 1e-4
        assert along.max() > 0.99  # and reaching it: the whole triangle is covered
        # Uniform inside the triangle: the corner sub-triangle with half legs holds 1/4.
        inner = (along < 0.5).mean()
        assert abs(inner - 0.25) < 5 * np.sqrt(0.25 * 0.75 / group.sum())


def test_output_is_centred_on_the_unit_sphere():
    part = SurfacePart(QUAD * [3, 7, 1] + [10, -4, 2], QUAD_FACES)
    points = sample_points(part, 5000)
    assert points.shape == (5000, 9) and points.dtype == np.float32
    np.testing.assert_allclose(points[:, XYZ].mean(axis=0), 0, atol=1e-5)
    assert abs(np.linalg.norm(points[:, XYZ], axis=1).max() - 1) < 1e-5


def test_normalize_unit_sphere_returns_what_undoes_it(rng):
    xyz = rng.normal(size=(100, 3)) * 4 + 9
    normalised, centre, scale = normalize_unit_sphere(xyz)
    np.testing.assert_allclose(normalised * scale + centre, xyz)
    assert abs(np.linalg.norm(normalised, axis=1).max() - 1) < 1e-12
    # One point: nothing to scale by, it lands on the origin.
    single, _, single_scale = normalize_unit_sphere(xyz[:1])
    assert single_scale == 1.0 and np.all(single == 0)


def test_same_seed_same_points_other_seed_other_points():
    part = SurfacePart(QUAD, QUAD_FACES)
    first = sample_points(part, 1000, seed=7)
    np.testing.assert_array_equal(first, sample_points(part, 1000, seed=7))
    assert not np.array_equal(first, sample_points(part, 1000, seed=8))


def test_normals_are_unit_face_normals():
    flat = sample_points(SurfacePart(QUAD, QUAD_FACES), 500)
    np.testing.assert_allclose(flat[:, NORMAL], np.tile([0, 0, 1], (500, 1)), atol=1e-6)
    # The plane x + y + z = 1 through the three axis points.
    tilted = sample_points(SurfacePart(np.eye(3), np.array([[0, 1, 2]])), 500)
    np.testing.assert_allclose(tilted[:, NORMAL], np.tile(np.ones(3) / np.sqrt(3), (500, 1)), atol=1e-6)
    # Reversed winding flips it.
    flipped = sample_points(SurfacePart(np.eye(3), np.array([[0, 2, 1]])), 10)
    np.testing.assert_allclose(flipped[:, NORMAL] @ np.ones(3), -np.sqrt(3), atol=1e-6)


def test_corner_colours_interpolate_barycentrically():
    corners = np.eye(3)[None]  # red, green, blue at the three corners
    points = sample_points(_triangle(corner_colors=corners), 2000)
    rgb = points[:, RGB].astype(np.float64)
    np.testing.assert_allclose(rgb.sum(axis=1), 1, atol=1e-5)
    # Colour is an affine function of position: red falls off as x + y grows.
    design = np.column_stack([points[:, 0], points[:, 1], np.ones(len(points))])
    coef, residual, *_ = np.linalg.lstsq(design, rgb, rcond=None)
    assert residual.max() < 1e-8
    assert coef[0, 0] < 0 and coef[1, 0] < 0  # red falls towards the far corners
    assert coef[0, 1] > 0 and coef[1, 2] > 0  # green grows with x, blue with y


def test_uint8_colours_are_read_as_0_to_255():
    corners = np.full((1, 3, 4), [255, 0, 51, 255], dtype=np.uint8)
    points = sample_points(_triangle(corner_colors=corners), 10)
    np.testing.assert_allclose(points[:, RGB], np.tile([1, 0, 0.2], (10, 1)), atol=1e-6)
    base = sample_points(_triangle(base_color=np.array([0, 128, 255], np.uint8)), 10)
    np.testing.assert_allclose(base[0, RGB], [0, 128 / 255, 1], atol=1e-6)


def _half_red_half_blue(width=4, height=2):
    texture = np.zeros((height, width, 3), np.uint8)
    texture[:, : width // 2] = [255, 0, 0]
    texture[:, width // 2 :] = [0, 0, 255]
    return texture


def test_texture_lookup_follows_uvs():
    uvs = QUAD[:, :2][QUAD_FACES]  # u = x, v = y
    points = sample_points(
        SurfacePart(QUAD, QUAD_FACES, corner_uvs=uvs, texture=_half_red_half_blue()), 4000
    )
    x = points[:, 0]
    u = (x - x.min()) / np.ptp(x)  # back to 0..1 across the quad
    left, right = u < 0.48, u > 0.52
    np.testing.assert_array_equal(points[left][:, RGB], np.tile([1, 0, 0], (left.sum(), 1)))
    np.testing.assert_array_equal(points[right][:, RGB], np.tile([0, 0, 1], (right.sum(), 1)))


def test_texture_v_is_flipped_and_uvs_wrap():
    texture = np.zeros((2, 1, 4), np.uint8)
    texture[0] = [0, 255, 0, 255]  # top row of the image: v = 1
    texture[1] = [255, 0, 255, 255]  # bottom row: v = 0
    top = sample_points(_triangle(corner_uvs=np.full((1, 3, 2), [0.5, 0.9]), texture=texture), 5)
    np.testing.assert_array_equal(top[:, RGB], np.tile([0, 1, 0], (5, 1)))
    # v = 1.9 repeats to 0.9 (glTF's default REPEAT); v = 1.0 stays on the top edge.
    for v in (1.9, 1.0):
        part = _triangle(corner_uvs=np.full((1, 3, 2), [0.5, v]), texture=texture)
        np.testing.assert_array_equal(sample_points(part, 5)[:, RGB], np.tile([0, 1, 0], (5, 1)))
    wrapped = _triangle(corner_uvs=np.full((1, 3, 2), [-0.5, -0.8]), texture=texture)
    np.testing.assert_array_equal(sample_points(wrapped, 5)[:, RGB], np.tile([1, 0, 1], (5, 1)))


def test_colour_priority_texture_tinted_then_corners_then_base_then_grey():
    uvs = np.zeros((1, 3, 2))  # every point reads the texture's bottom-left texel (red)
    corners = np.full((1, 3, 3), 0.5)
    base = np.array([0.0, 1.0, 0.0])
    cases = [
        (dict(corner_uvs=uvs, texture=_half_red_half_blue(), corner_colors=corners), [1, 0, 0]),
        # base_color beside a texture tints it (glTF's base colour factor), corner colours unused
        (dict(corner_uvs=uvs, texture=_half_red_half_blue(), corner_colors=corners, base_color=[0.5, 1, 1]),
         [0.5, 0, 0]),
        (dict(corner_colors=corners, base_color=base), [0.5, 0.5, 0.5]),
        (dict(base_color=base), [0, 1, 0]),
        (dict(texture=_half_red_half_blue()), [DEFAULT_GREY] * 3),  # no UVs: texture unusable
        (dict(), [DEFAULT_GREY] * 3),
    ]
    for colour, expected in cases:
        points = sample_points(_triangle(**colour), 20)
        np.testing.assert_allclose(points[:, RGB], np.tile(expected, (20, 1)), atol=1e-6)


def test_every_part_keeps_its_own_colour():
    red = _triangle(base_color=[1.0, 0, 0])
    blue = _triangle(z=3.0, base_color=[0, 0, 1.0])
    points = sample_points([red, blue], 1000)
    low, high = _two_triangles_by_z(points)
    assert low.any() and high.any()
    assert np.all(points[low, 3] == 1) and np.all(points[high, 5] == 1)


def test_faces_on_non_finite_vertices_are_dropped():
    vertices = np.concatenate([QUAD, [[np.nan, 0, 0], [0, np.inf, 0]]])
    faces = np.concatenate([QUAD_FACES, [[0, 1, 4], [4, 5, 2]]])
    points = sample_points(SurfacePart(vertices, faces, corner_colors=np.ones((4, 3, 3))), 500)
    assert np.isfinite(points).all()
    np.testing.assert_allclose(points[:, NORMAL], np.tile([0, 0, 1], (500, 1)), atol=1e-6)

    all_bad = SurfacePart(np.full((3, 3), np.nan), np.array([[0, 1, 2]]))
    with pytest.raises(AssetError, match="non-finite"):
        sample_points(all_bad, 10)


@pytest.mark.parametrize(
    "part, n_points, reason",
    [
        (SurfacePart(QUAD, np.zeros((0, 3), int)), 10, "no faces"),
        (SurfacePart(QUAD, np.array([[0, 1, 4]])), 10, "out of range"),
        (SurfacePart(QUAD, np.array([[0, -1, 2]])), 10, "out of range"),
        (SurfacePart(np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), np.array([[0, 1, 2]])), 10, "zero total surface area"),
        (SurfacePart(QUAD, QUAD_FACES), 0, "n_points"),
        (SurfacePart(QUAD, QUAD_FACES.astype(float)), 10, "integer"),
        (SurfacePart(QUAD[:, :2], QUAD_FACES), 10, r"\(V, 3\)"),
        (SurfacePart(QUAD, QUAD_FACES, corner_colors=np.ones((1, 3, 3))), 10, "corner_colors"),
    ],
)
def test_bad_arrays_raise_asset_error_with_a_reason(part, n_points, reason):
    with pytest.raises(AssetError, match=reason) as caught:
        sample_points(part, n_points)
    assert caught.value.path is None


def test_an_empty_part_beside_a_good_one_is_skipped():
    empty = SurfacePart(np.zeros((0, 3)), np.zeros((0, 3), int))
    points = sample_points([empty, SurfacePart(QUAD, QUAD_FACES)], 100)
    assert points.shape == (100, 9)


def test_a_million_faces_sample_with_colours(rng):
    """Large meshes go through the vectorised path (speed is measured in bench/, not here)."""
    vertices = rng.random((500_000, 3))
    faces = rng.integers(0, len(vertices), (1_000_000, 3))
    part = SurfacePart(vertices, faces, corner_colors=rng.random((len(faces), 3, 3)))
    points = sample_points(part, 10_000)
    assert points.shape == (10_000, 9)
    assert np.isfinite(points).all() and (0 <= points[:, 3:6]).all() and (points[:, 3:6] <= 1).all()


def test_y_up_turns_blenders_frame_into_the_encoders():
    """core.sampling.y_up: Blender's up (+z) becomes +y, its front (-y) becomes +z, for
    positions and normals; colours stay; the input is not changed."""
    from core.sampling import y_up

    points = np.array([[1, 2, 3, 0.1, 0.2, 0.3, 0, 0, 1]], np.float32)
    turned = y_up(points)
    np.testing.assert_allclose(turned, [[1, 3, -2, 0.1, 0.2, 0.3, 0, 1, 0]], atol=1e-7)
    assert points[0, 1] == 2
    np.testing.assert_allclose(y_up(points[:, :6]), [[1, 3, -2, 0.1, 0.2, 0.3]], atol=1e-7)
