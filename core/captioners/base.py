"""What every captioner is (Captioner, its error, the names and defaults) and how its
candidates are ranked and chosen; core.captioners.load_captioner makes one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.errors import Ulip2Error

CAPTIONERS = ("blip2", "blip", "metadata")
DEFAULT_CAPTIONER = "blip2"
DEFAULT_MODELS = {"blip2": "Salesforce/blip2-opt-6.7b", "blip": "Salesforce/blip-image-captioning-large"}
# ULIP-2 samples 10 candidates per view.
DEFAULT_K = 10


class CaptionerError(Ulip2Error):
    """A captioner that cannot be loaded (e.g. weights not available offline) or used."""


class Captioner:
    """caption(images, k) -> k candidate captions per image.

    images: PIL images as rendered (RGBA: transparent where the object is not; a vision
    model composites them on white, the metadata captioner counts the opaque pixels' colours).
    facts: the record's "facts" (names, dimensions); vision models ignore them, the metadata
    captioner reads them.
    """

    name: str
    model: str | None = None
    vision_model: bool = True

    def caption(self, images: Sequence, k: int, *, facts: dict | None = None) -> list[list[str]]:
        raise NotImplementedError


def on_white(image):
    """An RGB PIL image: an RGBA render composited over white (captioners expect no alpha)."""
    from PIL import Image

    if image.mode != "RGBA":
        return image.convert("RGB")
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A"))
    return background


def rank(space, images: Sequence, candidates: list[list[str]]) -> tuple[str, list[np.ndarray]]:
    """(ranking rule, per-view scores) for each view's candidates (see the module docstring)."""
    flat = [text for view in candidates for text in view]
    unique = {text: i for i, text in enumerate(dict.fromkeys(flat))}  # views share most sentences: embed each once
    texts = space.embed_text(list(unique))[[unique[text] for text in flat]]
    bounds = np.cumsum([0] + [len(view) for view in candidates])
    per_view = [texts[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
    if space.has_images:
        pictures = space.embed_images([on_white(im) for im in images])
        return "image-text", [t @ p for t, p in zip(per_view, pictures)]
    scores = []
    for t in per_view:
        mean = t.mean(axis=0)
        scores.append(t @ (mean / max(np.linalg.norm(mean), 1e-12)))
    return "text-consensus", scores


def caption_views(captioner: Captioner, space, images: Sequence, *, k: int = DEFAULT_K,
                  facts: dict | None = None) -> dict:
    """Generate, rank and select: the "captions" block of a triplet record."""
    candidates = captioner.caption(images, k, facts=facts)
    if len(candidates) != len(images) or not all(candidates):
        raise CaptionerError(f"captioner {captioner.name} returned no candidates for some views")
    ranking, scores = rank(space, images, candidates)
    views = []
    for texts, score in zip(candidates, scores):
        best = int(np.argmax(score))
        views.append({"candidates": [{"text": t, "score": round(float(s), 5)} for t, s in zip(texts, score)],
                      "chosen": best, "caption": texts[best]})
    return {"captioner": captioner.name, "model": captioner.model, "vision_model": captioner.vision_model,
            "space": space.name, "ranking": ranking, "k": k, "views": views}
