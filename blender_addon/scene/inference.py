"""The model bundle inside Blender, through onnxruntime only: the 3D point encoder
(core.runtime.PointEncoder), the space's text tower (core.spaces.text_encoder,
which needs the bundle's exported text tower: Blender has no torch), and the text vectors
of a vocabulary or caption bank. Each is loaded once per Blender session.

Points come from the evaluated depsgraph through extract.py and core.sampling, exactly as
triplets do, at the bundle's point count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.bundle import read_bundle
from core.errors import AssetError, BundleError
from core.spaces.vocabularies import load_bank, load_vocabulary, prompt_name
from core.spaces.vocabularies import ULIP_TEMPLATES

from .extract import extract

# Classes embedded per progress step: 8 classes x 64 templates = 512 prompts, well under a
# second on a laptop CPU, so Esc is answered quickly while a vocabulary is embedded.
CLASSES_PER_STEP = 8
TEXTS_PER_STEP = 256


@dataclass
class TextSet:
    """Texts (labels or captions) and their unit vectors in the bundle's space."""

    name: str
    texts: list
    vectors: np.ndarray


class Models:
    """A bundle's point encoder and text tower on one device. torch_text: a bundle without
    a text tower embeds texts with the torch space (the ulip2 environment has it, for
    `ulip2 blender tag`; Blender has not)."""

    def __init__(self, folder: str, device: str, *, torch_text: bool = False):
        from core.runtime import PointEncoder
        from core.spaces import text_encoder

        if not folder:
            raise BundleError("no model bundle set, and this copy of the extension carries none: choose a bundle "
                              "folder in the ulip2 preferences (make one with: ulip2 models add-text default --out "
                              "DIR), or install the zip that ulip2 blender build-extension makes")
        self.bundle = read_bundle(folder, warn_untrained=False)
        if not self.bundle.has_text and not torch_text:
            raise BundleError(f"bundle {self.bundle.path} has no text tower, and Blender cannot run the torch one: "
                              f"run ulip2 models add-text {self.bundle.path} --out DIR, and choose DIR")
        self.device = device
        self.encoder = PointEncoder(self.bundle, device=device)
        self.text = text_encoder(self.bundle, device=device)
        self.carried = self.bundle.carried_prompts(ULIP_TEMPLATES)  # the shipped vocabularies' ensembles
        self._text_sets: dict[tuple[str, str], TextSet] = {}

    @property
    def note(self) -> str:
        """What a report adds about this bundle."""
        return "" if self.bundle.trained else " (the bundle is untrained: random weights, meaningless labels)"

    def embed_objects(self, depsgraph, objects, seed: int = 0) -> np.ndarray:
        """(len(objects), dim) unit vectors; AssetError for an object with no surface. The
        scene's frame is known (z up, turned y-up as points leave Blender): the objects stand
        as the artist sees them, so the bundle's up-axis scorer is not asked."""
        points = [object_points(depsgraph, obj, self.bundle.num_points, seed) for obj in objects]
        return self.encoder.embed_points(np.stack(points), frame_known=True)

    def vocabulary(self, source: str) -> Iterator[tuple[int, int, str]]:
        """Steps embedding a vocabulary's prompt ensembles (core.spaces.base.Space.embed_prompts);
        the result is kept: self.text_set("vocabulary", source) afterwards."""
        name, labels = load_vocabulary(source)
        yield from self._embed_in_steps(
            ("vocabulary", name), labels, CLASSES_PER_STEP, f"embedding the {Path(name).name} vocabulary",
            lambda part: self.text.embed_prompts([prompt_name(label) for label in part], known=self.carried))

    def bank(self, source: str | None = None) -> Iterator[tuple[int, int, str]]:
        """Steps embedding a caption bank (the shipped one by default): self.text_set("bank", source)."""
        name, captions = load_bank(source)
        yield from self._embed_in_steps(("bank", name), captions, TEXTS_PER_STEP, "embedding the caption bank",
                                        self.text.embed_text)

    def _embed_in_steps(self, key: tuple[str, str], texts: list[str], per_step: int, message: str,
                        embed) -> Iterator[tuple[int, int, str]]:
        """(done, total, message) before each slice of `texts` is embedded; kept under `key`."""
        if key in self._text_sets:
            return
        parts = []
        for start in range(0, len(texts), per_step):
            yield start, len(texts), message
            parts.append(embed(texts[start:start + per_step]))
        self._text_sets[key] = TextSet(key[1], texts, np.concatenate(parts))

    def text_set(self, kind: str, source: str | None) -> TextSet:
        name = (load_vocabulary(source) if kind == "vocabulary" else load_bank(source))[0]
        return self._text_sets[(kind, name)]


def object_points(depsgraph, obj, n_points: int, seed: int = 0) -> np.ndarray:
    """(n_points, 9) points of the evaluated object (modifiers, instances), unit sphere, in
    the encoder's y-up frame (as `ulip2 index` embeds the same object)."""
    geometry = extract(depsgraph, [obj])
    if not geometry.parts:
        raise AssetError(None, f"{obj.name}: no mesh geometry to sample")
    return geometry.points(n_points, seed)


_LOADED: dict[tuple, Models] = {}


def models_for(folder: str, device: str) -> Models:
    """The Models of a bundle folder on a device, loaded once; a re-exported bundle
    (bundle.json changed) is loaded afresh."""
    path = Path(folder).expanduser().resolve() if folder else None
    meta = path / "bundle.json" if path else None
    stamp = os.stat(meta).st_mtime_ns if meta and meta.is_file() else None
    key = (str(path), stamp, device)
    if key not in _LOADED:
        _LOADED[key] = Models(folder, device)
    return _LOADED[key]


def forget_models() -> None:
    """Drop loaded sessions (when the extension is disabled)."""
    _LOADED.clear()
