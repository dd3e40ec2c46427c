"""What a frozen embedding space is: texts (and images, where it has an image tower) ->
unit vectors, with the on-disk text cache and ULIP's prompt ensembles. Every space, torch
or ONNX, is one of these (core.spaces makes them by name)."""

from __future__ import annotations

import os
import sqlite3
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from core.errors import SpaceError
from core.spaces.vocabularies import ULIP_TEMPLATES

#: The space ULIP-2 aligns to (open_clip ViT-bigG-14, LAION-2B).
ULIP2_SPACE = "openclip:ViT-bigG-14:laion2b_s39b_b160k"
#: Classes per step of embed_prompts (x 64 templates: about a thousand texts).
PROMPT_STEP = 16


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _text_cache():
    """The shared text cache, or None when ULIP2_TEXT_CACHE=0."""
    if os.environ.get("ULIP2_TEXT_CACHE", "1").strip() == "0":
        return None
    from core.textcache import TextCache

    return TextCache()


def _as_rgb(image):
    """A PIL RGB image from a PIL image or an HxWx3 uint8 array."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise SpaceError(
            f"images must be PIL images or HxWx3 uint8 arrays, got an array of shape {arr.shape} and dtype {arr.dtype}"
        )
    return Image.fromarray(arr, mode="RGB")


class Space:
    """A frozen embedding space: texts (and images, where it has an image tower) -> unit vectors."""

    name: str
    dim: int
    has_images: bool = False
    #: key for the on-disk text cache; None for spaces whose vectors must not be reused
    #: (random weights differ on every load).
    cache_key: str | None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} dim={self.dim}>"

    # -- what subclasses implement -------------------------------------------------
    def _encode_text(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def _encode_images(self, images: list) -> np.ndarray:
        raise NotImplementedError

    def export_text_tower(self, onnx_path: Path, tokenizer_path: Path) -> None:
        """Write the text tower as ONNX (token tensors -> unit vectors) and its tokenizer as a
        `tokenizers` tokenizer.json; torch spaces implement it (see core.export.add_text_tower)."""
        raise SpaceError(f"space {self.name!r} ({type(self).__name__}) cannot export its text tower")

    # -- public API -----------------------------------------------------------------
    def embed_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32 unit vectors in input order; cached texts are not recomputed."""
        if isinstance(texts, str):
            raise SpaceError("embed_text takes a sequence of texts; wrap a single text as [text]")
        texts = list(texts)
        unique = list(dict.fromkeys(texts))
        cache = _text_cache() if self.cache_key is not None else None
        known: dict[str, np.ndarray] = {}
        if cache is not None:
            try:
                known = cache.get_many(self.cache_key, unique)
            except sqlite3.Error as exc:  # a broken cache slows things down, it must not stop them
                warnings.warn(f"text cache unreadable ({exc}); embedding without it", stacklevel=2)
                cache = None
            known = {t: v for t, v in known.items() if v.size == self.dim}
        missing = [t for t in unique if t not in known]
        fresh: dict[str, np.ndarray] = {}
        for start in range(0, len(missing), batch_size):
            batch = missing[start:start + batch_size]
            fresh.update(zip(batch, _l2_normalize(self._encode_text(batch))))
        if cache is not None and fresh:
            try:
                cache.put_many(self.cache_key, fresh)
            except sqlite3.Error as exc:
                warnings.warn(f"text cache not writable ({exc}); results were not cached", stacklevel=2)
        known.update(fresh)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([known[t] for t in texts]).astype(np.float32, copy=False)

    def embed_images(self, images: Sequence, batch_size: int = 32) -> np.ndarray:
        """(n, dim) float32 unit vectors for PIL images or HxWx3 uint8 arrays."""
        if not self.has_images:
            raise SpaceError(
                f"space {self.name!r} has no image tower, so it cannot embed images; "
                f"use an openclip:<arch>:<pretrained> space, e.g. {ULIP2_SPACE}"
            )
        images = [_as_rgb(im) for im in images]
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            _l2_normalize(self._encode_images(images[start:start + batch_size]))
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(parts)

    def embed_prompts(self, classnames: Sequence[str], templates: Sequence[str] = ULIP_TEMPLATES,
                      batch_size: int = 64, on_progress: Callable[[int, int], None] | None = None,
                      known: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(n_classes, dim) prompt-ensemble vectors: every template filled per class,
        embedded, normalised, averaged, normalised again (ULIP's zero-shot recipe).

        Classes are embedded PROMPT_STEP at a time (each step lands in the text cache, so an
        interrupted vocabulary resumes); on_progress(done, total) follows the classes to embed.
        `known` holds ensembles already made with these templates (a bundle's carried ones:
        prompt_vectors); those classes are not embedded again."""
        if isinstance(classnames, str):
            raise SpaceError("embed_prompts takes a sequence of class names; wrap a single one as [name]")
        classnames, templates = list(classnames), list(templates)
        if not templates:
            raise SpaceError("embed_prompts needs at least one template")
        if not classnames:
            return np.zeros((0, self.dim), dtype=np.float32)
        known = dict(known or {})
        missing = [c for c in dict.fromkeys(classnames) if c not in known]
        for start in range(0, len(missing), PROMPT_STEP):
            step = missing[start:start + PROMPT_STEP]
            per_prompt = self.embed_text([t.format(c) for c in step for t in templates], batch_size=batch_size)
            known.update(zip(step, _l2_normalize(per_prompt.reshape(len(step), len(templates), self.dim).mean(axis=1))))
            if on_progress is not None:
                on_progress(start + len(step), len(missing))
        return np.stack([known[c] for c in classnames]).astype(np.float32, copy=False)
