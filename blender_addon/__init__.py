"""ulip2 triplets: a Blender 4.2+ extension (see blender_manifest.toml).

In the 3D viewport sidebar ("ulip2" tab), "Generate triplets" renders views and samples
points of the selected objects (or the active collection) into a triplet store; captions
are written by the ulip2 environment. The same modules run headless in blender_addon.worker.
"""

from . import operators, panel, preferences

classes = (*preferences.classes, *operators.classes, *panel.classes)


def register():
    import bpy

    for cls in classes:
        bpy.utils.register_class(cls)


def unregister():
    import bpy

    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
