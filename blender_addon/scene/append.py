"""Bring a library asset into the current scene at the 3D cursor.

.blend files: their objects marked as assets (all their objects when none is marked),
appended as local copies, or linked from the file and placed by a collection instance
(linked objects cannot be moved themselves). Other formats go through Blender's own
importer of that format; an import is always a local copy.
"""

from __future__ import annotations

import os

import bpy
from mathutils import Vector

from core.errors import AssetError
from core.references import check_references

from .importers import IMPORTERS, import_file


def place_asset(context, path: str, *, link: bool = False) -> list:
    """Append (or, for .blend, link) the asset at `path` into the active collection with
    its origin at the 3D cursor; returns the new top-level objects."""
    path = bpy.path.abspath(path)
    if not os.path.isfile(path):
        raise AssetError(path, "no such file (moved since it was indexed? run ulip2 index again)")
    extension = os.path.splitext(path)[1].lower()
    cursor = context.scene.cursor.location.copy()
    if extension == ".blend":
        return _link_blend(context, path, cursor) if link else _append_blend(context, path, cursor)
    if link:
        raise AssetError(path, "only .blend files can be linked; append it instead")
    if extension not in IMPORTERS:
        raise AssetError(path, f"Blender has no importer for {extension} files")
    return _import(context, path, cursor)


def _load_objects(path: str, link: bool) -> list:
    """The objects of a .blend: those marked as assets, else all of them."""
    for assets_only in (True, False):
        with bpy.data.libraries.load(path, link=link, assets_only=assets_only) as (source, target):
            target.objects = list(source.objects)
        objects = [obj for obj in target.objects if obj is not None]
        if objects:
            return objects
    raise AssetError(path, "no objects in this .blend file")


def _roots(objects) -> list:
    names = {obj.name for obj in objects}
    return [obj for obj in objects if obj.parent is None or obj.parent.name not in names]


def _origin(roots) -> Vector:
    # location, not matrix_world: roots have no parent, and objects fresh from a file keep a
    # stale world matrix until the next depsgraph update.
    return sum((obj.location for obj in roots), Vector()) / len(roots)


def _append_blend(context, path: str, cursor: Vector) -> list:
    objects = _load_objects(path, link=False)
    for obj in objects:
        context.collection.objects.link(obj)
    return _move_to(_roots(objects), cursor)


def _link_blend(context, path: str, cursor: Vector) -> list:
    objects = _load_objects(path, link=True)
    name = os.path.splitext(os.path.basename(path))[0]
    group = bpy.data.collections.new(name)  # local, holding the linked objects; not in the scene itself
    for obj in objects:
        group.objects.link(obj)
    group.instance_offset = _origin(_roots(objects))
    instance = bpy.data.objects.new(name, None)
    instance.instance_type = "COLLECTION"
    instance.instance_collection = group
    instance.location = cursor
    context.collection.objects.link(instance)
    return [instance]


def _import(context, path: str, cursor: Vector) -> list:
    check_references(path)  # the library's files are no one's to trust: nothing outside their folder
    before = set(bpy.data.objects)
    import_file(path)
    objects = [obj for obj in bpy.data.objects if obj not in before]
    if not objects:
        raise AssetError(path, "the importer brought in no objects")
    return _move_to(_roots(objects), cursor)


def _move_to(roots, cursor: Vector) -> list:
    offset = cursor - _origin(roots)
    for obj in roots:
        obj.location += offset
    bpy.context.view_layer.update()
    return roots
