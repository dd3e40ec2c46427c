"""Captioners: rendered views -> K candidate captions per view -> the top-1 per view.

ULIP-2 captions each of an object's views with BLIP-2 (opt-6.7b), K = 10 candidates per
view by nucleus sampling, and keeps the candidate the frozen space ranks highest for that
view (top-1 beat top-k in the paper's ablation). Here:

    blip2      transformers Blip2ForConditionalGeneration (default Salesforce/blip2-opt-6.7b,
               as in the paper; any hub id or local folder)
    blip       transformers BlipForConditionalGeneration (default
               Salesforce/blip-image-captioning-large), same flow, much smaller
    metadata   NOT a vision model: sentences built from what is known and measured
               (object and material names, dominant colours counted in the renders,
               proportions and size from the geometry). Works offline; records it writes
               say "vision_model": false.

Ranking: with a space that has an image tower (openclip), each candidate is scored by the
cosine between its text embedding and its view's image embedding ("image-text"). A
text-only space (minilm) cannot see images, so candidates are scored by their cosine to
the mean embedding of all candidates of that view ("text-consensus": the caption the
others agree with most, a medoid), which drops outlier samples but is not visual evidence.

This package stays light to import: torch and transformers load with blip/blip2 only.
"""

from __future__ import annotations

from core.captioners.base import (CAPTIONERS, DEFAULT_CAPTIONER, DEFAULT_K, DEFAULT_MODELS, Captioner,
                                  CaptionerError, caption_views, on_white, rank)

__all__ = ["CAPTIONERS", "DEFAULT_CAPTIONER", "DEFAULT_K", "DEFAULT_MODELS", "Captioner", "CaptionerError",
           "caption_views", "load_captioner", "on_white", "rank"]


def load_captioner(name: str, model: str | None = None, *, device: str = "cpu") -> Captioner:
    """A ready captioner; raises CaptionerError (naming the alternatives) if it cannot be had."""
    if name == "metadata":
        from core.captioners.metadata import MetadataCaptioner

        return MetadataCaptioner()
    if name in ("blip", "blip2"):
        from core.captioners.hf import HFCaptioner

        return HFCaptioner(name, model or DEFAULT_MODELS[name], device=device)
    raise CaptionerError(f"unknown captioner {name!r}; choose one of: {', '.join(CAPTIONERS)}")
