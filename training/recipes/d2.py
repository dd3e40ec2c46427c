"""The D2 shape distribution and nearest-neighbour classification: the baseline to beat.

D2 (Osada, Funkhouser, Chazelle and Dobkin, "Shape Distributions", ACM TOG 2002) is the
histogram of distances between random pairs of points on a surface. Distances are
divided by their mean (Osada's scale normalisation), so the descriptor ignores pose and
size; shapes are compared by the L1 distance of their histograms, which the paper found
as good as any. Points come from core's sampler (core.meshio.load_points), which already
samples by triangle area, so all pairs of N sampled points are pairs of random surface
points.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

BINS = 64
# Histogram range in units of the mean distance: beyond 3x the mean lies a negligible
# tail even for long thin shapes; what falls there is counted in the last bin.
RANGE = 3.0


def d2_descriptor(xyz: np.ndarray, bins: int = BINS) -> np.ndarray:
    """(bins,) float32 summing to 1: the distribution of pairwise distances over their mean."""
    from scipy.spatial.distance import pdist

    distances = pdist(np.asarray(xyz, dtype=np.float64))
    mean = distances.mean()
    scaled = distances / mean if mean > 0 else distances
    histogram, _ = np.histogram(np.minimum(scaled, RANGE), bins=bins, range=(0.0, RANGE))
    return (histogram / max(1, histogram.sum())).astype(np.float32)


def descriptors(meshes: dict[str, Path], cache_dir: Path, points: int, seed: int = 0,
                bins: int = BINS) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """key -> D2 of each mesh file, and key -> reason for the files core cannot sample.

    Descriptors are cached in cache_dir (one file per points/seed/bins), saved as they
    accrue so a killed run keeps its work; failures are not cached, so a fixed file is
    tried again.
    """
    from tqdm import tqdm

    from core.errors import AssetError
    from core.meshio import load_points

    cache = Path(cache_dir) / f"d2-{points}p-seed{seed}-{bins}b.npz"
    known: dict[str, np.ndarray] = {}
    if cache.exists():
        with np.load(cache) as data:
            known = dict(zip(data["keys"].tolist(), data["descriptors"]))
    failures: dict[str, str] = {}
    todo = [key for key in meshes if key not in known]
    for count, key in enumerate(tqdm(todo, desc="load + D2", unit="model", file=sys.stderr,
                                     dynamic_ncols=True, disable=not todo), start=1):
        try:
            known[key] = d2_descriptor(load_points(meshes[key], points, seed=seed)[:, :3], bins)
        except AssetError as error:
            failures[key] = error.reason
        if known and (count % 50 == 0 or count == len(todo)):
            _save(cache, known)
    return {key: known[key] for key in meshes if key in known}, failures


def _save(path: Path, known: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, keys=np.array(list(known), dtype=str), descriptors=np.stack(list(known.values())))
    os.replace(tmp, path)


def nearest_neighbour_top1(gallery: list[np.ndarray], gallery_labels: list[str],
                           queries: list[np.ndarray], query_labels: list[str]) -> float:
    """Fraction of queries whose L1-nearest gallery descriptor carries the query's label."""
    if not gallery or not queries:
        raise ValueError("nearest-neighbour top-1 needs a non-empty gallery and query set")
    distances = np.abs(np.stack(queries)[:, None, :] - np.stack(gallery)[None, :, :]).sum(axis=2)
    nearest = np.asarray(gallery_labels)[distances.argmin(axis=1)]
    return float(np.mean(nearest == np.asarray(query_labels)))
