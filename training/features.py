"""The feature cache: what training reads, so the frozen towers never run in the loop.

One folder per (triplet store, space):

    meta.json           format version, space name and dim, record ids, counts
    points.npy          (M, N, 6) float16   sampled points per object (xyz, rgb)
    text.npy            (T, D) float16      caption embeddings, all objects back to back
    text_offsets.npy    (M + 1,) int64      object i's captions are text[off[i]:off[i+1]]
    image.npy           (V, D) float16      view embeddings (absent for text-only spaces)
    image_offsets.npy   (M + 1,) int64

float16 halves the disk and page-cache footprint; training casts to float32.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from core.errors import Ulip2Error
from core.progress import OnProgress

FORMAT_VERSION = 1


@dataclasses.dataclass
class TripletFeatures:
    space: str
    ids: list[str]
    points: np.ndarray
    text: np.ndarray
    text_offsets: np.ndarray
    image: np.ndarray | None = None
    image_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.text.shape[1]

    @classmethod
    def from_lists(cls, space: str, ids, points, texts, images=None) -> "TripletFeatures":
        """Build from per-object arrays: points (N, 6), texts (C_i, D), images (V_i, D) or None."""
        def pack(parts):
            offsets = np.zeros(len(parts) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(p) for p in parts])
            return np.concatenate(parts).astype(np.float16), offsets

        text, text_offsets = pack(texts)
        image, image_offsets = pack(images) if images is not None else (None, None)
        return cls(space, list(ids), np.stack(points).astype(np.float16), text, text_offsets, image, image_offsets)

    def texts_of(self, i: int) -> np.ndarray:
        return self.text[self.text_offsets[i]:self.text_offsets[i + 1]]

    def images_of(self, i: int) -> np.ndarray | None:
        if self.image is None:
            return None
        return self.image[self.image_offsets[i]:self.image_offsets[i + 1]]

    def subset(self, indices) -> "TripletFeatures":
        indices = list(indices)
        images = [self.images_of(i) for i in indices] if self.image is not None else None
        return TripletFeatures.from_lists(self.space, [self.ids[i] for i in indices], self.points[indices],
                                          [self.texts_of(i) for i in indices], images)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write atomically: into a temporary sibling folder, then renamed into place."""
        folder = Path(folder)
        staging = folder.with_name(folder.name + ".partial")
        staging.mkdir(parents=True, exist_ok=True)
        arrays = {"points": self.points, "text": self.text, "text_offsets": self.text_offsets}
        if self.image is not None:
            arrays |= {"image": self.image, "image_offsets": self.image_offsets}
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", array)
        meta = {"format_version": FORMAT_VERSION, "space": self.space, "dim": self.dim, "ids": self.ids,
                "has_images": self.image is not None}
        (staging / "meta.json").write_text(json.dumps(meta))
        if folder.exists():
            for child in folder.iterdir():
                child.unlink()
            folder.rmdir()
        os.replace(staging, folder)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, mmap: bool = True) -> "TripletFeatures":
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
        except (OSError, ValueError) as exc:
            raise Ulip2Error(f"{folder}: not a feature cache ({exc}); build one with: ulip2 features STORE") from exc
        mode = "r" if mmap else None

        def arr(name):
            return np.load(folder / f"{name}.npy", mmap_mode=mode)

        images = (arr("image"), arr("image_offsets")) if meta["has_images"] else (None, None)
        return cls(meta["space"], meta["ids"], arr("points"), arr("text"), arr("text_offsets"), *images)


def cache_folder(store_root: str | os.PathLike, space: str) -> Path:
    """STORE/features/<space>: one cache per space, since features of two spaces never mix."""
    import hashlib
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", space)[:60]
    return Path(store_root) / "features" / f"{slug}-{hashlib.sha256(space.encode()).hexdigest()[:8]}"


def load_or_build_features(store_root: str | os.PathLike, space: str, *,
                           on_progress: OnProgress | None = None) -> TripletFeatures:
    """The store's feature cache for `space`, built first if missing (resumes a partial one)."""
    folder = cache_folder(store_root, space)
    if not (folder / "meta.json").is_file():
        build_features(store_root, space, on_progress=on_progress)
    return TripletFeatures.load(folder)


def build_features(store_root: str | os.PathLike, space_name: str, *, out: str | os.PathLike | None = None,
                   chunk: int = 128, device: str = "cpu", on_progress: OnProgress | None = None) -> Path:
    """Embed a triplet store's captions (and views, where the space sees images) once.

    Work goes in chunks of `chunk` records, each saved as it finishes, so an interrupted
    run picks up at the first missing chunk; the chunks are joined into the cache at the end.
    """
    from core.spaces import load_space
    from core.triplets import TripletStore

    store = TripletStore(store_root)
    records = list(store.records(captioned=True))
    if not records:
        raise Ulip2Error(f"{store_root}: no captioned records; caption them with: ulip2 triplets caption {store_root}")
    counts = {r.meta["points"]["count"] for r in records}
    if len(counts) > 1:
        raise Ulip2Error(f"{store_root}: records have different point counts {sorted(counts)}; rebuild them with one --points")
    space = load_space(space_name, device=device)
    out = Path(out) if out else cache_folder(store_root, space.name)
    parts = out.with_name(out.name + ".chunks")
    parts.mkdir(parents=True, exist_ok=True)
    chunks = [records[i:i + chunk] for i in range(0, len(records), chunk)]
    if on_progress is not None:
        on_progress(0, len(records))
    for number, batch in enumerate(chunks):
        part = parts / f"{number:06d}.npz"
        if not part.is_file():
            captions = [r.captions for r in batch]
            text = space.embed_text([c for cs in captions for c in cs])
            arrays = {"points": np.stack([r.points() for r in batch]).astype(np.float16),
                      "text": text.astype(np.float16), "text_counts": np.array([len(c) for c in captions])}
            if space.has_images:
                views = [r.views() for r in batch]
                arrays["image"] = space.embed_images([v for vs in views for v in vs]).astype(np.float16)
                arrays["image_counts"] = np.array([len(v) for v in views])
            tmp = part.with_name(part.stem + ".tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, part)
        if on_progress is not None:
            on_progress(min(len(records), (number + 1) * chunk), len(records))
    points, texts, images = [], [], [] if space.has_images else None
    for number in range(len(chunks)):
        with np.load(parts / f"{number:06d}.npz") as data:
            points.extend(data["points"])
            texts.extend(np.split(data["text"], np.cumsum(data["text_counts"])[:-1]))
            if images is not None:
                images.extend(np.split(data["image"], np.cumsum(data["image_counts"])[:-1]))
    TripletFeatures.from_lists(space.name, [r.key for r in records], points, texts, images).save(out)
    for part in parts.iterdir():
        part.unlink()
    parts.rmdir()
    return out
