"""Render V views of objects on a ring, in a temporary scene the artist never sees.

Everything this module creates (scene, camera, world, the studio-light image) is removed
again, and the objects are only linked into the temporary scene, so the artist's scene,
its render settings, world, selection, active object and frame are untouched.
"""

from __future__ import annotations

import ctypes.util
import math
import os
from dataclasses import dataclass

import bpy
import numpy as np
from mathutils import Vector

# The HDRI lighting every view: one of the studio lights bundled with Blender.
STUDIO_LIGHT = "studio.exr"
# Vertical field of view; the bounding sphere fills it with this margin.
FOV_DEG = 40.0
MARGIN = 1.05


@dataclass
class ViewSettings:
    """How views are rendered (recorded in each triplet's "views" block)."""

    count: int = 12  # ULIP-2: 12 views on a ring for Objaverse
    elevation_deg: float = 30.0
    resolution: int = 224
    engine: str = "CYCLES"  # or "BLENDER_WORKBENCH" (needs EGL when headless)
    # One sample per pixel, denoised with the albedo pass as a guide: with the world's
    # importance map this is cleaner than 8 unguided samples (textures stay sharp) at half
    # the time (bench/triplets.py); raise it for glossy or glass assets.
    samples: int = 1
    denoise: bool = True  # OpenImageDenoise: the studio HDRI at low samples is speckled without it
    start_azimuth_deg: float = 0.0  # the first view's; the ring goes on from there

    def azimuths(self) -> list[float]:
        return [self.start_azimuth_deg + 360.0 * i / self.count for i in range(self.count)]

    def to_json(self) -> dict:
        return {"resolution": self.resolution, "engine": self.engine, "samples": self.samples,
                "denoise": self.denoise,
                "elevation_deg": self.elevation_deg, "azimuth_deg": self.azimuths()}


def thumbnail_settings(size: int) -> ViewSettings:
    """A library thumbnail: one three-quarter view from the front right and above, the way
    asset browsers show assets. Workbench renders it in tens of milliseconds; headless it
    needs EGL and aborts the process without it, so there Cycles (1 guided sample) stands in."""
    engine = "BLENDER_WORKBENCH" if ctypes.util.find_library("EGL") else "CYCLES"
    # Blender's front is -Y: azimuth -55 degrees puts the camera in front, a little right.
    return ViewSettings(count=1, elevation_deg=25.0, resolution=size, engine=engine, start_azimuth_deg=-55.0)


def render_thumbnail(objects, world_vertices: np.ndarray, path: str, size: int) -> None:
    """One PNG (RGBA, transparent background) of `objects`, `size` pixels square, at `path`."""
    render_views(objects, world_vertices, [path], thumbnail_settings(size))


def bounding_sphere(world_vertices: np.ndarray) -> tuple[Vector, float]:
    """Centre (of the bounding box) and radius enclosing every vertex."""
    low, high = world_vertices.min(axis=0), world_vertices.max(axis=0)
    centre = (low + high) / 2
    radius = float(np.sqrt(((world_vertices - centre) ** 2).sum(axis=1)).max())
    return Vector(centre.tolist()), max(radius, 1e-6)


def render_views(objects, world_vertices: np.ndarray, paths: list[str], settings: ViewSettings) -> None:
    """Render settings.count PNGs (RGBA, transparent background) of `objects` to `paths`."""
    scene = bpy.data.scenes.new("ulip2 views")
    created = _Created()
    # Rendering makes Blender's "Render Result" image if there was none; it goes again after.
    # (One the artist already had shows these views afterwards: the render API has no other target.)
    had_render_result = any(image.type == "RENDER_RESULT" for image in bpy.data.images)
    try:
        for obj in objects:
            scene.collection.objects.link(obj)
        _configure(scene, settings, created, objects)
        centre, radius = bounding_sphere(world_vertices)
        camera = created.add(bpy.data.objects.new("ulip2 camera", created.add(bpy.data.cameras.new("ulip2 camera"))))
        camera.data.angle = math.radians(FOV_DEG)
        distance = MARGIN * radius / math.sin(math.radians(FOV_DEG) / 2)
        camera.data.clip_start = max(distance - 2 * radius, distance * 1e-3)
        camera.data.clip_end = distance + 2 * radius
        scene.collection.objects.link(camera)
        scene.camera = camera
        elevation = math.radians(settings.elevation_deg)
        for azimuth, path in zip(settings.azimuths(), paths):
            a = math.radians(azimuth)
            offset = Vector((math.cos(a) * math.cos(elevation), math.sin(a) * math.cos(elevation), math.sin(elevation)))
            camera.location = centre + distance * offset
            camera.rotation_euler = (-offset).to_track_quat("-Z", "Y").to_euler()
            scene.render.filepath = os.fspath(path)
            bpy.ops.render.render(write_still=True, scene=scene.name)
    finally:
        bpy.data.scenes.remove(scene)
        created.remove()
        if not had_render_result:
            for image in [image for image in bpy.data.images if image.type == "RENDER_RESULT"]:
                bpy.data.images.remove(image)


class _Created:
    """Datablocks made for rendering, removed afterwards (objects before their data)."""

    def __init__(self):
        self.blocks = []

    def add(self, block):
        self.blocks.append(block)
        return block

    def remove(self) -> None:
        collections = {bpy.types.Object: bpy.data.objects, bpy.types.Camera: bpy.data.cameras,
                       bpy.types.World: bpy.data.worlds, bpy.types.Image: bpy.data.images}
        for block in reversed(self.blocks):
            for kind, collection in collections.items():
                if isinstance(block, kind):
                    collection.remove(block)


def workbench_colour(objects) -> str:
    """Workbench's colour source for `objects`: it shows one of material viewport colour,
    image texture or colour attribute, and importers leave the viewport colour at its grey
    default. Image textures where a material has one (untextured materials show their
    colour), else the colour attributes when a mesh has them (glTF COLOR_0, OBJ vertex
    colours), else the materials' colours."""
    meshes = [obj.data for obj in objects if obj.type == "MESH"]
    materials = {slot.material for obj in objects for slot in obj.material_slots if slot.material}
    if any(m.node_tree is not None and any(n.type == "TEX_IMAGE" and n.image for n in m.node_tree.nodes)
           for m in materials):
        return "TEXTURE"
    if any(len(mesh.color_attributes) for mesh in meshes):
        return "VERTEX"
    return "MATERIAL"


def _configure(scene, settings: ViewSettings, created: _Created, objects) -> None:
    render = scene.render
    render.engine = settings.engine
    render.resolution_x = render.resolution_y = settings.resolution
    render.resolution_percentage = 100
    render.film_transparent = True
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGBA"
    render.image_settings.color_depth = "8"
    render.image_settings.compression = 15  # small files fast; PNG is lossless at any level
    # Standard, not AgX/Filmic: captioners and CLIP see the colours the materials have.
    scene.view_settings.view_transform = "Standard"
    if settings.engine == "CYCLES":
        cycles = scene.cycles
        cycles.device = "CPU"
        cycles.samples = settings.samples
        cycles.use_adaptive_sampling = False
        cycles.use_denoising = settings.denoise
        cycles.denoiser = "OPENIMAGEDENOISE"
        cycles.denoising_prefilter = "FAST"
        cycles.denoising_input_passes = "RGB_ALBEDO"  # albedo keeps texture detail at 1 sample
        # OIDN's fast network: at 224 px it looks the same as "HIGH" and denoises in well under
        # half the time (12 views of the sample chair: 0.96 s against 1.5 s).
        cycles.denoising_quality = "FAST"
        cycles.max_bounces = 2  # diffuse look for captioning; deep paths cost time and add little
        cycles.diffuse_bounces = cycles.glossy_bounces = 1
        cycles.transmission_bounces = 2
        cycles.transparent_max_bounces = 4
        cycles.use_auto_tile = False
        # The camera is all that changes between views: keep the BVH and shaders.
        render.use_persistent_data = True
        world = created.add(bpy.data.worlds.new("ulip2 studio light"))
        if world.node_tree is None:  # Blender 4.x makes worlds without nodes (5.0 always has them)
            world.use_nodes = True
        nodes = world.node_tree.nodes
        environment = nodes.new("ShaderNodeTexEnvironment")
        lights = bpy.utils.system_resource("DATAFILES", path=os.path.join("studiolights", "world"))
        light = os.path.join(lights, STUDIO_LIGHT)
        environment.image = created.add(bpy.data.images.load(light))
        world.node_tree.links.new(environment.outputs["Color"], nodes["Background"].inputs["Color"])
        # A small importance map for the world: Cycles rebuilds it on every render (about 1 s
        # a view at the default 1024, a few ms at 128), and without one the HDRI's bright
        # spots are missed at low samples and the denoiser smears what is left.
        world.cycles.sampling_method = "MANUAL"
        world.cycles.sample_map_resolution = 128
        scene.world = world
    else:
        shading = scene.display.shading
        shading.light = "STUDIO"
        shading.studio_light = "studio.sl"
        shading.color_type = workbench_colour(objects)
        scene.display.render_aa = "8"
