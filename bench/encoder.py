"""Encoder latency on this CPU: torch eager vs onnxruntime, same weights, same input.

ulip2-pointbert (the ULIP-2 config, random weights) at 10k points, batch 1 and 16, and
farthest point sampling 10k -> 512 alone, and the shipped default bundle's objects per second
at batch 16 beside pointbert-mini (the previous default's size) and pointbert-lite (the
multi-source default's) with random weights, and lite again carrying an up-axis scorer
(core/upright.py), whose cost is the difference.
Baseline and candidate run in the same process, timed in turn round after round, so machine
noise hits both. Ends with one JSON line of the figures.

    python bench/encoder.py [--config ulip2-pointbert] [--repeats 5] [--batch16-repeats 2] [--default-only]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch


def interleaved(fns: dict, rounds: int, calls: int = 1) -> dict:
    """Median seconds per call of each function, timed in turn round after round (after one
    warm-up call each), so a burst of machine noise hits baseline and candidate alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def large_model(args, tmp: str, rng) -> dict:
    """torch eager vs onnxruntime for args.config at batch 1 and 16, and FPS alone."""
    from core.export import add_upright, export_bundle
    from core.models import create_encoder
    from core.models.ops import farthest_point_sample
    from core.runtime import PointEncoder, inference_session

    model = create_encoder(args.config, seed=0).eval()
    n_points = model.config.num_points
    figures = {"config": args.config, "points": n_points}
    start = time.perf_counter()
    export_bundle(f"{tmp}/bundle", model=model, space="openclip:ViT-bigG-14:laion2b_s39b_b160k",
                  source="benchmark (random weights)")
    figures["export_s"] = round(time.perf_counter() - start, 1)
    ort_encoder = PointEncoder(f"{tmp}/bundle", device="cpu")
    for batch, repeats in ((1, args.repeats), (16, args.batch16_repeats)):
        points = rng.random((batch, n_points, 6), dtype=np.float32)
        tensor = torch.from_numpy(points)
        with torch.inference_mode():
            t = interleaved({"torch": lambda: model(tensor),
                             "ort": lambda: ort_encoder.embed_points(points, batch_size=batch)}, repeats)
        t_torch, t_ort = t["torch"], t["ort"]
        figures[f"torch_cpu_b{batch}_ms"] = round(t_torch * 1e3, 1)
        figures[f"ort_cpu_b{batch}_ms"] = round(t_ort * 1e3, 1)
        figures[f"ort_vs_torch_cpu_b{batch}"] = round(t_torch / t_ort, 2)

    # FPS alone: torch eager, and the exported four-op-per-step ONNX form in a session
    # made as the runtime makes them.

    class Fps(torch.nn.Module):
        def forward(self, xyz):
            return farthest_point_sample(xyz, 512)

    xyz = torch.from_numpy(rng.random((1, 10_000, 3), dtype=np.float32))
    torch.onnx.export(Fps(), (xyz,), f"{tmp}/fps.onnx", dynamo=False, input_names=["xyz"],
                      dynamic_axes={"xyz": {0: "batch", 1: "points"}}, opset_version=17)
    session = inference_session(f"{tmp}/fps.onnx", device="cpu")
    with torch.inference_mode():
        t = interleaved({"torch": lambda: farthest_point_sample(xyz, 512),
                         "ort": lambda: session.run(None, {"xyz": xyz.numpy()})}, rounds=10, calls=5)
    figures["fps_10k_to_512_torch_ms"] = round(t["torch"] * 1e3, 2)
    figures["fps_10k_to_512_ms"] = round(t["ort"] * 1e3, 2)

    return figures


def random_scorer(rng, hidden: int = 128):
    """An up-axis scorer of the size training/upright.py fits, with random weights."""
    from core.upright import DISTANCE_BINS, HEIGHT_BINS, Upright, features

    n = features((HEIGHT_BINS, DISTANCE_BINS))
    return Upright({"w1": rng.normal(size=(n, hidden)), "b1": np.zeros(hidden), "w2": rng.normal(size=(hidden, hidden)),
                    "b2": np.zeros(hidden), "w3": rng.normal(size=hidden), "b3": np.float32(0),
                    "bins": np.array([HEIGHT_BINS, DISTANCE_BINS])})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="ulip2-pointbert")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch16-repeats", type=int, default=2)
    parser.add_argument("--default-only", action="store_true", help="only the default's objects/s at batch 16")
    args = parser.parse_args()

    from core.export import add_upright, export_bundle
    from core.models import create_encoder
    from core.runtime import PointEncoder

    threads = torch.get_num_threads()
    rng = np.random.default_rng(0)
    figures = {"threads": threads}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.default_only:
            figures |= large_model(args, tmp, rng)
        # The shipped default as users run it (onnxruntime, batch 16), beside the two small sizes.
        encoders = {"default": PointEncoder(device="cpu")}
        for name in ("pointbert-mini", "pointbert-lite"):
            export_bundle(f"{tmp}/{name}", model=create_encoder(name, seed=0), space="minilm",
                          source="benchmark (random weights)")
            encoders[name.split("-")[1]] = PointEncoder(f"{tmp}/{name}", device="cpu")
        # lite again, carrying an up-axis scorer of the shipped shape (random weights): its cost
        shutil.copytree(f"{tmp}/pointbert-lite", f"{tmp}/lite-upright")
        add_upright(f"{tmp}/lite-upright", random_scorer(rng))
        encoders["lite_upright"] = PointEncoder(f"{tmp}/lite-upright", device="cpu")
        batches = {k: rng.random((16, e.num_points, 6), dtype=np.float32) for k, e in encoders.items()}
        t = interleaved({k: (lambda k=k, e=e: e.embed_points(batches[k], batch_size=16)) for k, e in encoders.items()},
                        rounds=args.repeats)
        figures["default_config"] = encoders["default"].bundle.config["name"]
        figures |= {f"{k}_objects_per_s_b16": round(16 / t[k], 1) for k in encoders}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
