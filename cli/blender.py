"""`ulip2 blender build-extension | tag`: build the Blender extension's zip, and auto-tag
the assets of a .blend file headless with the extension's own labelling
(blender_addon/headless/tag_file.py, in a child process with bpy)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from cli import print_json
from core.errors import Ulip2Error

EPILOG = """\
examples:
  ulip2 blender tag props.blend --out props-tagged.blend      5 LVIS tags and a caption per marked asset
  ulip2 blender tag room.blend --out room-tagged.blend --all-objects --vocabulary modelnet40 --k 3

Objects marked as assets get asset tags (never twice; tags already there stay) and a
description, which Blender's Asset Browser shows and searches; with --all-objects any other
object gets the custom properties ulip2_tags and ulip2_caption, as Auto-tag does in the
extension. Assets hidden or kept outside every scene are tagged too. IN.blend is never
written: OUT.blend is written whole, or not at all. Prints JSON: the tags and caption of
each object. Needs bpy in this environment: pip install 'ulip2[blender]'.
Exit code 0 when OUT.blend is written; 2, with one line saying why, when it is not."""


def cmd_tag(args) -> int:
    from core.blender_jobs import TagJob, job_line, read_answer
    from core.bundle import bundle_path

    source, out = args.blend.expanduser().resolve(), args.out.expanduser().resolve()
    if source.suffix.lower() != ".blend" or not source.is_file():
        raise Ulip2Error(f"{args.blend}: not a .blend file; give the Blender file to tag")
    if out.suffix.lower() != ".blend":
        raise Ulip2Error(f"{args.out}: --out must name a .blend file (for example {source.stem}-tagged.blend)")
    if out == source:
        raise Ulip2Error(f"{args.out}: --out must name another file: IN.blend is never written")
    if args.k < 1:
        raise Ulip2Error(f"--k {args.k}: give at least 1 tag per object")
    if not out.parent.is_dir():
        raise Ulip2Error(f"{out.parent}: no such folder for --out; create it first")
    job = TagJob(str(source), str(out), str(bundle_path(args.bundle).resolve()), args.device, args.vocabulary, args.k,
                 args.all_objects, os.getpid())
    child = subprocess.run([sys.executable, "-m", "blender_addon.headless.tag_file", job_line(job)],
                           stdout=subprocess.PIPE, text=True)
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        raise Ulip2Error(f"{source}: Blender stopped while tagging it (exit code {child.returncode}; its messages are "
                         f"above); {out.name} was not written")
    answer = read_answer(job, lines[-1])
    if not answer.ok:
        raise Ulip2Error(answer.reason)
    print_json({"in": str(source), "out": str(out), "labelled": answer.labelled, "skipped": answer.skipped})
    return 0


def cmd_build_extension(args) -> int:
    from blender_addon.build import build_extension
    zips = build_extension(args.out, platforms=args.platform, runtime_wheels=not args.no_runtime_wheels,
                           wheels_from=args.wheels_from)
    print_json({"extension": str(zips[0]), "extensions": [{"path": str(z), "bytes": z.stat().st_size} for z in zips]})
    return 0


def register(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    blender = sub.add_parser("blender", help="the ulip2 Blender extension")
    bsub = blender.add_subparsers(dest="blender_command", metavar="ACTION", required=True)
    p = bsub.add_parser(
        "build-extension", formatter_class=fmt, help="build the installable extension zip with Blender's own builder",
        epilog="The zip carries core's numpy-only modules as a wheel, and onnxruntime and tokenizers (with what they\n"
               "need, not numpy) for each --platform, downloaded from the package registry at the versions\n"
               "installed here. One zip per platform. Offline: --wheels-from DIR, or --no-runtime-wheels.")
    p.add_argument("--out", type=Path, required=True, help="folder for the zip")
    p.add_argument("--platform", action="append", metavar="PLATFORM",
                   help="Blender platform to carry runtime wheels for, repeatable: linux-x64, linux-arm64, "
                        "windows-x64, windows-arm64, macos-arm64, macos-x64 (default: this machine's)")
    p.add_argument("--wheels-from", type=Path, metavar="DIR",
                   help="take the runtime wheels from this folder instead of the package registry")
    p.add_argument("--no-runtime-wheels", action="store_true",
                   help="carry no onnxruntime/tokenizers, for a Blender whose Python already has them "
                        "(one zip for every platform)")
    p.set_defaults(func=cmd_build_extension)

    p = bsub.add_parser(
        "tag", formatter_class=fmt, epilog=EPILOG,
        help="auto-tag the assets of a .blend file headless, into a new .blend",
        description="Auto-tag the objects marked as assets in IN.blend (every object with --all-objects) with "
                    "zero-shot tags and a caption, and save the result as OUT.blend.")
    p.add_argument("blend", type=Path, metavar="IN.blend", help="the file to tag (read, never written)")
    p.add_argument("--out", type=Path, required=True, metavar="OUT.blend", help="the tagged copy to write")
    p.add_argument("--all-objects", action="store_true",
                   help="tag every object of the file, not only those marked as assets")
    p.add_argument("--bundle", type=Path, default=Path("default"),
                   help="model bundle folder (default: $ULIP2_BUNDLE, else the bundle shipped with ulip2)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where onnxruntime runs (default: auto)")
    p.add_argument("--vocabulary", default="lvis",
                   help="labels to choose from: lvis (default), modelnet40, shapenet55, or a text file, one label a line")
    p.add_argument("--k", type=int, default=5, help="tags per object (default 5)")
    p.set_defaults(func=cmd_tag)
