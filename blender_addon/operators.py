"""Operators: thin, they read their properties, call one function, and report."""

import subprocess
from pathlib import Path

import bpy

from core.errors import AssetError, Ulip2Error
from core.triplets import TripletStore

from .preferences import get
from .render import ViewSettings
from .triplets import write_triplet


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
    samples: bpy.props.IntProperty(name="Samples", default=8, min=1, max=4096)
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
        subprocess.Popen([bpy.path.abspath(python), "-m", "core.cli", "triplets", "caption", str(store),
                          "--captioner", captioner], stdout=log, stderr=subprocess.STDOUT)


classes = (ULIP2_OT_generate_triplets,)
