"""The "ulip2" tab in the 3D viewport sidebar: tags and captions, library search, triplets."""

import bpy

from ..scene.labels import read_caption, read_tags
from .library_search import preview_icon
from .operators import (ULIP2_OT_append_result, ULIP2_OT_auto_tag, ULIP2_OT_caption, ULIP2_OT_generate_triplets,
                        ULIP2_OT_search_library)
from .preferences import get


class _Sidebar:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "ulip2"


class ULIP2_PT_labels(_Sidebar, bpy.types.Panel):
    bl_label = "Tags and captions"

    def draw(self, context):
        prefs = get(context)
        layout = self.layout
        row = layout.row(align=True)
        row.prop(prefs, "vocabulary", text="")
        row.prop(prefs, "tags_per_object", text="Tags")
        if prefs.vocabulary == "FILE":
            layout.prop(prefs, "vocabulary_file", text="")
        row = layout.row(align=True)
        row.operator(ULIP2_OT_auto_tag.bl_idname, icon="BOOKMARKS")
        row.operator(ULIP2_OT_caption.bl_idname, icon="TEXT")
        obj = context.active_object
        if obj is None:
            return
        box = layout.box()
        box.label(text=obj.name + (" (asset)" if obj.asset_data else ""), icon="OBJECT_DATA")
        tags = read_tags(obj)
        box.label(text=", ".join(tags) if tags else "no tags yet", icon="BOOKMARKS")
        caption = read_caption(obj)
        if caption:
            column = box.column(align=True)
            for line in _wrap(caption, 40):
                column.label(text=line)


class ULIP2_UL_results(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        icon = preview_icon(item.thumbnail)
        if icon:
            row.label(text=item.name, icon_value=icon)
        else:
            row.label(text=item.name, icon="FILE_3D")
        row.label(text=f"{item.score:.2f}")


class ULIP2_PT_library(_Sidebar, bpy.types.Panel):
    bl_label = "Library search"

    def draw(self, context):
        prefs = get(context)
        state = context.window_manager.ulip2_search
        layout = self.layout
        if prefs.server:
            layout.label(text=f"Library server: {prefs.server}", icon="URL")
        elif not prefs.library:
            layout.label(text="Set the index database or the library server in the preferences", icon="INFO")
        row = layout.row(align=True)
        row.prop(state, "query", text="", icon="VIEWZOOM")
        row.operator(ULIP2_OT_search_library.bl_idname, text="", icon="VIEWZOOM")
        if not state.results:
            return
        layout.template_list("ULIP2_UL_results", "", state, "results", state, "active", rows=4)
        if 0 <= state.active < len(state.results):
            result = state.results[state.active]
            icon = preview_icon(result.thumbnail)
            if icon:
                layout.template_icon(icon_value=icon, scale=6.0)
            layout.label(text=result.path)
            row = layout.row(align=True)
            append = row.operator(ULIP2_OT_append_result.bl_idname, text="Append", icon="APPEND_BLEND")
            append.path, append.link = result.path, False
            if result.format == "blend":
                link = row.operator(ULIP2_OT_append_result.bl_idname, text="Link", icon="LINK_BLEND")
                link.path, link.link = result.path, True


class ULIP2_PT_triplets(_Sidebar, bpy.types.Panel):
    bl_label = "Triplets"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        prefs = get(context)
        layout = self.layout
        layout.prop(prefs, "store")
        layout.prop(prefs, "captioner")
        layout.operator(ULIP2_OT_generate_triplets.bl_idname, icon="RENDER_STILL")


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most about `width` characters (panels do not wrap labels)."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


classes = (ULIP2_PT_labels, ULIP2_UL_results, ULIP2_PT_library, ULIP2_PT_triplets)
