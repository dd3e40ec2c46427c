"""Session state of the panels: the library search's query and results, kept on the window
manager (not in the .blend: results belong to this session, not to the artist's file)."""

import bpy


class ULIP2_PG_result(bpy.types.PropertyGroup):
    # `name` (from PropertyGroup) is the file name shown in the list.
    path: bpy.props.StringProperty(name="Path", subtype="FILE_PATH")
    format: bpy.props.StringProperty(name="Format")
    score: bpy.props.FloatProperty(name="Score", description="Cosine similarity to the query")
    thumbnail: bpy.props.StringProperty(name="Thumbnail", subtype="FILE_PATH")


class ULIP2_PG_search(bpy.types.PropertyGroup):
    query: bpy.props.StringProperty(name="Search", description="What to look for, in words: 'a wooden chair'")
    count: bpy.props.IntProperty(name="Results", default=20, min=1, max=200)
    results: bpy.props.CollectionProperty(type=ULIP2_PG_result)
    active: bpy.props.IntProperty(name="Result", default=0)


classes = (ULIP2_PG_result, ULIP2_PG_search)


def register():
    bpy.types.WindowManager.ulip2_search = bpy.props.PointerProperty(type=ULIP2_PG_search)


def unregister():
    del bpy.types.WindowManager.ulip2_search
