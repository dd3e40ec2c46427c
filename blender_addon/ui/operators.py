"""Operators: thin, they read their properties, call one function, and report."""

import subprocess
from pathlib import Path

import bpy

from core.errors import AssetError, Ulip2Error
from core.triplets import TripletStore

from ..scene.append import place_asset
from ..scene.inference import models_for
from ..scene.labels import Outcome, label_objects
from .library_search import search_library, search_server
from .preferences import bundle_folder, get, vocabulary_source
from .progress import StepOperator
from ..scene.render import ViewSettings
from ..scene.triplets import write_triplet
from .user_files import child_environment


class ULIP2_OT_generate_triplets(bpy.types.Operator):
    """Render views and sample points of the selected objects (or the active collection) into the triplet store"""

    bl_idname = "ulip2.generate_triplets"
    bl_label = "Generate triplets"
    bl_options = {"REGISTER"}

    target: bpy.props.EnumProperty(name="Objects", items=[
        ("SELECTED", "Selected", "each selected object"),
        ("COLLECTION", "Active collection", "each object of the active collection")], default="SELECTED")
    views: bpy.props.IntProperty(name="Views", default=12, min=1, max=72)
    elevation: bpy.props.FloatProperty(name="Elevation", default=30.0, min=-89.0, max=89.0)
    resolution: bpy.props.IntProperty(name="Resolution", default=224, min=16, max=2048)
    engine: bpy.props.EnumProperty(name="Engine", items=[
        ("CYCLES", "Cycles", "CPU, low samples"), ("BLENDER_WORKBENCH", "Workbench", "fast, flat shading")],
        default="CYCLES")
    samples: bpy.props.IntProperty(name="Samples", default=ViewSettings.samples, min=1, max=4096)
    store: bpy.props.StringProperty(name="Store", description="Triplet store folder (default: preferences)")
    redo: bpy.props.BoolProperty(name="Redo", description="Rewrite records that are already stored")

    def execute(self, context):
        prefs = get(context)
        folder = self.store or bpy.path.abspath(prefs.store)
        if not folder:
            self.report({"ERROR"}, "Set the triplet store folder in the ulip2 preferences")
            return {"CANCELLED"}
        objects = context.selected_objects if self.target == "SELECTED" else context.collection.all_objects
        settings = ViewSettings(count=self.views, elevation_deg=self.elevation, resolution=self.resolution,
                                engine=self.engine, samples=self.samples)
        try:
            store = TripletStore(folder, create=not (Path(folder) / "store.json").is_file())
        except Ulip2Error as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        written, skipped = [], []
        for obj in list(objects):
            try:
                key = write_triplet(store, [obj], settings=settings, source=None, name=obj.name, redo=self.redo)
            except AssetError:
                skipped.append(obj.name)  # lights, cameras, empties without instances
                continue
            (written if key else skipped).append(obj.name)
        message = f"{len(written)} triplets written to {store.root}, {len(skipped)} skipped"
        if written and prefs.ulip2_python:
            caption_later(prefs.ulip2_python, store.root, prefs.captioner)
            message += f"; captioning with {prefs.captioner} in the background (log: caption.log in the store)"
        self.report({"INFO"}, message)
        return {"FINISHED"}


def caption_later(python: str, store: Path, captioner: str) -> None:
    """Start the ulip2 environment's captioning over the store without blocking Blender."""
    with open(store / "caption.log", "ab") as log:  # the child keeps its own copy of the handle
        subprocess.Popen([bpy.path.abspath(python), "-m", "cli", "triplets", "caption", str(store),
                          "--captioner", captioner], stdout=log, stderr=subprocess.STDOUT, env=child_environment())


class _LabelSelected(StepOperator):
    """Shared by auto-tag and caption: the selected objects' labels, as steps (progress, Esc)."""

    tags = True

    def begin(self, context):
        prefs = get(context)
        self.models = models_for(bundle_folder(prefs), prefs.device)
        objects = list(context.selected_objects)
        if not objects:
            raise Ulip2Error("select the objects to label first")
        self.outcome = Outcome()
        return label_objects(self.models, objects, self.outcome,
                             vocabulary=vocabulary_source(prefs) if self.tags else None,
                             k=prefs.tags_per_object, caption=self.caption)

    def end(self, context, stopped):
        outcome = self.outcome
        done = len(outcome.labelled)
        message = f"{'stopped: ' if stopped else ''}{done} of {outcome.total} objects labelled"
        if outcome.skipped:
            message += f"; no surface to sample: {', '.join(outcome.skipped)}"
        if done == 1:
            tags, caption = next(iter(outcome.labelled.values()))
            message += f": {', '.join(tags)}" if tags else ""
            message += f' "{caption}"' if caption else ""
        self.report({"INFO"}, message + self.models.note)


class ULIP2_OT_auto_tag(_LabelSelected, bpy.types.Operator):
    """Zero-shot tags (vocabulary from the preferences) and a retrieval caption for each selected object: the asset's tags and description when it is marked as an asset, else custom properties"""

    bl_idname = "ulip2.auto_tag"
    bl_label = "Auto-tag selected"
    bl_options = {"REGISTER", "UNDO"}

    caption: bpy.props.BoolProperty(name="Caption", default=True,
                                    description="Also write the retrieval caption (asset description)")


class ULIP2_OT_caption(_LabelSelected, bpy.types.Operator):
    """The nearest sentence of the caption bank for each selected object, stored as its description (assets) or custom property"""

    bl_idname = "ulip2.caption"
    bl_label = "Caption selected"
    bl_options = {"REGISTER", "UNDO"}

    tags = False
    caption = True


class ULIP2_OT_search_library(bpy.types.Operator):
    """Search the index database, or the studio's library server, by text; results with their previews"""

    bl_idname = "ulip2.search_library"
    bl_label = "Search library"
    bl_options = {"REGISTER"}

    query: bpy.props.StringProperty(name="Search", description="Default: the panel's search field")

    def execute(self, context):
        prefs = get(context)
        state = context.window_manager.ulip2_search
        query = self.query or state.query
        note = f" from {prefs.server}"
        try:
            if prefs.server:  # the server embeds the query: no text tower needed here
                results = search_server(prefs.server, prefs.path_map, query, state.count)
            else:
                models = models_for(bundle_folder(prefs), prefs.device)
                results, note = search_library(models, prefs.library, query, state.count), models.note
        except Ulip2Error as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        state.query = query
        state.results.clear()
        for result in results:
            item = state.results.add()
            item.name, item.path, item.format = Path(result.path).name, result.path, result.format
            item.score, item.thumbnail = result.score, result.thumbnail
        state.active = 0
        self.report({"INFO"}, f"{len(results)} results for '{query}'" + note)
        return {"FINISHED"}


class ULIP2_OT_append_result(bpy.types.Operator):
    """Append (or link, for .blend files) a library asset into the scene at the 3D cursor"""

    bl_idname = "ulip2.append_result"
    bl_label = "Append"
    bl_options = {"REGISTER", "UNDO"}

    path: bpy.props.StringProperty(name="File", subtype="FILE_PATH",
                                   description="Default: the active search result")
    link: bpy.props.BoolProperty(name="Link", description="Link from the .blend file instead of copying")

    def execute(self, context):
        path = self.path
        if not path:
            state = context.window_manager.ulip2_search
            if not 0 <= state.active < len(state.results):
                self.report({"ERROR"}, "search the library and pick a result first")
                return {"CANCELLED"}
            path = state.results[state.active].path
        try:
            objects = place_asset(context, path, link=self.link)
        except Ulip2Error as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"{'linked' if self.link else 'appended'} {Path(path).name}: "
                              f"{', '.join(obj.name for obj in objects)} at the 3D cursor")
        return {"FINISHED"}


classes = (ULIP2_OT_generate_triplets, ULIP2_OT_auto_tag, ULIP2_OT_caption, ULIP2_OT_search_library,
           ULIP2_OT_append_result)
