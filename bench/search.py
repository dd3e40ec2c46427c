"""Library search latency: exact (numpy) against the ANN index (faiss IVF, core.library.ann),
at 10k, 100k and 1M synthetic unit embeddings of dim 384 (the minilm space's), in one run.

    python bench/search.py [--sizes 10000 100000 1000000] [--queries 200]

Synthetic data: real embeddings are clustered on a low-dimensional manifold, and uniform
random unit vectors in 384-d have no near neighbours at all (every pair is nearly
orthogonal), which no ANN index can, or needs to, serve. So assets here are drawn from
2,000 clusters whose points vary along a 24-d random subspace, plus isotropic noise;
queries are fresh draws from the same model (not copies of indexed vectors).
recall@10 = |ANN top 10 ∩ exact top 10| / 10, averaged over queries.

Measures the search itself (query vector in, ids out); embedding the query text is a
fixed cost on top (printed as text_embed_ms, cached texts cost ~0). Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.library.ann import PROBE_SHARE, AnnIndex  # noqa: E402
from core.spaces.ranking import top_k  # noqa: E402

DIM = 384


def synthetic(n: int, rng: np.random.Generator, centres: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """n unit vectors: a random cluster centre + a 24-d within-cluster offset + noise."""
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):  # in chunks: the temporaries of 1M x 384 at once are large
        m = min(100_000, n - start)
        which = rng.integers(0, len(centres), m)
        latent = rng.standard_normal((m, basis.shape[1]), dtype=np.float32) * 0.25
        x = centres[which] + np.einsum("nl,nld->nd", latent, basis[which % len(basis)])
        x += 0.02 * rng.standard_normal((m, DIM), dtype=np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1e3
    return round(float(np.percentile(ms, 50)), 3), round(float(np.percentile(ms, 99)), 3)


def run(n: int, n_queries: int, rng: np.random.Generator) -> dict:
    centres = rng.standard_normal((2000, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # 16 shared subspaces (a 2000 x 24 x 384 tensor would be 74 MB of basis for nothing).
    basis = rng.standard_normal((16, 24, DIM)).astype(np.float32) / np.sqrt(DIM / 24)
    data = synthetic(n, rng, centres, basis)
    queries = synthetic(n_queries, rng, centres, basis)
    ids = np.arange(n, dtype=np.int64)

    exact_times, truth = [], []
    for q in queries:
        t = time.perf_counter()
        truth.append(top_k(data @ q, 10))
        exact_times.append(time.perf_counter() - t)

    t = time.perf_counter()
    ann = AnnIndex.build(ids, data)
    build_s = time.perf_counter() - t
    ann_times, recalls = [], []
    for q, want in zip(queries, truth):
        t = time.perf_counter()
        got, _ = ann.search(q, 10)
        ann_times.append(time.perf_counter() - t)
        recalls.append(len(set(got.tolist()) & set(want.tolist())) / 10)
    exact_p50, exact_p99 = percentiles(exact_times)
    ann_p50, ann_p99 = percentiles(ann_times)
    return {"n": n, "exact_p50_ms": exact_p50, "exact_p99_ms": exact_p99, "ann_p50_ms": ann_p50,
            "ann_p99_ms": ann_p99, "recall10": round(float(np.mean(recalls)), 4),
            "ann_build_s": round(build_s, 1), "nprobe": ann.index.nprobe, "speedup_p50": round(exact_p50 / ann_p50, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--no-text", action="store_true", help="skip timing the minilm text embedding")
    args = parser.parse_args()
    summary: dict = {"dim": DIM, "probe_share": PROBE_SHARE}
    print(f"{'assets':>9} {'exact p50':>10} {'exact p99':>10} {'ann p50':>8} {'ann p99':>8} "
          f"{'recall@10':>9} {'build s':>8} {'speedup':>8}")
    for n in args.sizes:
        row = run(n, args.queries, np.random.default_rng(n))
        print(f"{n:>9} {row['exact_p50_ms']:>10} {row['exact_p99_ms']:>10} {row['ann_p50_ms']:>8} "
              f"{row['ann_p99_ms']:>8} {row['recall10']:>9} {row['ann_build_s']:>8} {row['speedup_p50']:>7}x", flush=True)
        label = {10_000: "10k", 100_000: "100k", 1_000_000: "1m"}.get(n, str(n))
        summary.update({f"{key}_{label}": value for key, value in row.items() if key != "n"})
        # The product's path: exact below ANN_MIN_ASSETS, ANN above (core.library.search).
        summary[f"search_p50_ms_{label}"] = row["ann_p50_ms"] if n >= 50_000 else row["exact_p50_ms"]
        summary[f"search_recall10_{label}"] = row["recall10"] if n >= 50_000 else 1.0
    if not args.no_text:
        from core.spaces import load_space

        space = load_space("minilm")
        space.embed_text(["warm-up"])
        times = []
        for i in range(20):
            t = time.perf_counter()
            space.embed_text([f"a wooden chair with armrests, variant {i}"])
            times.append(time.perf_counter() - t)
        summary["text_embed_ms"] = percentiles(times)[0]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
