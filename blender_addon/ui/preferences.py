"""Extension preferences: the model bundle, index database (or the studio's library server
and how its paths map here), device and vocabulary the panels use; where triplets go and
which ulip2 environment captions them."""

from pathlib import Path

import bpy

#: The extension's package (Blender's key for its preferences and user folder): this one's parent.
ADDON = __package__.rpartition(".")[0]

CAPTIONERS = [
    ("blip2", "BLIP-2", "Salesforce/blip2-opt-6.7b by default, as ULIP-2 (needs its weights)"),
    ("blip", "BLIP", "smaller BLIP captioning model (needs its weights)"),
    ("metadata", "Metadata (not a vision model)", "sentences from names, measured colours and size; offline"),
]
# The names core.runtime.choose_providers takes.
DEVICES = [
    ("auto", "Auto", "CUDA when onnxruntime-gpu sees a GPU, else the CPU"),
    ("cpu", "CPU", "onnxruntime's CPU provider"),
    ("cuda", "CUDA", "onnxruntime's CUDA provider (needs onnxruntime-gpu and an NVIDIA GPU)"),
]
# The bundle the extension zip carries (blender_addon.build.BUNDLE_DIR): ulip2's default
# with its text tower, used while the preferences name none.
CARRIED_BUNDLE = Path(__file__).parent.parent / "bundle"  # beside the extension's __init__.py
# The shipped vocabularies of core.spaces.vocabularies, or a file of the user's.
VOCABULARIES = [
    ("lvis", "LVIS", "Objaverse-LVIS: 1,156 categories"),
    ("modelnet40", "ModelNet40", "40 categories of furniture, vehicles and objects"),
    ("shapenet55", "ShapeNet", "ShapeNet's 55 categories"),
    ("FILE", "My file", "a text file of labels, one per line"),
]


class ULIP2_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON

    bundle: bpy.props.StringProperty(
        name="Model bundle", subtype="DIR_PATH",
        description="Folder of a ulip2 model bundle with its text tower (ulip2 models add-text BUNDLE --out DIR); "
                    "empty: the default bundle this extension carries")
    library: bpy.props.StringProperty(
        name="Index database", subtype="FILE_PATH",
        description="The library file made by 'ulip2 index FOLDER --db FILE' (SQLite)")
    server: bpy.props.StringProperty(
        name="Library server",
        description="Address of the studio's library server (ulip2 serve prints it), e.g. http://assets-host:8765; "
                    "used instead of the index database, and then the search needs no text tower here")
    path_map: bpy.props.StringProperty(
        name="Path mapping",
        description="How the server's asset paths reach this machine: SERVER_PREFIX=LOCAL_PREFIX, several "
                    "separated by ';', e.g. /mnt/assets=S:\\ (empty: the same paths)")
    device: bpy.props.EnumProperty(name="Device", items=DEVICES, default="auto")
    vocabulary: bpy.props.EnumProperty(name="Vocabulary", items=VOCABULARIES, default="lvis",
                                       description="Labels that auto-tag chooses from")
    vocabulary_file: bpy.props.StringProperty(name="Vocabulary file", subtype="FILE_PATH",
                                              description="Text file of labels, one per line")
    tags_per_object: bpy.props.IntProperty(name="Tags per object", default=5, min=1, max=50)
    store: bpy.props.StringProperty(name="Triplet store", subtype="DIR_PATH",
                                    description="Folder of the triplet store (created if new)")
    ulip2_python: bpy.props.StringProperty(
        name="ulip2 Python", subtype="FILE_PATH",
        description="Python of the ulip2 environment (with torch) that writes captions; empty: caption later "
                    "with 'ulip2 triplets caption STORE'")
    captioner: bpy.props.EnumProperty(name="Captioner", items=CAPTIONERS, default="blip2")

    def draw(self, context):
        layout = self.layout
        column = layout.column(heading="Models")
        for name in ("bundle", "device", "library"):
            column.prop(self, name)
        column = layout.column(heading="Studio library")
        for name in ("server", "path_map"):
            column.prop(self, name)
        column = layout.column(heading="Tags")
        column.prop(self, "vocabulary")
        if self.vocabulary == "FILE":
            column.prop(self, "vocabulary_file")
        column.prop(self, "tags_per_object")
        column = layout.column(heading="Triplets")
        for name in ("store", "ulip2_python", "captioner"):
            column.prop(self, name)


def get(context):
    return context.preferences.addons[ADDON].preferences


def bundle_folder(prefs) -> str:
    """The bundle the panels use: the preferences' folder, else the carried one ("" when
    this copy of the extension carries none)."""
    if prefs.bundle:
        return bpy.path.abspath(prefs.bundle)
    return str(CARRIED_BUNDLE) if (CARRIED_BUNDLE / "bundle.json").is_file() else ""


def vocabulary_source(prefs) -> str:
    """What core.spaces.vocabularies.load_vocabulary takes: a shipped name or a file path."""
    return bpy.path.abspath(prefs.vocabulary_file) if prefs.vocabulary == "FILE" else prefs.vocabulary


classes = (ULIP2_AP_preferences,)
