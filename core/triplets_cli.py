"""`ulip2 triplets build|caption|info` and `ulip2 blender build-extension`.

Rendering and sampling run in headless bpy worker processes (`python -m
blender_addon.worker`), started by module name so core never imports bpy, and one per
slot so a file that crashes Blender costs one worker, not the batch. Captioning runs here,
in the ulip2 environment, after the views exist.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from core.captioners import CAPTIONERS, DEFAULT_CAPTIONER, DEFAULT_K
from core.errors import Ulip2Error
from core.triplets import ASSET_EXTENSIONS, CAPTIONED, DONE, TripletStore, key_for_file

# Lines of a crashed worker's log quoted in its file's failure reason.
LOG_TAIL_LINES = 3


# -- build ------------------------------------------------------------------------------

def asset_files(paths: list[Path]) -> list[Path]:
    """Files given, and asset files found under folders given, in a stable order."""
    found = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in ASSET_EXTENSIONS))
        elif path.is_file():
            found.append(path)
        else:
            raise Ulip2Error(f"{path}: no such file or folder")
    return list(dict.fromkeys(p.resolve() for p in found))


class Worker:
    """One `python -m blender_addon.worker` process; restarted after it dies."""

    def __init__(self, log: Path):
        self.log, self.process = log, None

    def run(self, job: dict, timeout: float) -> dict:
        if self.process is None or self.process.poll() is not None:
            with open(self.log, "ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", "blender_addon.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=log, text=True, bufsize=1)
        self.log_start = self.log.stat().st_size  # this file's output starts here
        killed = threading.Event()
        process = self.process

        def kill() -> None:
            killed.set()
            process.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            self.process.stdin.write(json.dumps(job) + "\n")
            answer = self.process.stdout.readline()
        except BrokenPipeError:
            answer = ""
        finally:
            timer.cancel()
        if answer:
            return json.loads(answer)
        code = self.process.wait()
        if killed.is_set():
            reason = f"timed out after {timeout:.0f} s (the worker was killed)"
        else:
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            reason = f"Blender crashed on this file ({how}); last output: {self._log_tail()}"
        return {"key": job["key"], "ok": False, "reason": reason}

    def _log_tail(self) -> str:
        with open(self.log, "rb") as log:
            log.seek(self.log_start)
            text = log.read().decode(errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(lines[-LOG_TAIL_LINES:])[-400:]

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def render_batch(store: TripletStore, jobs: list[dict], *, workers: int, timeout: float, progress) -> None:
    """Run jobs on `workers` worker processes; failures are logged in the store as they come."""
    pending: queue.Queue = queue.Queue()
    for job in jobs:
        pending.put(job)
    logs = store.root / "logs"
    logs.mkdir(exist_ok=True)

    def slot(index: int) -> None:
        worker = Worker(logs / f"worker-{index}.log")
        try:
            while True:
                try:
                    job = pending.get_nowait()
                except queue.Empty:
                    return
                answer = worker.run(job, timeout)
                if not answer["ok"]:
                    store.fail(job["key"], job["path"], answer["reason"])
                progress.update(1)
        finally:
            worker.close()

    threads = [threading.Thread(target=slot, args=(i,), daemon=True) for i in range(max(1, workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def cmd_build(args) -> int:
    from core.cli import _print_json, _progress

    files = asset_files(args.paths)
    captioning = _captioning(args) if not args.no_caption else None  # fails here, before any work
    store = TripletStore(args.store, create=not (args.store / "store.json").is_file())
    state = store.state()
    settings = {"count": args.views, "elevation_deg": args.elevation, "resolution": args.resolution,
                "engine": args.render_engine, "samples": args.samples}
    jobs, skipped, queued = [], 0, set()
    for path in _progress(files, desc="hashing", unit="file", disable=len(files) < 100):
        key = key_for_file(path)
        if state.get(key, {}).get("event") in (DONE, CAPTIONED) or key in queued:  # stored, or a duplicate file
            skipped += 1
            continue
        queued.add(key)
        jobs.append({"path": str(path), "key": key, "store": str(store.root), "settings": settings})
    with _progress(total=len(jobs), desc="rendering", unit="object") as bar:
        render_batch(store, jobs, workers=args.workers, timeout=args.timeout, progress=bar)
    if captioning is not None:
        caption_store(store, *captioning, k=args.k)
    info = store.info()
    keys = {job["key"] for job in jobs}
    failed = [f for f in info["failures"] if f["key"] in keys]
    _print_json({"store": info["store"], "files": len(files), "skipped_done": skipped,
                 "written": len(jobs) - len(failed), "failed": failed,
                 "records": info["records"], "captioned": info["captioned"]})
    return 1 if failed else 0


# -- caption ----------------------------------------------------------------------------

def _captioning(args):
    from core.captioners import load_captioner
    from core.spaces import load_space

    return load_captioner(args.captioner, args.captioner_model, device=args.device), load_space(args.space, args.device)


def caption_store(store: TripletStore, captioner, space, *, k: int, recaption: bool = False) -> int:
    """Caption the store's uncaptioned records (all of them with recaption); returns how many."""
    from core.captioners import caption_views
    from core.cli import _progress

    records = list(store.records(captioned=None if recaption else False))
    for record in _progress(records, desc=f"captioning ({captioner.name})", unit="object"):
        block = caption_views(captioner, space, record.views(), k=k, facts=record.meta.get("facts"))
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


# -- blender build-extension ------------------------------------------------------------

def cmd_build_extension(args) -> int:
    from core.blender_extension import build_extension
    from core.cli import _print_json

    zips = build_extension(args.out, platforms=args.platform, runtime_wheels=not args.no_runtime_wheels,
                           wheels_from=args.wheels_from)
    _print_json({"extension": str(zips[0]), "extensions": [{"path": str(z), "bytes": z.stat().st_size} for z in zips]})
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
                               "crashes Blender is recorded with its reason and the batch goes on (exit code 1).")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help=f"asset files or folders (searched for {', '.join(ASSET_EXTENSIONS)})")
    p.add_argument("--store", type=Path, required=True, help="triplet store folder (created if new)")
    p.add_argument("--views", type=int, default=12, help="views per object on a ring (default 12)")
    p.add_argument("--elevation", type=float, default=30.0, help="camera elevation in degrees (default 30)")
    p.add_argument("--resolution", type=int, default=224, help="view size in pixels (default 224)")
    p.add_argument("--render-engine", choices=("CYCLES", "BLENDER_WORKBENCH"), default="CYCLES",
                   help="Cycles on CPU (default) or Workbench (needs EGL: libegl1 libegl-mesa0 libgl1-mesa-dri)")
    p.add_argument("--samples", type=int, default=8, help="Cycles samples per pixel, denoised (default 8)")
    p.add_argument("--workers", type=int, default=1, help="parallel Blender workers (default 1)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per file before its worker is killed")
    p.add_argument("--no-caption", action="store_true", help="render and sample only; caption later")
    _caption_args(p)
    p.set_defaults(func=cmd_build)

    p = tsub.add_parser("caption", help="caption a store's uncaptioned records (K candidates, ranked, top-1 per view)")
    p.add_argument("store", type=Path, metavar="STORE")
    p.add_argument("--recaption", action="store_true", help="caption every record again")
    _caption_args(p)
    p.set_defaults(func=cmd_caption)

    p = tsub.add_parser("info", help="counts of a triplet store: records, views, captioned, failed with reasons")
    p.add_argument("store", type=Path, metavar="STORE")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

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
