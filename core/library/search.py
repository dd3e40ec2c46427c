"""Search a library by text, image or a 3D example, with format / folder / tag filters.

Queries become unit vectors in the bundle's space (text and images through the space's
towers, a mesh through the bundle's encoder) and are compared with the current bundle's
embeddings only. Small libraries are searched exactly with numpy; from ANN_MIN_ASSETS
embeddings up, through the faiss index kept beside the library (core.library.ann).
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from core.bundle import Bundle, check_encoder_files, read_bundle
from core.errors import SpaceError
from core.library.ann import ANN_MIN_ASSETS, AnnIndex
from core.library.keys import bundle_id
from core.library.store import Library, LibraryError
from core.spaces.ranking import top_k

# Filtered ANN searches ask for this many times k, then filter; too few survivors
# fall back to an exact search over the filtered assets.
_FILTER_OVERSAMPLE = 20


@dataclass(frozen=True)
class Hit:
    asset_id: int
    path: str
    format: str
    folder: str
    score: float  # cosine similarity in the bundle's space
    object: str = ""  # the marked object's name, for an asset inside a .blend

    def to_json(self) -> dict:
        return asdict(self)


class SearchData:
    """What searches read, kept per generation of a bundle's embeddings: the embeddings
    (exact and filtered searches) and the ANN index (1M assets: 1.5 GB each, where a search
    takes 3 ms). One per Searcher by default; a server's reader threads share one, so the
    library's vectors are in memory once, however many readers search them."""

    def __init__(self):
        self._lock = threading.Lock()  # a load runs once; the others wait for it
        self._exact: tuple[int, tuple[np.ndarray, np.ndarray]] | None = None
        self._ann: tuple[int, AnnIndex] | None = None

    def exact(self, library: Library, bundle: str) -> tuple[np.ndarray, np.ndarray]:
        return self._current("_exact", library.generation(bundle), lambda: library.embeddings(bundle))

    def ann(self, library: Library, bundle: str) -> AnnIndex:
        return self._current("_ann", library.generation(bundle), lambda: AnnIndex.for_library(library, bundle))

    def _current(self, slot: str, generation: int, load):
        held = getattr(self, slot)  # (generation, value), swapped whole: read without the lock
        if held is not None and held[0] == generation:
            return held[1]
        with self._lock:
            held = getattr(self, slot)
            if held is None or held[0] != generation:
                held = generation, load()
                setattr(self, slot, held)
            return held[1]


class Searcher:
    """Searches over the embeddings `bundle` made in `library`; `data`: what it reads, when
    shared with other Searchers of the same library and bundle."""

    def __init__(self, library: Library, bundle: Bundle | str | os.PathLike | None = None, *,
                 ann_min_assets: int = ANN_MIN_ASSETS, device: str = "auto", data: SearchData | None = None):
        from core.bundle import default_bundle_path

        self.library = library
        # A text or image query runs no encoder: it is checked when a mesh query needs it
        # (opening it to check costs a new text query a fifth of its time).
        self.bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle or default_bundle_path(),
                                                                            check_encoders=False)
        self.bundle_id = bundle_id(self.bundle)
        self.ann_min_assets = ann_min_assets
        self.device = device
        self.data = data if data is not None else SearchData()
        spaces = library.spaces()
        if self.bundle_id not in spaces:
            others = ", ".join(f"{b} ({s}, {n} assets)" for b, (s, n) in spaces.items()) or "none"
            raise LibraryError(
                f"{library.path} holds no embeddings from bundle {self.bundle.path} ({self.bundle_id}); "
                f"bundles in it: {others}. Index with this bundle: ulip2 index FOLDER --bundle {self.bundle.path}"
            )
        self.count = spaces[self.bundle_id][1]

    # -- queries -> vectors ------------------------------------------------------------
    def text_vector(self, text: str, *, space: str | None = None) -> np.ndarray:
        """The text's unit vector in the bundle's space (core.spaces.text_encoder: no torch
        once the space's text tower is at hand); `space`, when given, must be the bundle's."""
        from core.spaces import text_encoder

        if space is not None and space != self.bundle.space:
            raise SpaceError(
                f"query space {space!r} is not the bundle's space {self.bundle.space!r}; "
                "vectors of two spaces cannot be compared"
            )
        return text_encoder(self.bundle, device=self.device).embed_text([text])[0]

    def image_vector(self, image_path: str | os.PathLike) -> np.ndarray:
        from core.spaces import has_image_tower, load_space

        if not has_image_tower(self.bundle.space):
            raise SpaceError(
                f"--image needs a space with an image tower; this library's bundle uses {self.bundle.space!r}, "
                "which is text only. Search by text or --like, or use a bundle in an openclip space"
            )
        from PIL import Image

        try:
            image = Image.open(image_path)
            image.load()
        except OSError as exc:
            raise LibraryError(f"{image_path}: cannot read as an image ({exc})") from exc
        return load_space(self.bundle.space).embed_images([image])[0]

    def like_vector(self, example: str | os.PathLike) -> tuple[np.ndarray, int | None]:
        """(vector, asset id) of an indexed asset, else (the mesh file embedded now, None).

        An asset marked inside a .blend is named FILE.blend#OBJECT (the last '#', unless the
        whole name is an existing file)."""
        path, obj = os.path.abspath(os.fspath(example)), ""
        if not os.path.isfile(path) and "#" in path:
            path, obj = path.rsplit("#", 1)
        asset_id = self.library.asset_id(path, obj)
        if asset_id is not None:
            vector = self.asset_vector(asset_id)
            if vector is not None:
                return vector, asset_id
        marked = self.library.marked_objects(path)
        if obj or marked:  # a missing marked asset, or a .blend of marked assets (the file is not one)
            what = f"no asset {obj!r} is indexed from {path}" if obj else "this file holds marked assets, it is not one"
            hint = (f"name one as FILE#OBJECT: {', '.join(path + '#' + m for m in marked[:10])}" if marked
                    else "run ulip2 index on its folder")
            raise LibraryError(f"{example}: {what}; {hint}")
        from core.runtime import PointEncoder

        check_encoder_files(self.bundle)
        encoder = PointEncoder(self.bundle, device=self.device)
        return next(iter(encoder.embed_files([path])))[1], None

    def asset_vector(self, asset_id: int) -> np.ndarray | None:
        """The bundle's embedding of an indexed asset, by id; None when the bundle has none of it
        (no such asset, or one embedded by another bundle only). Reads no file but the library."""
        ids, vectors = self.library.embeddings(self.bundle_id, [asset_id])
        return vectors[0] if len(ids) else None

    # -- vectors -> hits -----------------------------------------------------------------
    def search(self, query: np.ndarray, k: int = 10, *, formats: Sequence[str] = (), folder: str | None = None,
               tags: Sequence[str] = (), exclude: int | None = None) -> list[Hit]:
        """Top-k assets by cosine similarity, filtered; `exclude` drops one asset (the --like example)."""
        query = np.asarray(query, dtype=np.float32).reshape(-1)
        if query.size != self.bundle.dim:
            raise SpaceError(f"query has {query.size} dimensions, the bundle's space has {self.bundle.dim}")
        filtered = bool(formats or folder is not None or tags)
        allowed = set(self.library.filtered_ids(formats=formats, folder=folder, tags=tags)) if filtered else None
        want = k + (exclude is not None)
        if self.count >= self.ann_min_assets:
            ids, scores = self.data.ann(self.library, self.bundle_id).search(query, want * (_FILTER_OVERSAMPLE if filtered else 1))
            pairs = [(i, s) for i, s in zip(ids.tolist(), scores.tolist()) if allowed is None or i in allowed]
            if len(pairs) >= want or not filtered:
                return self._hits(pairs, k, exclude)
        ids, vectors = self._exact_rows(allowed)
        scores = vectors @ query if len(ids) else np.zeros(0, np.float32)
        return self._hits([(int(ids[i]), float(scores[i])) for i in top_k(scores, want)], k, exclude)

    def _exact_rows(self, allowed: set[int] | None) -> tuple[np.ndarray, np.ndarray]:
        ids, vectors = self.data.exact(self.library, self.bundle_id)
        if allowed is None:
            return ids, vectors
        mask = np.isin(ids, np.fromiter(allowed, np.int64, len(allowed)))
        return ids[mask], vectors[mask]

    def _hits(self, pairs: list[tuple[int, float]], k: int, exclude: int | None) -> list[Hit]:
        pairs = [(i, s) for i, s in pairs if i != exclude][:k]
        rows = self.library.assets([i for i, _ in pairs])
        return [Hit(i, rows[i]["path"], rows[i]["format"], rows[i]["folder"], round(float(s), 6), rows[i]["object"])
                for i, s in pairs if i in rows]
