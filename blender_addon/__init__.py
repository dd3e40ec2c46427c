"""ulip2: a Blender 4.2+ extension (see blender_manifest.toml).

In the 3D viewport sidebar ("ulip2" tab): "Auto-tag selected" and "Caption selected" label
objects with the model bundle's 3D encoder and text tower (onnxruntime only: no torch in
Blender), "Search library" finds assets of an index database by text and appends or links
them at the 3D cursor, and "Generate triplets" renders views and samples points into a
triplet store (captions are written by the ulip2 environment). The triplet modules also
run headless in blender_addon.worker.
"""

from . import operators, panel, preferences, properties
from .inference import forget_models
from .library_search import clear_previews
from .user_files import keep_caches_in_user_folder

classes = (*preferences.classes, *properties.classes, *operators.classes, *panel.classes)


def register():
    import bpy

    for cls in classes:
        bpy.utils.register_class(cls)
    properties.register()
    keep_caches_in_user_folder()


def unregister():
    import bpy

    properties.unregister()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
    clear_previews()
    forget_models()
