"""Library indexing throughput: assets per second indexing a folder of mixed generated
meshes (glb, ply, obj, stl; boxes, spheres, cylinders, cones, tori of 80 to 5k faces) with
a bundle of the shipped default's size, pointbert-mini (random weights: speed does not
depend on them).

    python bench/index.py [--assets 200] [--workers N] [--config pointbert-mini]

Baseline in the same run: the same folder loaded and embedded one file at a time in this
process (PointEncoder.embed_files, what `ulip2 embed` does), against `ulip2 index`'s path
(loader processes, batched encoding, SQLite commits, thumbnails). Also times a re-index of
the unchanged folder. Last line: JSON with index_assets_per_s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trimesh  # noqa: E402

from core.export import export_bundle  # noqa: E402
from core.library.indexer import index_paths, walk  # noqa: E402
from core.library.store import Library  # noqa: E402
from core.runtime import PointEncoder  # noqa: E402


def make_folder(folder: Path, count: int) -> None:
    makers = [lambda i: trimesh.creation.box(extents=(1 + i % 3, 1, 0.5)),
              lambda i: trimesh.creation.icosphere(subdivisions=1 + i % 4),
              lambda i: trimesh.creation.cylinder(radius=0.3, height=1 + i % 4, sections=8 + 8 * (i % 8)),
              lambda i: trimesh.creation.cone(radius=0.5, height=1 + i % 3, sections=16 + i % 32),
              lambda i: trimesh.creation.torus(major_radius=1, minor_radius=0.2 + 0.05 * (i % 4))]
    formats = ["glb", "ply", "obj", "stl"]
    for i in range(count):
        mesh = makers[i % len(makers)](i)
        mesh.visual.face_colors = [(37 * i) % 256, (91 * i) % 256, 120, 255]
        sub = folder / f"group_{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        mesh.export(sub / f"asset_{i:04d}.{formats[(i // len(makers)) % len(formats)]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", type=int, default=200)
    parser.add_argument("--workers", type=int, default=None, help="loader processes (default: CPU count)")
    parser.add_argument("--config", default="pointbert-mini", help="encoder config (default: the shipped default's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ulip2-bench-index-") as tmp:
        tmp = Path(tmp)
        make_folder(tmp / "assets", args.assets)
        bundle = export_bundle(tmp / "bundle", config=args.config, space="minilm")
        encoder = PointEncoder(bundle, device="cpu")
        files = walk([tmp / "assets"])

        t = time.perf_counter()
        for _ in encoder.embed_files(files):
            pass
        baseline = len(files) / (time.perf_counter() - t)

        with Library(tmp / "lib.sqlite") as library:
            report = index_paths([tmp / "assets"], library, encoder, workers=args.workers, progress=False)
            rate = report.added / report.seconds
            again = index_paths([tmp / "assets"], library, encoder, workers=args.workers, progress=False)
    print(f"assets {len(files)}, cpus {os.cpu_count()}, bundle {args.config} ({bundle.num_points} points)")
    print(f"one at a time (embed_files): {baseline:.1f} assets/s")
    print(f"ulip2 index:                 {rate:.1f} assets/s ({rate / baseline:.2f}x), {len(report.failed)} failed")
    print(f"re-index, nothing changed:   {again.seconds:.2f} s for {again.unchanged} assets")
    print(json.dumps({"index_assets_per_s": round(rate, 1), "baseline_assets_per_s": round(baseline, 1),
                      "ratio": round(rate / baseline, 2), "assets": len(files), "failed": len(report.failed),
                      "reindex_unchanged_s": again.seconds, "config": args.config}))


if __name__ == "__main__":
    main()
