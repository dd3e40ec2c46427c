"""Triplet generation speed on this CPU: seconds per view and objects per minute.

Each engine runs in its own bpy process (Workbench aborts the process where Mesa's EGL is
missing, so it must not take the benchmark down), through the same code as the headless
worker: import an example asset, render 12 views at 224x224, sample 10k points, write the
record. The first object warms Cycles up (kernels, shaders) and is not counted. Ends with
one JSON line of the figures.

    python bench/triplets.py [--objects 6] [--samples N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ENGINES = {"cycles": "CYCLES", "workbench": "BLENDER_WORKBENCH"}
VIEWS, RESOLUTION = 12, 224


def child(engine: str, objects: int, samples: int | None) -> None:
    """In a bpy process: per-object seconds for `objects` timed objects after one warm-up."""
    from blender_addon.scene.render import ViewSettings
    from blender_addon.scene.triplets import write_triplet
    from blender_addon.headless.worker import load_asset
    from core.triplets import TripletStore

    assets = sorted(EXAMPLES.glob("*.glb"))
    settings = ViewSettings(count=VIEWS, resolution=RESOLUTION, engine=engine)
    if samples is not None:
        settings.samples = samples
    with tempfile.TemporaryDirectory() as tmp:
        store = TripletStore(Path(tmp) / "store", create=True)
        times = []
        for i in range(objects + 1):
            path = assets[i % len(assets)]
            start = time.perf_counter()
            write_triplet(store, load_asset(path), settings=settings, source=str(path), name=path.stem,
                          key=f"{i:064x}")
            times.append(time.perf_counter() - start)
    print(json.dumps({"per_object": times[1:], "warm_up": times[0], "samples": settings.samples}))


def measure(engine: str, objects: int, samples: int | None) -> dict:
    extra = [] if samples is None else ["--samples", str(samples)]
    done = subprocess.run([sys.executable, __file__, "--child", engine, "--objects", str(objects), *extra],
                          capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit code {done.returncode}: {tail}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=6, help="timed objects per engine (after one warm-up)")
    parser.add_argument("--samples", type=int, help="Cycles samples per pixel (default: the product's, ViewSettings.samples)")
    parser.add_argument("--child", choices=ENGINES.values(), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.objects, args.samples)
        return

    figures = {"views": VIEWS, "resolution": RESOLUTION, "cpus": os.cpu_count()}
    for name, engine in ENGINES.items():
        result = measure(engine, args.objects, args.samples)
        if "error" in result:
            print(f"{name:10s} unavailable ({result['error']})")
            figures[f"s_per_object_{VIEWS}_views_{name}"] = None
            figures[f"{name}_error"] = result["error"]
            continue
        per_object = statistics.median(result["per_object"])
        print(f"{name:10s} {per_object:6.2f} s per object ({VIEWS} views + 10k points + write), "
              f"{per_object / VIEWS:.3f} s per view, {60 / per_object:5.1f} objects/min "
              f"(warm-up object {result['warm_up']:.2f} s)")
        figures[f"s_per_object_{VIEWS}_views_{name}"] = round(per_object, 3)
        figures[f"s_per_view_{name}"] = round(per_object / VIEWS, 4)
        figures[f"objects_per_minute_{name}"] = round(60 / per_object, 2)
        if engine == "CYCLES":
            figures["samples"] = result["samples"]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
