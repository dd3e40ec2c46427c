"""Extension preferences: where triplets go and which ulip2 environment captions them."""

import bpy

CAPTIONERS = [
    ("blip2", "BLIP-2", "Salesforce/blip2-opt-6.7b by default, as ULIP-2 (needs its weights)"),
    ("blip", "BLIP", "smaller BLIP captioning model (needs its weights)"),
    ("metadata", "Metadata (not a vision model)", "sentences from names, measured colours and size; offline"),
]


class ULIP2_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    store: bpy.props.StringProperty(name="Triplet store", subtype="DIR_PATH",
                                    description="Folder of the triplet store (created if new)")
    ulip2_python: bpy.props.StringProperty(
        name="ulip2 Python", subtype="FILE_PATH",
        description="Python of the ulip2 environment (with torch) that writes captions; empty: caption later "
                    "with 'ulip2 triplets caption STORE'")
    captioner: bpy.props.EnumProperty(name="Captioner", items=CAPTIONERS, default="blip2")

    def draw(self, context):
        for name in ("store", "ulip2_python", "captioner"):
            self.layout.prop(self, name)


def get(context):
    return context.preferences.addons[__package__].preferences


classes = (ULIP2_AP_preferences,)
