"""Approximate nearest-neighbour index over one bundle's embeddings, for large libraries.

faiss IVF-Flat (inner product on unit vectors = cosine): k-means cells, a query scans the
`nprobe` nearest cells with exact float32 scores. Chosen over usearch's HNSW by
measurement on this project's 2-core CPU, shared with other work: usearch (f32,
connectivity 16, expansion 128/64) took 174 s to build 100k x 384 and reached recall@10
0.43 on clustered data; faiss IVF built 100k in 15-18 s and 1M in 84-158 s, at recall@10
0.94 (100k) and 0.98 (1M) (bench/search.py).

The index is a cache of SQLite, never the truth: a file beside the library named after
the bundle, with the store's generation counter it was built from; a stale or unreadable
file is rebuilt from the embeddings table.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from core.library.store import Library

#: Libraries smaller than this are searched exactly: a matrix product over 50k x 384
#: float32 takes a few milliseconds, so an ANN index would only add build time and misses.
ANN_MIN_ASSETS = 50_000
#: Share of the cells probed per query (at least MIN_NPROBE): recall follows the share of
#: the library scanned, so the probe count grows with the cell count (bench/search.py).
PROBE_SHARE = 0.04
MIN_NPROBE = 32


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # a dependency, but keep the message actionable
        from core.library.store import LibraryError

        raise LibraryError(f"large-library search needs faiss ({exc}); install it with: pip install faiss-cpu") from exc
    return faiss


def n_cells(n: int) -> int:
    """IVF cells for n vectors: about 2 sqrt(n) (1M -> 2000), each holding ~500 vectors."""
    return max(1, min(n // 39, int(2 * math.sqrt(n))))


def n_probe(cells: int) -> int:
    return min(cells, max(MIN_NPROBE, math.ceil(PROBE_SHARE * cells)))


class AnnIndex:
    """IVF-Flat over (ids, unit vectors); search returns (ids, scores) best first."""

    def __init__(self, index, nprobe: int | None = None):
        self.index = index
        self.index.nprobe = nprobe or n_probe(index.nlist)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, *, nprobe: int | None = None,
              train_size: int = 100_000, seed: int = 0) -> AnnIndex:
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, n_cells(n), faiss.METRIC_INNER_PRODUCT)
        # k-means on a sample: cells only need the shape of the data, not every vector.
        sample = vectors
        if n > train_size:
            sample = vectors[np.random.default_rng(seed).choice(n, train_size, replace=False)]
        index.train(sample)
        index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        return cls(index, nprobe)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1), k)
        keep = ids[0] >= 0  # faiss pads with -1 when the probed cells hold fewer than k
        return ids[0][keep], scores[0][keep]

    def __len__(self) -> int:
        return self.index.ntotal

    # -- kept beside the library -----------------------------------------------------
    @staticmethod
    def path_for(library: Library, bundle: str) -> Path:
        return library.path.with_name(f"{library.path.name}.{bundle}.faiss")

    @classmethod
    def for_library(cls, library: Library, bundle: str, *, nprobe: int | None = None) -> AnnIndex:
        """The saved index of `bundle`'s embeddings, rebuilt first when the library changed since."""
        faiss = _faiss()
        path = cls.path_for(library, bundle)
        stamp = path.with_suffix(".json")
        generation = library.generation(bundle)
        try:
            if json.loads(stamp.read_text())["generation"] == generation:
                return cls(faiss.read_index(str(path)), nprobe)
        except (OSError, ValueError, KeyError, RuntimeError):
            pass  # missing, stale or unreadable: rebuild below
        ids, vectors = library.embeddings(bundle)
        ann = cls.build(ids, vectors, nprobe=nprobe)
        # Write then rename, stamp last: a crash leaves an old stamp, so the next search rebuilds.
        tmp = path.with_suffix(".tmp")
        try:
            faiss.write_index(ann.index, str(tmp))
            os.replace(tmp, path)
            stamp.write_text(json.dumps({"generation": generation, "count": len(ann)}) + "\n")
        except (OSError, RuntimeError):  # a read-only share (faiss raises RuntimeError): searched unsaved
            pass
        return ann
