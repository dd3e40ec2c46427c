"""open_clip models as spaces with text and image towers (ULIP-2 uses ViT-bigG-14).

Weights come from an open_clip pretrained tag (downloaded once through the Hugging
Face hub, then cached), a local checkpoint file, or nowhere (random init).
"""

from __future__ import annotations

import difflib

import numpy as np

from core.errors import SpaceError
from core.spaces import Space

try:
    import open_clip
    import torch
except ImportError as exc:  # the torch extra is optional for the rest of core
    raise SpaceError(f"openclip spaces need torch and open_clip_torch ({exc}); install them with: pip install 'ulip2[torch]'") from exc


def _check_names(arch: str, weights: str | None, is_file: bool) -> None:
    """Raise SpaceError for an unknown architecture or pretrained tag, listing what exists."""
    archs = open_clip.list_models()
    if arch not in archs:
        near = difflib.get_close_matches(arch, archs, n=5, cutoff=0.5)
        hint = f"; close names: {', '.join(near)}" if near else f"; {len(archs)} are known (open_clip.list_models())"
        raise SpaceError(f"open_clip has no architecture {arch!r}{hint}")
    if weights is not None and not is_file:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if weights not in tags:
            known = ", ".join(tags) if tags else "none"
            raise SpaceError(
                f"{weights!r} is neither a pretrained tag of {arch} (known: {known}) nor a weights file; "
                f"use openclip:{arch}:<tag>, openclip:{arch}:/path/to/weights or openclip:{arch}:none"
            )


class OpenClipSpace(Space):
    """An open_clip CLIP model: text and image towers into one space."""

    has_images = True

    def __init__(self, arch: str, weights: str | None, name: str, cache_key: str | None, device: str = "cpu",
                 weights_is_file: bool = False):
        self.name, self.cache_key, self.device = name, cache_key, device
        _check_names(arch, weights, weights_is_file)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights, device=device)
            self.tokenizer = open_clip.get_tokenizer(arch)
        except Exception as exc:  # open_clip reports download and checkpoint failures as bare RuntimeErrors
            if weights_is_file or weights is None:
                raise SpaceError(f"could not build {name!r}: {exc}") from exc
            raise SpaceError(
                f"could not get the weights for {name!r}: open_clip downloads pretrained tags from the "
                f"Hugging Face hub, which needs network once (they are cached afterwards under HF_HOME). "
                f"Without network, fetch the checkpoint elsewhere and use the local form "
                f"openclip:{arch}:/path/to/open_clip_pytorch_model.bin. Cause: {exc}"
            ) from exc
        self.model = model.eval()
        self.preprocess = preprocess
        # The width of the shared space, read from the model itself rather than its config.
        self.dim = int(self._encode_text([""]).shape[-1])

    @torch.inference_mode()
    def _encode_text(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens, normalize=True).float().cpu().numpy()

    @torch.inference_mode()
    def _encode_images(self, images: list) -> np.ndarray:
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        return self.model.encode_image(pixels, normalize=True).float().cpu().numpy()
