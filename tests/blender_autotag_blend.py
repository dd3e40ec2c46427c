"""Auto-tag the assets of a .blend file with the ulip2 extension, in a clean Blender.

    python tests/blender_autotag_blend.py EXTENSION.zip IN.blend OUT.blend --bundle DIR [--vocabulary lvis|FILE] [--k 5]

Runs with bpy as a module (or `blender -b --python-exit-code 1 --python THIS -- ARGS`).
Installs and enables the extension zip in Blender's user folder (BLENDER_USER_RESOURCES
keeps it away from the real one), opens IN.blend, selects every object marked as an asset,
runs "Auto-tag selected" and saves OUT.blend. Prints a JSON line: {object: [tags]}.
"""

import argparse
import json
import sys

import bpy


def main(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("extension")
    parser.add_argument("blend_in")
    parser.add_argument("blend_out")
    parser.add_argument("--bundle", required=True, help="model bundle with a text tower")
    parser.add_argument("--vocabulary", default="lvis", help="lvis, modelnet40, shapenet55 or a file of labels")
    parser.add_argument("--k", type=int, default=5, help="tags per asset")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    result = bpy.ops.extensions.package_install_files(filepath=args.extension, repo="user_default",
                                                      enable_on_install=True)
    if result != {"FINISHED"}:
        print(f"installing {args.extension} failed", file=sys.stderr)
        return 1
    prefs = bpy.context.preferences.addons["bl_ext.user_default.ulip2"].preferences
    prefs.bundle, prefs.device, prefs.tags_per_object = args.bundle, args.device, args.k
    if args.vocabulary in ("lvis", "modelnet40", "shapenet55"):
        prefs.vocabulary = args.vocabulary
    else:
        prefs.vocabulary, prefs.vocabulary_file = "FILE", args.vocabulary

    bpy.ops.wm.open_mainfile(filepath=args.blend_in)
    assets = [obj for obj in bpy.context.scene.objects if obj.asset_data is not None]
    for obj in bpy.context.scene.objects:
        obj.select_set(obj.asset_data is not None)
    if bpy.ops.ulip2.auto_tag() != {"FINISHED"}:
        return 1
    bpy.ops.wm.save_as_mainfile(filepath=args.blend_out)
    print(json.dumps({obj.name: [tag.name for tag in obj.asset_data.tags] for obj in assets}))
    return 0


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    sys.exit(main(argv))
