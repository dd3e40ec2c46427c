"""open_clip models as spaces with text and image towers (ULIP-2 uses ViT-bigG-14).

Weights come from an open_clip pretrained tag (downloaded once through the Hugging
Face hub, then cached), a local checkpoint file, or nowhere (random init).

export_text_tower writes the text tower (encode_text, normalised) as ONNX and open_clip's
CLIP BPE tokenizer as a `tokenizers` tokenizer.json (clip_tokenizer). Archs whose open_clip
tokenizer is something else (Hugging Face tokenizers, SigLIP's) cannot export it yet.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import numpy as np

from core.errors import SpaceError
from core.spaces.base import Space

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


class TextTower(torch.nn.Module):
    """Token ids (B, context length) -> unit text embeddings: the graph that is exported."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model.encode_text(input_ids, normalize=True)


def _ftfy_normalizers() -> list:
    """The parts of open_clip's text cleaning (ftfy.fix_text, then html.unescape twice) that
    `tokenizers` normalizers can express, from ftfy's own tables. Not reproduced: ftfy's
    mojibake repair and HTML entities beyond the five common ones."""
    from ftfy import chardata
    from tokenizers import Regex, normalizers

    def table(mapping):
        return [normalizers.Replace(chr(code), text) for code, text in mapping.items()]

    control = "".join(chr(code) for code in sorted(chardata.CONTROL_CHARS))
    steps = table(chardata.LIGATURES) + table(chardata.WIDTH_MAP) + [
        normalizers.Replace(Regex(chardata.DOUBLE_QUOTE_RE.pattern), '"'),
        normalizers.Replace(Regex(chardata.SINGLE_QUOTE_RE.pattern), "'"),
        normalizers.Replace(Regex(f"[{re.escape(control)}]"), ""),
        normalizers.NFC(),
    ]
    entities = {"&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&amp;": "&"}
    return steps + 2 * [normalizers.Replace(name, char) for name, char in entities.items()]


def clip_tokenizer(arch: str, tokenizer):
    """open_clip's CLIP BPE tokenizer (`tokenizer`, of architecture `arch`) as a `tokenizers`
    Tokenizer with the same ids: cleaned and lower-cased, sot + BPE tokens + eot, truncated
    to the context length with eot kept last, padded with 0 to the context length."""
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    if not (isinstance(tokenizer, SimpleTokenizer) and tokenizer.clean_fn is _clean_lower
            and tokenizer.reduction_fn is None):
        raise SpaceError(
            f"open_clip architecture {arch!r} tokenizes with {type(tokenizer).__name__} (not the CLIP BPE "
            "tokenizer with lower-case cleaning), so its text tower cannot be exported for ONNX use yet"
        )
    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
    fast = Tokenizer(models.BPE(vocab=dict(tokenizer.encoder), merges=merges, end_of_word_suffix="</w>"))
    fast.normalizer = normalizers.Sequence(
        _ftfy_normalizers() + [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(), normalizers.Lowercase()]
    )
    # open_clip's word pattern (its special tokens come first, then "|"): the matches are
    # the words, the rest (whitespace) is dropped, as its re.findall does.
    specials = [tokenizer.decoder[i] for i in tokenizer.all_special_ids]
    words = tokenizer.pat.pattern[len("|".join(specials)) + 1:]
    fast.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(words), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    fast.add_special_tokens(specials)
    sot, eot = tokenizer.decoder[tokenizer.sot_token_id], tokenizer.decoder[tokenizer.eot_token_id]
    fast.post_processor = processors.TemplateProcessing(
        single=f"{sot} $A {eot}", special_tokens=[(sot, tokenizer.sot_token_id), (eot, tokenizer.eot_token_id)]
    )
    fast.enable_truncation(tokenizer.context_length)  # counts sot and eot: eot stays last
    fast.enable_padding(length=tokenizer.context_length, pad_id=0, pad_token=tokenizer.decoder[0])
    return fast


class OpenClipSpace(Space):
    """An open_clip CLIP model: text and image towers into one space."""

    has_images = True

    def __init__(self, arch: str, weights: str | None, name: str, cache_key: str | None, device: str = "cpu",
                 weights_is_file: bool = False):
        self.name, self.cache_key, self.device, self.arch = name, cache_key, device, arch
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
        self.text_tower = TextTower(self.model)
        self.preprocess = preprocess
        # The width of the shared space, read from the model itself rather than its config.
        self.dim = int(self._encode_text([""]).shape[-1])

    @torch.inference_mode()
    def _encode_text(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts).to(self.device)
        return self.text_tower(tokens).float().cpu().numpy()

    @torch.inference_mode()
    def _encode_images(self, images: list) -> np.ndarray:
        pixels = torch.stack([self.preprocess(im) for im in images]).to(self.device)
        return self.model.encode_image(pixels, normalize=True).float().cpu().numpy()

    def export_text_tower(self, onnx_path: Path, tokenizer_path: Path) -> None:
        from core.onnx_export import OUTPUT_NAME, export_module

        clip_tokenizer(self.arch, self.tokenizer).save(str(tokenizer_path))  # refuses other tokenizers first
        tokens = self.tokenizer(["a chair", "a wooden chair with two armrests"]).to(self.device)
        # The context length is fixed (positional embeddings and causal mask are sized to it).
        export_module(self.text_tower, {"input_ids": tokens}, onnx_path, {"input_ids": {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
