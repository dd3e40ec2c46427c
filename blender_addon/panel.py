"""The "ulip2" tab in the 3D viewport sidebar."""

import bpy

from .operators import ULIP2_OT_generate_triplets
from .preferences import get


class ULIP2_PT_triplets(bpy.types.Panel):
    bl_label = "Triplets"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "ulip2"

    def draw(self, context):
        prefs = get(context)
        layout = self.layout
        layout.prop(prefs, "store")
        layout.prop(prefs, "captioner")
        layout.operator(ULIP2_OT_generate_triplets.bl_idname, icon="RENDER_STILL")


classes = (ULIP2_PT_triplets,)
