"""Mesh files through trimesh: every format, every colour source, scene transforms, bad files."""

import os
import random

import numpy as np
import pytest
import trimesh
from PIL import Image
from trimesh.visual.material import PBRMaterial

from core.errors import AssetError
from core.formats import TRIMESH_FORMATS
from core.meshio import load_parts, load_points
from core.sampling import DEFAULT_GREY, NORMAL, RGB, XYZ

QUAD = np.array([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
QUAD_FACES = np.array([[0, 1, 2], [0, 2, 3]])


def _on_box_surface(points, atol=1e-5):
    """Every point has some coordinate on the box's min or max (box = points' extent)."""
    xyz = points[:, XYZ]
    gap = np.minimum(np.abs(xyz - xyz.min(axis=0)), np.abs(xyz - xyz.max(axis=0)))
    return bool((gap.min(axis=1) < atol).all())


def _u(points):
    """Normalised x back to 0..1 across a unit quad."""
    x = points[:, 0]
    return (x - x.min()) / np.ptp(x)


def _textured_quad(factor=(1.0, 1.0, 1.0, 1.0)):
    texture = np.zeros((2, 4, 3), np.uint8)
    texture[:, :2] = [255, 0, 0]
    texture[:, 2:] = [0, 0, 255]
    material = PBRMaterial(baseColorTexture=Image.fromarray(texture), baseColorFactor=list(factor))
    visual = trimesh.visual.TextureVisuals(uv=QUAD[:, :2], material=material)
    return trimesh.Trimesh(QUAD, QUAD_FACES, visual=visual, process=False)


@pytest.mark.parametrize("extension", TRIMESH_FORMATS)
def test_every_supported_format_loads(tmp_path, extension):
    path = tmp_path / f"box{extension}"
    trimesh.creation.box(extents=[2, 1, 1]).export(path)  # .gltf writes its .bin buffers beside it
    parts = load_parts(path)
    assert len(parts) == 1 and len(parts[0].faces) == 12
    points = load_points(path, 2000)
    assert points.shape == (2000, 9) and np.isfinite(points).all()
    assert _on_box_surface(points)
    np.testing.assert_allclose(np.ptp(points[:, XYZ], axis=0) / np.ptp(points[:, 0]), [1, 0.5, 0.5], atol=1e-3)
    # Outward unit normals: each points away from the box centre.
    assert (np.einsum("nd,nd->n", points[:, NORMAL], points[:, XYZ]) > 0).all()


def test_texture_in_a_glb_colours_the_points(tmp_path):
    path = tmp_path / "textured.glb"
    _textured_quad().export(path)
    part = load_parts(path)[0]
    assert part.texture is not None and part.corner_uvs.shape == (2, 3, 2)
    points = load_points(path, 3000)
    u = _u(points)
    red, blue = u < 0.48, u > 0.52
    np.testing.assert_allclose(points[red][:, RGB], np.tile([1, 0, 0], (red.sum(), 1)))
    np.testing.assert_allclose(points[blue][:, RGB], np.tile([0, 0, 1], (blue.sum(), 1)))


def test_glb_base_colour_factor_tints_its_texture(tmp_path):
    path = tmp_path / "tinted.glb"
    _textured_quad(factor=(0.5, 1.0, 1.0, 1.0)).export(path)
    points = load_points(path, 1000)
    red = _u(points) < 0.48
    np.testing.assert_allclose(points[red][:, RGB], np.tile([128 / 255, 0, 0], (red.sum(), 1)), atol=1e-6)


def test_texture_in_an_obj_with_mtl_colours_the_points(tmp_path):
    path = tmp_path / "textured.obj"
    _textured_quad().export(path)  # writes the .mtl and the .png beside it
    points = load_points(path, 2000)
    u = _u(points)
    assert (points[u < 0.48][:, 3] == 1).all() and (points[u > 0.52][:, 5] == 1).all()


def test_vertex_colours_in_a_ply_are_interpolated(tmp_path):
    colours = np.array([[255, 0, 0, 255], [0, 0, 255, 255], [0, 0, 255, 255], [255, 0, 0, 255]], np.uint8)
    mesh = trimesh.Trimesh(QUAD, QUAD_FACES, vertex_colors=colours, process=False)
    path = tmp_path / "painted.ply"
    mesh.export(path)
    points = load_points(path, 2000).astype(np.float64)
    # Red fades linearly into blue from the left edge to the right edge.
    design = np.column_stack([points[:, 0], points[:, 1], np.ones(len(points))])
    (red_x, red_y, _), residual, *_ = np.linalg.lstsq(design, points[:, 3], rcond=None)
    assert residual[0] < 1e-8 and red_x < 0 and abs(red_y) < 1e-6
    np.testing.assert_allclose(points[:, 3] + points[:, 5], 1, atol=1e-6)
    assert points[:, 3].max() > 0.99 and points[:, 3].min() < 0.01


def test_face_colours_in_a_ply(tmp_path):
    mesh = trimesh.creation.box()
    mesh.visual.face_colors = [0, 255, 0, 255]
    path = tmp_path / "green.ply"
    mesh.export(path)
    np.testing.assert_allclose(load_points(path, 100)[:, RGB], np.tile([0, 1, 0], (100, 1)))


def test_material_base_colour_in_a_glb(tmp_path):
    material = PBRMaterial(baseColorFactor=[0.2, 0.6, 0.8, 1.0])
    mesh = trimesh.Trimesh(QUAD, QUAD_FACES, visual=trimesh.visual.TextureVisuals(material=material))
    path = tmp_path / "plain.glb"
    mesh.export(path)
    rgb = load_points(path, 100)[:, RGB]
    np.testing.assert_allclose(rgb, np.tile([0.2, 0.6, 0.8], (100, 1)), atol=1 / 255)


def test_material_diffuse_in_an_obj_mtl(tmp_path):
    (tmp_path / "kd.mtl").write_text("newmtl paint\nKd 0.1 0.5 0.9\n")
    (tmp_path / "kd.obj").write_text(
        "mtllib kd.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nusemtl paint\nf 1 2 3\n"
    )
    rgb = load_points(tmp_path / "kd.obj", 100)[:, RGB]
    np.testing.assert_allclose(rgb, np.tile([0.1, 0.5, 0.9], (100, 1)), atol=1 / 255)


def test_a_colourless_stl_is_grey(tmp_path):
    path = tmp_path / "plain.stl"
    trimesh.creation.box().export(path)
    np.testing.assert_allclose(load_points(path, 100)[:, RGB], DEFAULT_GREY, atol=1e-6)


def test_scene_node_transforms_are_applied(tmp_path):
    box = trimesh.creation.box()  # unit cube at the origin
    scene = trimesh.Scene()
    scene.add_geometry(box, node_name="near", transform=trimesh.transformations.translation_matrix([-5, 0, 0]))
    # The same geometry again, doubled in size and mirrored: 4x the area, winding reversed.
    far = np.diag([-2.0, 2.0, 2.0, 1.0])
    far[:3, 3] = [5, 0, 0]
    scene.add_geometry(box, node_name="far", transform=far)
    path = tmp_path / "two boxes.glb"
    scene.export(path)

    assert len(load_parts(path)) == 2
    n = 10_000
    points = load_points(path, n)
    x = points[:, 0]
    # Two clusters with empty space between them (box edges at -4.5 and +4).
    centre_gap = (np.abs(x - (x.min() + x.max()) / 2) < 0.2 * np.ptp(x)).sum()
    assert centre_gap == 0
    near = x < (x.min() + x.max()) / 2
    assert abs(near.sum() - n / 5) < 5 * np.sqrt(n * 0.2 * 0.8)  # area 1:4
    # The far box spans 2 units against the near box's 1.
    assert np.ptp(x[~near]) == pytest.approx(2 * np.ptp(x[near]), rel=1e-3)
    # Normals still point out of each box, mirrored one included.
    for group in (near, ~near):
        centre = (points[group, :3].min(axis=0) + points[group, :3].max(axis=0)) / 2
        outward = np.einsum("nd,nd->n", points[group][:, NORMAL], points[group][:, XYZ] - centre)
        assert (outward > 0).all()


def test_unicode_and_spaces_in_paths(tmp_path):
    folder = tmp_path / "ünïcødé assets 資產"
    folder.mkdir()
    for name in ("my böx 猫.glb", "my böx 猫.obj", "dé jà.gltf"):
        trimesh.creation.box().export(folder / name)
        assert load_points(folder / name, 64).shape == (64, 9)


def test_nan_vertices_in_a_file(tmp_path):
    vertices = np.concatenate([QUAD, [[np.nan, 0, 0]]])
    faces = np.concatenate([QUAD_FACES, [[0, 1, 4]]])
    path = tmp_path / "some nan.ply"
    trimesh.Trimesh(vertices, faces, process=False).export(path)
    points = load_points(path, 500)
    assert np.isfinite(points).all()

    path = tmp_path / "all nan.ply"
    trimesh.Trimesh(np.full((3, 3), np.nan), [[0, 1, 2]], process=False).export(path)
    with pytest.raises(AssetError, match="all nan.ply"):
        load_points(path, 500)


def _write_bad(tmp_path, case):
    """Write one kind of bad file and return (path, words expected in the reason)."""
    if case == "missing":
        return tmp_path / "nowhere.glb", "not found"
    if case == "empty":
        path = tmp_path / "empty.obj"
        path.write_bytes(b"")
        return path, "empty"
    if case == "truncated":
        data = trimesh.creation.box().export(file_type="glb")
        path = tmp_path / "cut.glb"
        path.write_bytes(data[: len(data) // 2])
        return path, "cannot read"
    if case.startswith("junk"):
        path = tmp_path / f"junk.{case.split('.')[1]}"
        path.write_bytes(random.Random(0).randbytes(4096))
        return path, None  # unreadable or empty of triangles, depending on the format
    if case == "point cloud":
        path = tmp_path / "cloud.ply"
        trimesh.PointCloud(np.random.default_rng(0).random((50, 3))).export(path)
        return path, "no triangles"
    if case == "lines":
        path = tmp_path / "lines.obj"
        path.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nl 1 2 3\n")
        return path, "no triangles"
    if case == "gltf without buffer":
        path = tmp_path / "lonely.gltf"
        trimesh.creation.box().export(path)
        for buffer in tmp_path.glob("*.bin"):
            buffer.unlink()
        return path, "refers to is missing: .*bin"
    if case == "degenerate":
        path = tmp_path / "flat.ply"
        line = [[0, 0, 0], [1, 0, 0], [2, 0, 0]]
        trimesh.Trimesh(line, [[0, 1, 2], [0, 2, 1]], process=False).export(path)
        return path, "zero total surface area"
    if case == "fbx":
        path = tmp_path / "scene.fbx"
        path.write_bytes(b"Kaydara FBX Binary  \x00")
        return path, "Blender worker"
    if case == "folder":
        path = tmp_path / "folder.glb"
        path.mkdir()
        return path, "not a regular file"
    raise ValueError(case)


@pytest.mark.parametrize(
    "case",
    ["missing", "empty", "truncated", "junk.glb", "junk.obj", "junk.ply", "junk.stl",
     "point cloud", "lines", "gltf without buffer", "degenerate", "fbx", "folder"],
)
def test_bad_files_raise_asset_error_naming_the_file(tmp_path, case):
    path, reason = _write_bad(tmp_path, case)
    with pytest.raises(AssetError, match=reason) as caught:
        load_points(path, 100)
    assert path.name in str(caught.value)
    assert caught.value.path == os.fspath(path)


def test_unsupported_extension_lists_the_supported_ones(tmp_path):
    path, _ = _write_bad(tmp_path, "fbx")
    with pytest.raises(AssetError) as caught:
        load_parts(path)
    assert all(extension in str(caught.value) for extension in TRIMESH_FORMATS)


def test_sampling_errors_carry_the_path(tmp_path):
    path = tmp_path / "fine.stl"
    trimesh.creation.box().export(path)
    with pytest.raises(AssetError, match="n_points") as caught:
        load_points(path, 0)
    assert caught.value.path == os.fspath(path)
