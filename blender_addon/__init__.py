"""ulip2: a Blender 4.2+ extension (see blender_manifest.toml).

In the 3D viewport sidebar ("ulip2" tab): "Auto-tag selected" and "Caption selected" label
objects with the model bundle's 3D encoder and text tower (onnxruntime only: no torch in
Blender), "Search library" finds assets of an index database by text and appends or links
them at the 3D cursor, and "Generate triplets" renders views and samples points into a
triplet store (captions are written by the ulip2 environment). The triplet modules also
run headless in blender_addon.headless.worker.
"""


# The Blender modules are imported when Blender registers the extension, not with the
# package: the desktop app reads blender_addon.scene.importers, and the headless worker its own
# modules, without loading the panels.


def _classes() -> tuple:
    from .ui import operators, panel, preferences, properties

    return (*preferences.classes, *properties.classes, *operators.classes, *panel.classes)


def register():
    import bpy

    from .ui import properties
    from .ui.user_files import keep_caches_in_user_folder

    for cls in _classes():
        bpy.utils.register_class(cls)
    properties.register()
    keep_caches_in_user_folder()


def unregister():
    import bpy

    from .ui import properties
    from .scene.inference import forget_models
    from .ui.library_search import clear_previews

    properties.unregister()
    for cls in reversed(_classes()):
        bpy.utils.unregister_class(cls)
    clear_previews()
    forget_models()
