"""The extension in an artist's scene: triplets for three primitives, and the scene comes
out exactly as it went in. Runs bpy in this process (Cycles on CPU, tiny renders)."""

import numpy as np
import pytest
from PIL import Image

bpy = pytest.importorskip("bpy")

from core.captioners import load_captioner  # noqa: E402
from core.spaces import load_space  # noqa: E402
from core.triplets import TripletStore  # noqa: E402
from core.triplets.caption import caption_store  # noqa: E402

RESOLUTION = 64


@pytest.fixture
def addon(primitives):
    """The extension enabled (after the fixture's factory reset, which would disable it)."""
    import addon_utils

    addon_utils.enable("blender_addon", default_set=True)
    yield
    addon_utils.disable("blender_addon")


def scene_state():
    """Everything of the artist's scene that generating triplets might disturb."""
    scene = bpy.context.scene
    render = scene.render
    return {
        "scene": scene.name, "scenes": sorted(s.name for s in bpy.data.scenes),
        "camera": scene.camera.name if scene.camera else None, "world": scene.world.name if scene.world else None,
        "render": (render.engine, render.resolution_x, render.resolution_y, render.film_transparent,
                   render.filepath, scene.cycles.samples, scene.view_settings.view_transform),
        "frame": scene.frame_current,
        "active": bpy.context.view_layer.objects.active.name,
        "selected": sorted(o.name for o in bpy.context.selected_objects),
        "objects": sorted((o.name, tuple(round(v, 6) for v in o.matrix_world.col[3]), tuple(c.name for c in o.users_collection))
                          for o in scene.objects),
        "data": {kind: len(getattr(bpy.data, kind)) for kind in ("objects", "cameras", "worlds", "images", "meshes",
                                                                 "materials", "collections", "lights")},
    }


@pytest.fixture
def primitives():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    made = []
    for add, location, colour in ((bpy.ops.mesh.primitive_cube_add, (0, 0, 0), (0.8, 0.05, 0.05, 1)),
                                  (bpy.ops.mesh.primitive_uv_sphere_add, (4, 0, 0), (0.05, 0.1, 0.8, 1)),
                                  (bpy.ops.mesh.primitive_cone_add, (0, 5, 1), (0.05, 0.6, 0.1, 1))):
        add(location=location)
        obj = bpy.context.active_object
        material = bpy.data.materials.new(obj.name + "Paint")
        material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = colour
        obj.data.materials.append(material)
        made.append(obj)
    # The artist's own set-up, which must survive.
    scene = bpy.context.scene
    bpy.ops.object.camera_add(location=(10, -10, 10))
    scene.camera = bpy.context.active_object
    scene.render.engine = "BLENDER_EEVEE"
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    scene.render.filepath = "//artist/"
    scene.frame_current = 7
    scene.world = bpy.data.worlds.new("ArtistWorld")
    for obj in bpy.context.selected_objects:
        obj.select_set(False)
    for obj in made:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = made[1]
    return made


def test_three_primitives_make_triplets_and_leave_the_scene_alone(primitives, addon, tmp_path):
    before = scene_state()
    result = bpy.ops.ulip2.generate_triplets(store=str(tmp_path / "store"), resolution=RESOLUTION, samples=4)
    assert result == {"FINISHED"}
    assert scene_state() == before

    store = TripletStore(tmp_path / "store")
    caption_store(store, load_captioner("metadata"), load_space("minilm"), k=4)
    records = {r.meta["source"]["object"]: r for r in store.records()}
    assert sorted(records) == ["Cone", "Cube", "Sphere"]
    for name, record in records.items():
        views = record.view_paths()
        assert len(views) == 12
        for path in views:
            alpha = np.asarray(Image.open(path))[..., 3]
            assert alpha.shape == (RESOLUTION, RESOLUTION)
            assert 0.05 < (alpha > 127).mean() < 0.8, f"{name} {path.name}: object covers {(alpha > 127).mean():.0%}"
        points = record.points().astype(np.float32)
        assert points.shape == (10_000, 6)
        assert np.linalg.norm(points[:, :3], axis=1).max() == pytest.approx(1.0, abs=1e-2)
        assert record.meta["captions"]["vision_model"] is False and len(record.captions) == 12
        assert all(name.lower() in caption for caption in record.captions)
    # Colours come from the materials: red cube, blue sphere, both in points and in the renders' captions.
    assert records["Cube"].points()[:, 3].mean() > 0.6 > records["Sphere"].points()[:, 3].mean()
    for name, colour in (("Cube", "red"), ("Sphere", "blue"), ("Cone", "green")):
        captions = records[name].captions
        assert sum(colour in c for c in captions) >= 9, captions
    assert records["Cube"].meta["facts"]["dimensions"] == pytest.approx([2, 2, 2])

    # Same objects again: already stored, nothing rewritten.
    assert bpy.ops.ulip2.generate_triplets(store=str(tmp_path / "store"), resolution=RESOLUTION) == {"FINISHED"}
    assert store.info()["records"] == 3


def test_points_follow_modifiers_and_instances(primitives):
    from blender_addon.scene.extract import extract

    cube = primitives[0]
    cube.modifiers.new("subdivide", "SUBSURF").levels = 2
    hidden = bpy.data.collections.new("Props")
    bpy.ops.mesh.primitive_torus_add(location=(0, 0, 0))
    torus = bpy.context.active_object
    for collection in torus.users_collection:
        collection.objects.unlink(torus)
    hidden.objects.link(torus)
    instancer = bpy.data.objects.new("PropInstance", None)
    instancer.instance_type, instancer.instance_collection = "COLLECTION", hidden
    instancer.location = (20, 0, 0)
    bpy.context.scene.collection.objects.link(instancer)

    geometry = extract(bpy.context.evaluated_depsgraph_get(), [cube, instancer])
    assert geometry.object_names == ["Cube", "Torus"]
    assert geometry.facts()["triangles"] == 12 * 16 + len(torus.data.polygons) * 2
    assert geometry.world_vertices[:, 0].max() == pytest.approx(21.25)  # torus radius 1 + 0.25 at x = 20
