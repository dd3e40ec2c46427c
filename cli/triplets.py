"""`ulip2 triplets build|caption|info`: thin over core.triplets (build, caption, store).

The commands read their arguments, draw progress (core.progress.bar) and print what was
done; the work is the library's, which `ulip2 retrain` calls directly.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from cli import print_json
from core.captioners import CAPTIONERS, DEFAULT_CAPTIONER, DEFAULT_K
from core.errors import Ulip2Error
from core.formats import ASSET_EXTENSIONS, walk
from core.progress import bar


# -- build ------------------------------------------------------------------------------

def cmd_build(args) -> int:
    from core.blender_pool import blender_available
    from core.triplets import TripletStore
    from core.triplets.build import NO_SPACE, disk_full, render_files
    from core.triplets.caption import caption_store, load_captioning

    if not blender_available():
        raise Ulip2Error("triplets build renders in Blender: pip install 'ulip2[blender]'")
    found = walk(args.paths)
    files, skipped = found.files, found.skipped
    # Loaded here, before any work, so that a missing captioner fails first.
    captioning = None if args.no_caption else load_captioning(args.captioner, args.captioner_model, args.space,
                                                               args.device)
    store = TripletStore(args.store, create=not (args.store / "store.json").is_file())
    settings = {"count": args.views, "elevation_deg": args.elevation, "resolution": args.resolution,
                "engine": args.render_engine}
    if args.samples is not None:  # else the renderer's own default (blender_addon.scene.render.ViewSettings)
        settings["samples"] = args.samples
    try:
        with bar("rendering", "object") as on_progress:
            done = render_files(store, files, settings, engine=args.engine, workers=args.workers,
                                timeout=args.timeout, on_progress=on_progress)
        if captioning is not None:
            with bar(f"captioning ({captioning[0].name})", "object") as on_progress:
                caption_store(store, *captioning, k=args.k, on_progress=on_progress)
    except OSError as exc:
        if exc.errno not in NO_SPACE and not disk_full(store.root):  # numpy says a short write without errno
            raise
        print(f"error: {store.root}: the disk is full ({exc.strerror or os.strerror(errno.ENOSPC)}); free some "
              f"space and run the same build again: committed records are kept ({store.info()['records']} in "
              "the store) and not redone", file=sys.stderr)
        return 1
    failed = done["failed"]
    info = store.info()
    print_json({"store": info["store"], "files": len(files), "skipped": skipped,
                 "skipped_done": done["skipped_done"], "written": done["written"],
                 "failed": [f for f in info["failures"] if f["key"] in failed],
                 "records": info["records"], "captioned": info["captioned"]})
    return 1 if failed else 0


# -- caption ----------------------------------------------------------------------------

def cmd_caption(args) -> int:
    from core.triplets import TripletStore
    from core.triplets.caption import caption_store, load_captioning

    store = TripletStore(args.store)
    captioner, space = load_captioning(args.captioner, args.captioner_model, args.space, args.device)
    with bar(f"captioning ({captioner.name})", "object") as on_progress:
        count = caption_store(store, captioner, space, k=args.k, recaption=args.recaption, on_progress=on_progress)
    print_json({"store": str(store.root), "captioned_now": count, "captioner": captioner.name,
                 "vision_model": captioner.vision_model, "space": space.name})
    return 0


def cmd_info(args) -> int:
    from core.triplets import TripletStore
    info = TripletStore(args.store).info()
    if args.json:
        print_json(info)
        return 0
    print(f"store      {info['store']} ({info['format']} v{info['version']})")
    print(f"records    {info['records']} ({info['views']} views; {info['captioned']} captioned, "
          f"{info['uncaptioned']} waiting for captions)")
    print(f"failed     {info['failed']}")
    for failure in info["failures"]:
        print(f"  {failure['source']}: {failure['reason']}")
    return 0


# -- parser -----------------------------------------------------------------------------

def _caption_args(p) -> None:
    p.add_argument("--captioner", choices=CAPTIONERS, default=DEFAULT_CAPTIONER,
                   help="blip2 (default, Salesforce/blip2-opt-6.7b as ULIP-2), blip, or metadata "
                        "(offline; NOT a vision model: names, measured colours, size)")
    p.add_argument("--captioner-model", default=None, help="hub id or local folder for blip/blip2")
    p.add_argument("--space", default="minilm",
                   help="space that ranks the candidates (default minilm: text-only, so candidates are ranked by "
                        "agreement with each other; an openclip space ranks by image-text similarity, as ULIP-2)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help=f"candidates per view (default {DEFAULT_K}, as ULIP-2)")
    p.add_argument("--device", default="cpu", help="torch device for captioner and space (default cpu)")


def register(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    triplets = sub.add_parser("triplets", help="build, caption and inspect triplet stores (points, views, captions)")
    tsub = triplets.add_subparsers(dest="triplets_command", metavar="ACTION", required=True)

    p = tsub.add_parser("build", formatter_class=fmt, help="asset files -> triplets, in headless Blender workers",
                        epilog="Resumable: files whose content is already stored are skipped. A file that fails or\n"
                               "crashes Blender is recorded with its reason and the batch goes on (exit code 1).\n"
                               "A full disk stops the batch (exit code 1); the records committed stay.")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help=f"asset files or folders (searched for {', '.join(ASSET_EXTENSIONS)}; .off and .dae "
                        "render from the glTF of the mesh trimesh reads)")
    p.add_argument("--store", type=Path, required=True, help="triplet store folder (created if new)")
    p.add_argument("--views", type=int, default=12, help="views per object on a ring (default 12)")
    p.add_argument("--elevation", type=float, default=30.0, help="camera elevation in degrees (default 30)")
    p.add_argument("--resolution", type=int, default=224, help="view size in pixels (default 224)")
    p.add_argument("--render-engine", choices=("CYCLES", "BLENDER_WORKBENCH"), default="CYCLES",
                   help="Cycles on CPU (default) or Workbench (needs EGL: libegl1 libegl-mesa0 libgl1-mesa-dri)")
    p.add_argument("--samples", type=int,
                   help="Cycles samples per pixel, denoised with the albedo pass (default 1: clean at 224 px; "
                        "raise it for glossy or glass assets)")
    p.add_argument("--workers", type=int, default=1, help="parallel Blender workers (default 1; --engine local)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local worker processes (default), or Ray tasks on the cluster at $RAY_ADDRESS (a local "
                        "Ray without it); every node needs ulip2[blender] and must see the asset paths")
    p.add_argument("--timeout", type=float, default=600, help="seconds per file before its worker is killed")
    p.add_argument("--no-caption", action="store_true", help="render and sample only; caption later")
    _caption_args(p)
    p.set_defaults(func=cmd_build)

    p = tsub.add_parser("caption", help="caption a store's uncaptioned records (K candidates, ranked, top-1 per view)")
    p.add_argument("store", type=Path, metavar="STORE", help="the triplet store folder")
    p.add_argument("--recaption", action="store_true", help="caption every record again")
    _caption_args(p)
    p.set_defaults(func=cmd_caption)

    p = tsub.add_parser("info", help="counts of a triplet store: records, views, captioned, failed with reasons")
    p.add_argument("store", type=Path, metavar="STORE", help="the triplet store folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)
