"""Library indexing throughput: assets per second indexing a folder of mixed generated
meshes (glb, ply, obj, stl; boxes, spheres, cylinders, cones, tori of 80 to 5k faces) with
a bundle of the shipped default's size, pointbert-mini (random weights: speed does not
depend on them).

    python bench/index.py [--assets 200] [--rounds 3] [--workers N] [--config pointbert-mini]

Encode-only, in the same run: the same files loaded and embedded one at a time by the
simplest in-process loop (PointEncoder.embed_files, what `ulip2 embed` does) with the same
encoder, against `ulip2 index`'s path (index_paths: loading ahead of the encoder, batched
encoding, point-preview thumbnails, a SQLite commit a batch) into a fresh library. Each
round times both back to back, in turn first, so a shared machine slows both alike; the
figures are the medians of the rounds and index_vs_encode_only the median of the rounds'
ratios. Also times a re-index of the unchanged folder. Last line: JSON with
index_assets_per_s, encode_only_assets_per_s and index_vs_encode_only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trimesh  # noqa: E402

from core.export import export_bundle  # noqa: E402
from core.formats import walk  # noqa: E402
from core.library.indexer import index_paths  # noqa: E402
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
    parser.add_argument("--rounds", type=int, default=3, help="encode-only and index timed back to back (default 3)")
    parser.add_argument("--workers", type=int, default=None,
                        help="loader processes (default: what ulip2 index chooses for this machine)")
    parser.add_argument("--config", default="pointbert-mini", help="encoder config (default: the shipped default's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ulip2-bench-index-") as tmp:
        tmp = Path(tmp)
        make_folder(tmp / "assets", args.assets)
        bundle = export_bundle(tmp / "bundle", config=args.config, space="minilm")
        encoder = PointEncoder(bundle, device="cpu")
        files = walk([tmp / "assets"]).files

        def encode_only() -> float:
            started = time.perf_counter()
            for _ in encoder.embed_files(files):
                pass
            return len(files) / (time.perf_counter() - started)

        def index(round_: int):
            with Library(tmp / f"lib-{round_}.sqlite") as library:
                report = index_paths([tmp / "assets"], library, encoder, workers=args.workers)
                again = index_paths([tmp / "assets"], library, encoder, workers=args.workers)
            return report, again

        encode_only()  # one warm-up pass: the session's first runs and the OS file cache
        rounds = []
        for round_ in range(args.rounds):
            if round_ % 2 == 0:
                encoded = encode_only()
                report, again = index(round_)
            else:
                report, again = index(round_)
                encoded = encode_only()
            rate = report.added / report.seconds
            rounds.append((encoded, rate, report, again))
            print(f"round {round_ + 1}: encode-only {encoded:.1f} assets/s, ulip2 index {rate:.1f} assets/s "
                  f"({rate / encoded:.2f}x), {len(report.failed)} failed", flush=True)
    encoded = statistics.median(r[0] for r in rounds)
    rate = statistics.median(r[1] for r in rounds)
    ratio = statistics.median(r[1] / r[0] for r in rounds)
    report, again = rounds[-1][2], rounds[-1][3]
    print(f"assets {len(files)}, cpus {os.cpu_count()}, bundle {args.config} ({bundle.num_points} points), "
          f"median of {len(rounds)} rounds")
    print(f"encode-only (embed_files, one at a time): {encoded:.1f} assets/s")
    print(f"ulip2 index:                              {rate:.1f} assets/s ({ratio:.2f}x encode-only)")
    print(f"re-index, nothing changed:                {again.seconds:.2f} s for {again.unchanged} assets")
    print(json.dumps({"index_assets_per_s": round(rate, 1), "encode_only_assets_per_s": round(encoded, 1),
                      "index_vs_encode_only": round(ratio, 2), "assets": len(files), "failed": len(report.failed),
                      "reindex_unchanged_s": again.seconds, "config": args.config, "cpus": os.cpu_count(),
                      "rounds": [[round(e, 1), round(i, 1)] for e, i, _, _ in rounds]}))


if __name__ == "__main__":
    main()
