"""`ulip2 triplets build|caption|info`.

Rendering and sampling run in headless bpy worker processes (core.blender_pool), one per
slot so a file that crashes Blender costs one worker, not the batch; with `--engine ray`
each work unit is a Ray task running that same worker on a farm's nodes. Either way this
process alone writes the store: workers render into a folder, and it commits the record.
Captioning runs here, in the ulip2 environment, after the views exist.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from core.blender_pool import Worker, blender_available, run_jobs
from core.captioners import CAPTIONERS, DEFAULT_CAPTIONER, DEFAULT_K
from core.errors import Ulip2Error
from core.formats import ASSET_EXTENSIONS, walk
from core.triplets import (CAPTIONED, DONE, RecordWriter, TripletStore, key_for_asset,
                           key_for_file)

# Ray: results in flight per cluster CPU (each holds a record's views and points in memory).
RAY_IN_FLIGHT_PER_CPU = 2
# With less room than this left on the store's disk after a job, its writes may have run out:
# a record at the default settings takes 0.7 MB in tmp/, and Blender writes a view that does
# not fit as an empty PNG while reporting it saved, so the job's answer alone cannot tell.
DISK_FULL_BELOW = 1 << 20
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


# -- build ------------------------------------------------------------------------------

def run_units(store: TripletStore, jobs: list[dict], *, engine: str, workers: int,
              timeout: float) -> Iterator[tuple[dict, dict, RecordWriter | None]]:
    """(job, answer, record folder) per job as they complete. A render job's views and
    points are in the record folder (in the store's tmp/), not yet committed."""
    if engine == "ray":
        yield from _run_ray(store, jobs, timeout)
        return

    def task(worker: Worker, job: dict):
        if job["action"] != "render":
            return worker.run(job, timeout), None
        record = RecordWriter(store, job["key"])
        return worker.run({**job, "out": str(record.path)}, timeout), record

    for job, (answer, record) in run_jobs(jobs, workers=workers, timeout=timeout, log_dir=store.root / "logs",
                                          task=task):
        yield job, answer, record


def ray_job(job: dict, timeout: float) -> dict:
    """One job in a fresh worker on a Ray node; a render job's files come back in the answer
    (the node may not see the store), as {name: bytes} under "files"."""
    with tempfile.TemporaryDirectory(prefix="ulip2-ray-") as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        worker = Worker(Path(tmp) / "worker.log")
        try:
            answer = worker.run({**job, "out": str(out)} if job["action"] == "render" else job, timeout)
        finally:
            worker.close()
        if answer["ok"] and job["action"] == "render":
            answer["files"] = {p.name: p.read_bytes() for p in out.iterdir()}
        return answer


def _run_ray(store: TripletStore, jobs: list[dict], timeout: float):
    try:
        import ray
    except ImportError:
        raise Ulip2Error("--engine ray needs the ray extra: pip install 'ulip2[ray]'") from None
    started = not ray.is_initialized()
    if started:
        # $RAY_ADDRESS names a running cluster; without it Ray starts a local one.
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False)
    try:
        # No retries: a file that kills its worker would only kill the next one too.
        remote = ray.remote(num_cpus=1, max_retries=0)(ray_job)
        limit = max(1, int(ray.cluster_resources().get("CPU", 1)) * RAY_IN_FLIGHT_PER_CPU)
        waiting = list(reversed(jobs))
        running: dict = {}
        while waiting or running:
            while waiting and len(running) < limit:
                job = waiting.pop()
                running[remote.remote(job, timeout)] = job
            (ref,), _ = ray.wait(list(running), num_returns=1)
            job = running.pop(ref)
            try:
                answer = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the node or its Ray worker died
                answer = {"ok": False, "reason": f"Ray task failed: {str(exc).strip().splitlines()[0][:300]}"}
            record = None
            if job["action"] == "render":
                record = RecordWriter(store, job["key"])
                for name, data in answer.pop("files", {}).items():
                    (record.path / name).write_bytes(data)
            yield job, answer, record
    finally:
        if started:
            ray.shutdown()


def plan_units(store: TripletStore, files: list[Path], *, engine: str, workers: int,
               timeout: float) -> tuple[list[dict], int, set[str]]:
    """Work units still to do: (units, how many are stored already, keys that failed here).

    A file is one unit, except a .blend with objects marked as assets: each of those is
    one, keyed by key_for_asset. Workers list the marked assets of .blend files first.
    """
    from core.cli import _progress

    state = store.state()
    stored = {key for key, event in state.items() if event.get("event") in (DONE, CAPTIONED)}
    keys = {path: key_for_file(path) for path in _progress(files, desc="hashing", unit="file",
                                                          disable=len(files) < 100)}
    # A .blend stored as one record had no marked assets: no need to open it again.
    to_list = [p for p in files if p.suffix.lower() == ".blend" and keys[p] not in stored]
    listed: dict[Path, list[str]] = {}
    failed = set()
    if to_list:
        jobs = [{"action": "assets", "path": str(p), "key": keys[p]} for p in to_list]
        for job, answer, _ in run_units(store, jobs, engine=engine, workers=workers, timeout=timeout):
            if answer["ok"]:
                listed[Path(job["path"])] = answer["assets"]
            else:
                _check_room(store.root)
                store.fail(job["key"], job["path"], answer["reason"])
                failed.add(job["key"])
    units, skipped, queued = [], 0, set()
    for path in files:
        if keys[path] in failed:
            continue
        names = listed.get(path) or [None]
        for name in names:
            key = keys[path] if name is None else key_for_asset(keys[path], name)
            if key in stored or key in queued:  # stored, or a duplicate file
                skipped += 1
                continue
            queued.add(key)
            units.append({"action": "render", "path": str(path), "object": name, "key": key})
    return units, skipped, failed


def render_files(store: TripletStore, files: list[Path], settings: dict, *, engine: str = "local", workers: int = 1,
                 timeout: float = 600) -> dict:
    """Points and views of each file not stored yet, committed as it completes (a kill keeps
    what is done; a rerun skips it). {"skipped_done", "written", "failed": keys failed now}."""
    from core.cli import _progress

    import numpy as np

    run = {"engine": engine, "workers": workers, "timeout": timeout}
    units, skipped, failed = plan_units(store, files, **run)
    for unit in units:
        unit["settings"] = settings
    with _progress(total=len(units), desc="rendering", unit="object") as bar:
        for job, answer, record in run_units(store, units, **run):
            try:
                _check_room(record.path)
                if answer["ok"]:
                    record.commit(np.load(record.path / "points.npy"), answer["meta"])
                else:
                    store.fail(job["key"], job["path"], answer["reason"])
                    failed.add(job["key"])
            finally:
                record.discard()
            bar.update(1)
    return {"skipped_done": skipped, "written": len(units) - len(failed & {u["key"] for u in units}),
            "failed": failed}


def _disk_full(folder: Path) -> bool:
    return shutil.disk_usage(folder).free < DISK_FULL_BELOW


def _check_room(folder: Path) -> None:
    """Raise ENOSPC when the disk holding `folder` is full: a job that failed, or wrote, there
    then ran out of room, and what it made is not the file's doing."""
    if _disk_full(folder):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))


def cmd_build(args) -> int:
    from core.cli import _print_json

    if not blender_available():
        raise Ulip2Error("triplets build renders in Blender: pip install 'ulip2[blender]'")
    found = walk(args.paths)
    files, skipped = found.files, found.skipped
    captioning = _captioning(args) if not args.no_caption else None  # fails here, before any work
    store = TripletStore(args.store, create=not (args.store / "store.json").is_file())
    settings = {"count": args.views, "elevation_deg": args.elevation, "resolution": args.resolution,
                "engine": args.render_engine}
    if args.samples is not None:  # else the renderer's own default (blender_addon.render.ViewSettings)
        settings["samples"] = args.samples
    try:
        done = render_files(store, files, settings, engine=args.engine, workers=args.workers, timeout=args.timeout)
        if captioning is not None:
            caption_store(store, *captioning, k=args.k)
    except OSError as exc:
        if exc.errno not in NO_SPACE and not _disk_full(store.root):  # numpy says a short write without errno
            raise
        print(f"error: {store.root}: the disk is full ({exc.strerror or os.strerror(errno.ENOSPC)}); free some "
              f"space and run the same build again: committed records are kept ({store.info()['records']} in "
              "the store) and not redone", file=sys.stderr)
        return 1
    failed = done["failed"]
    info = store.info()
    _print_json({"store": info["store"], "files": len(files), "skipped": skipped,
                 "skipped_done": done["skipped_done"], "written": done["written"],
                 "failed": [f for f in info["failures"] if f["key"] in failed],
                 "records": info["records"], "captioned": info["captioned"]})
    return 1 if failed else 0


# -- caption ----------------------------------------------------------------------------

def _captioning(args):
    from core.captioners import load_captioner
    from core.spaces import load_space

    return load_captioner(args.captioner, args.captioner_model, device=args.device), load_space(args.space, args.device)


def caption_store(store: TripletStore, captioner, space, *, k: int, recaption: bool = False,
                  library: dict[str, dict] | None = None) -> int:
    """Caption the store's uncaptioned records (all of them with recaption); returns how many.

    library: what a studio library knows of an asset, by record key: {"facts": {...}, "texts":
    [str]}. Its facts (a name, real dimensions in metres) replace what the file gave (its
    stem, extents in unknown units) for the captioner; its texts (names, tags) are kept
    beside the per-view captions.
    """
    from core.captioners import caption_views
    from core.cli import _progress

    library = library or {}
    records = list(store.records(captioned=None if recaption else False))
    for record in _progress(records, desc=f"captioning ({captioner.name})", unit="object"):
        known = library.get(record.key, {})
        facts = {**(record.meta.get("facts") or {}), **known.get("facts", {})}
        block = caption_views(captioner, space, record.views(), k=k, facts=facts)
        if known.get("texts"):
            block["texts"] = list(known["texts"])
        store.set_captions(record.key, block)
    return len(records)


def cmd_caption(args) -> int:
    from core.cli import _print_json

    store = TripletStore(args.store)
    captioner, space = _captioning(args)
    count = caption_store(store, captioner, space, k=args.k, recaption=args.recaption)
    _print_json({"store": str(store.root), "captioned_now": count, "captioner": captioner.name,
                 "vision_model": captioner.vision_model, "space": space.name})
    return 0


def cmd_info(args) -> int:
    from core.cli import _print_json

    info = TripletStore(args.store).info()
    if args.json:
        _print_json(info)
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
