"""A space's text tower run by onnxruntime and the `tokenizers` library, with no torch in
the process: the tower a bundle carries (text/), or the one built once into the user
cache for a bundle that carries none (the shipped default), so text queries, tags and
captions need torch at most once per space and machine."""

from __future__ import annotations

import datetime
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.errors import BundleError, SpaceError
from core.spaces.base import Space

TEXT_ONNX, TEXT_TOKENIZER = "text.onnx", "tokenizer.json"
# Texts of different lengths that an exported text tower must embed as its torch model does.
CHECK_TEXTS = ["a chair", "A wooden chair with two armrests, painted red; about 80 cm tall."]
#: Largest difference allowed between an exported tower's vectors and its torch model's.
EXPORT_TOLERANCE = 1e-4
# ONNX text-tower inputs -> the field of a `tokenizers` Encoding that feeds them.
_TOKEN_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class OnnxTextSpace(Space):
    """A space, text side, from an exported text tower: tokenised by the `tokenizers`
    library (its tokenizer.json holds truncation and padding) and run by onnxruntime.
    Agrees with the torch space to EXPORT_TOLERANCE and shares its text-cache key."""

    has_images = False

    def __init__(self, onnx_file: Path, tokenizer_file: Path, *, name: str, dim: int, cache_key: str | None,
                 device: str = "auto", threads: int | None = None):
        from tokenizers import Tokenizer

        from core.runtime import inference_session

        self.name, self.dim, self.cache_key = name, dim, cache_key
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.session = inference_session(onnx_file, device, threads)
        self.providers = self.session.get_providers()
        self._inputs = [i.name for i in self.session.get_inputs()]
        unknown = [n for n in self._inputs if n not in _TOKEN_FIELDS]
        if unknown:
            raise BundleError(f"{onnx_file}: unknown text-tower inputs {unknown}; re-export it")

    @classmethod
    def of_bundle(cls, bundle, *, device: str = "auto", threads: int | None = None) -> OnnxTextSpace:
        """The text tower a bundle carries (a BundleError that says how to add one if none)."""
        return cls(bundle.text_file("onnx"), bundle.text_file("tokenizer"), name=bundle.space, dim=bundle.dim,
                   cache_key=bundle.text.get("cache_key"), device=device, threads=threads)

    def _encode_text(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        feed = {name: np.array([getattr(e, _TOKEN_FIELDS[name]) for e in encodings], dtype=np.int64)
                for name in self._inputs}
        return self.session.run(None, feed)[0]


def export_tower(space: Space, folder: Path) -> dict:
    """Write `space`'s text tower into `folder` (TEXT_ONNX, TEXT_TOKENIZER) and check it
    against the torch model: an export that traced the wrong path (a fixed shape, a dropped
    mask) is refused here. Returns what a bundle's "text" entry records."""
    from core import __version__

    onnx_file, tokenizer_file = folder / TEXT_ONNX, folder / TEXT_TOKENIZER
    space.export_text_tower(onnx_file, tokenizer_file)
    tower = OnnxTextSpace(onnx_file, tokenizer_file, name=space.name, dim=space.dim, cache_key=space.cache_key,
                          device="cpu")
    diff = float(abs(tower._encode_text(CHECK_TEXTS) - space._encode_text(CHECK_TEXTS)).max())
    if diff > EXPORT_TOLERANCE:
        raise BundleError(f"the exported text tower of {space.name!r} differs from its torch model by {diff:.2g}")
    return {"onnx": TEXT_ONNX, "tokenizer": TEXT_TOKENIZER,
            "cache_key": space.cache_key,  # the torch space's key, so both runtimes share cached text vectors
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "ulip2_version": __version__}


def _tower_dir(cache_key: str) -> Path:
    from core.paths import cache_dir

    return cache_dir() / "text_towers" / hashlib.sha256(cache_key.encode()).hexdigest()[:16]


def cached_tower(name: str, dim: int, cache_key: str, *, device: str = "auto") -> OnnxTextSpace | None:
    """The tower built into the user cache for the space with this text-cache key, if any."""
    try:
        folder = _tower_dir(cache_key)
        entry = json.loads((folder / "tower.json").read_text())
    except (OSError, ValueError):
        return None
    if entry.get("cache_key") != cache_key or entry.get("dim") != dim:
        return None
    return OnnxTextSpace(folder / TEXT_ONNX, folder / TEXT_TOKENIZER, name=name, dim=dim, cache_key=cache_key,
                         device=device)


def build_cached_tower(space: Space, *, device: str = "auto",
                       notify: Callable[[str], None] | None = None) -> OnnxTextSpace:
    """Export `space`'s text tower into the user cache (once; written beside and moved into
    place, so an interrupted build leaves none) and open it."""
    from core.paths import replacing_folder

    if space.cache_key is None:
        raise SpaceError(f"space {space.name!r} has no stable text-cache key, so its tower is not cached")
    folder = _tower_dir(space.cache_key)
    say = notify or (lambda message: print(message, file=sys.stderr, flush=True))
    say(f"building the {space.name} text tower into {folder} (once; later text queries run without torch)")
    with replacing_folder(folder) as staging:
        entry = export_tower(space, staging)
        (staging / "tower.json").write_text(json.dumps({**entry, "space": space.name, "dim": space.dim}, indent=2))
    return cached_tower(space.name, space.dim, space.cache_key, device=device)
