"""Evaluated Blender objects -> world-space arrays -> core's sampler.

Blender's side of the data path, like glTF-Blender-IO's blender/ layer: plain arrays are
pulled out of bpy here, and core.sampling (numpy only) turns them into points. Modifiers
are applied (the evaluated depsgraph), instances (particles, geometry nodes, collection
instances) are included at their world transforms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import bpy
import numpy as np

# core.sampling and core.triplets need only numpy: inside an artist's Blender they come from
# the ulip2-core wheel bundled in the extension zip (ulip2 blender build-extension), in the
# headless worker from the ulip2 environment itself. Either way the one sampler in core runs.
from core.sampling import DEFAULT_GREY, FileBudget, SurfacePart, sample_points, y_up

# Object types whose evaluated form has a mesh (curves, text and metaballs are meshed).
GEOMETRY_TYPES = {"MESH", "CURVE", "SURFACE", "FONT", "META"}

log = logging.getLogger(__name__)


@dataclass
class Geometry:
    parts: list = field(default_factory=list)  # SurfacePart per mesh instance, world space
    object_names: list = field(default_factory=list)
    material_names: list = field(default_factory=list)

    @property
    def world_vertices(self) -> np.ndarray:
        return np.concatenate([p.vertices for p in self.parts])

    def points(self, n_points: int, seed: int = 0) -> np.ndarray:
        """(n_points, 9) float32 points sampled on the parts, in the encoder's y-up frame:
        the one place points leave Blender's z-up world, for the index, the triplets and the
        panels alike."""
        return y_up(sample_points(self.parts, n_points, seed=seed))

    def facts(self) -> dict:
        """What the record's "facts" hold (the metadata captioner reads them)."""
        vertices = self.world_vertices
        return {"object_names": self.object_names, "material_names": self.material_names,
                "dimensions": [round(float(d), 6) for d in vertices.max(axis=0) - vertices.min(axis=0)],
                "triangles": int(sum(len(p.faces) for p in self.parts))}


def extract(depsgraph, objects) -> Geometry:
    """Every mesh instance that `objects` (or instancers among them) put in the evaluated scene."""
    wanted = {obj.name for obj in objects}
    geometry = Geometry()
    textures = _Textures()
    for instance in depsgraph.object_instances:
        source = instance.parent if instance.is_instance else instance.object
        if source is None or source.original.name not in wanted or instance.object.type not in GEOMETRY_TYPES:
            continue
        obj = instance.object
        matrix = np.array(instance.matrix_world, dtype=np.float64)
        mesh = obj.to_mesh()
        try:
            part = _part(mesh, matrix, obj, textures)
        finally:
            obj.to_mesh_clear()
        if part is not None:
            geometry.parts.append(part)
            geometry.object_names.append(obj.original.name if obj.original else obj.name)
            geometry.material_names.extend(slot.material.name for slot in obj.material_slots if slot.material)
    geometry.object_names = list(dict.fromkeys(geometry.object_names))
    geometry.material_names = list(dict.fromkeys(geometry.material_names))
    return geometry


def _part(mesh, matrix: np.ndarray, obj, textures: _Textures) -> SurfacePart | None:
    mesh.calc_loop_triangles()
    n_tris = len(mesh.loop_triangles)
    if n_tris == 0:
        return None
    textures.budget.add_mesh(n_tris, len(mesh.vertices))
    co = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
    mesh.vertices.foreach_get("co", co)
    vertices = co.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
    faces = np.empty(n_tris * 3, dtype=np.int64)
    mesh.loop_triangles.foreach_get("vertices", faces)
    corners = np.empty(n_tris * 3, dtype=np.int64)
    mesh.loop_triangles.foreach_get("loops", corners)
    faces, corners = faces.reshape(-1, 3), corners.reshape(-1, 3)
    if np.linalg.det(matrix[:3, :3]) < 0:  # mirrored: keep normals pointing outward
        faces, corners = faces[:, ::-1], corners[:, ::-1]
    return SurfacePart(vertices=vertices, faces=faces, **_colour(mesh, corners, obj, textures))


def _colour(mesh, corners: np.ndarray, obj, textures: _Textures) -> dict:
    """SurfacePart colour arguments: colour attribute > base-colour image > material colours."""
    attribute = mesh.color_attributes.active_color
    if attribute is not None and attribute.domain in ("CORNER", "POINT"):
        values = np.empty(len(attribute.data) * 4, dtype=np.float32)
        attribute.data.foreach_get("color_srgb", values)
        values = values.reshape(-1, 4)
        if attribute.domain == "POINT":
            point_of_corner = np.empty(len(mesh.loops), dtype=np.int64)
            mesh.loops.foreach_get("vertex_index", point_of_corner)
            values = values[point_of_corner]
        return {"corner_colors": values[corners]}
    materials = [slot.material for slot in obj.material_slots]
    image = _single_base_image(materials)
    texture = textures.get(image) if image is not None and mesh.uv_layers.active is not None else None
    if texture is not None:
        uv = np.empty(len(mesh.loops) * 2, dtype=np.float64)
        mesh.uv_layers.active.data.foreach_get("uv", uv)
        return {"corner_uvs": uv.reshape(-1, 2)[corners], "texture": texture}
    if any(m is not None for m in materials):
        palette = np.array([_base_colour(m) for m in materials])
        index = np.empty(len(mesh.loop_triangles), dtype=np.int64)
        mesh.loop_triangles.foreach_get("material_index", index)
        per_face = palette[np.clip(index, 0, len(palette) - 1)]
        return {"corner_colors": np.repeat(per_face[:, None, :], 3, axis=1)}
    return {}


class _Textures:
    """Base-colour images as (H, W, 3) uint8, each read once (instances share them) and
    within the budget of one file; None for one that is not read."""

    def __init__(self) -> None:
        self.budget, self.read = FileBudget(), {}

    def get(self, image) -> np.ndarray | None:
        if image not in self.read:
            self.read[image] = self._read(image)
        return self.read[image]

    def _read(self, image) -> np.ndarray | None:
        # One not loaded yet (a file just imported) is read from a copy: a large image is then
        # decoded once, and scaled there, and the scene's own image (rendered next) stays as it
        # is. A loaded one may hold paint a copy would lose: it is read as it is, if not too large.
        copy = None if image.has_data else image.copy()
        try:
            source = image if copy is None else copy
            width, height = source.size
            if width * height == 0:  # its file is missing: the material colours stand in
                return None
            size = self.budget.texture_size(width, height)
            if size != (width, height):
                log.warning("image %r: a %s", image.name, self.budget.texture_note(width, height, size))
                if size is None:
                    return None
                source = copy = image.copy() if copy is None else copy
                copy.scale(*size)
            return _pixels(source)
        finally:
            if copy is not None:
                bpy.data.images.remove(copy)


def _pixels(image) -> np.ndarray:
    """An image's RGB as uint8, converted in place in the one float copy bpy gives."""
    width, height = image.size
    pixels = np.empty(width * height * image.channels, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    np.clip(pixels, 0, 1, out=pixels)
    pixels *= 255
    np.rint(pixels, out=pixels)
    # Blender stores rows bottom-up; the sampler reads them top-down like image files.
    return pixels.reshape(height, width, image.channels)[::-1, :, :3].astype(np.uint8)


def _principled(material):
    if material is None or material.node_tree is None:
        return None
    return next((n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)


def _single_base_image(materials):
    """The image feeding Base Color, when every material of the object uses the same one."""
    images = set()
    for material in materials:
        node = _principled(material)
        links = node.inputs["Base Color"].links if node is not None else ()
        source = links[0].from_node if links else None
        if source is None or source.type != "TEX_IMAGE" or source.image is None:
            return None
        images.add(source.image)
    return images.pop() if len(images) == 1 else None


def _base_colour(material) -> np.ndarray:
    """A material's base colour as stored: the numbers its glTF or MTL file holds (Blender's
    importers keep them unchanged), which trimesh reads from the file too, so an asset gives
    the same points in Blender as from its file. Not turned to sRGB: that made Blender's
    points of the same OBJ 0.16 brighter on average than the ones the model was trained and
    evaluated on."""
    if material is None:
        return np.full(3, DEFAULT_GREY)
    node = _principled(material)
    return np.array(node.inputs["Base Color"].default_value[:3] if node is not None else material.diffuse_color[:3])
