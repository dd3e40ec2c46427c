"""BLIP and BLIP-2 captioners through transformers (torch).

Both take a hub id or a local folder holding the model and its processor. A hub id whose
weights are in the local Hugging Face cache loads from there without asking the hub. K
candidates per image come from nucleus sampling (top_p 0.9), as ULIP-2 generates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.captioners.base import DEFAULT_MODELS, Captioner, CaptionerError, on_white

ALTERNATIVES = (
    "alternatives: '--captioner metadata' (offline, not a vision model), '--captioner blip' "
    "(Salesforce/blip-image-captioning-large, about 1.8 GB), or --captioner-model "
    "/path/to/a/downloaded/model (a folder saved with save_pretrained)"
)
TOP_P = 0.9
MAX_NEW_TOKENS = 30
# Seconds the hub may take to answer whether a model is there before it counts as unreachable
# (transformers itself retries a dead connection for minutes).
HUB_TIMEOUT_S = 10


def _fetch(model: str) -> str:
    return f"fetch them on a machine with network: 'hf download {model}', then copy its $HF_HOME/hub here"


def _cached(name: str, model: str) -> bool:
    """Whether the hub id `model` has its config in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except HFValidationError:
        raise CaptionerError(f"{model}: no such folder, nor a hub id (like {DEFAULT_MODELS[name]}); "
                             f"{ALTERNATIVES}") from None


def _check_hub(name: str, model: str) -> None:
    """Raise CaptionerError at once when the uncached `model` cannot be downloaded: the hub is
    marked offline (HF_HUB_OFFLINE), or does not answer within HUB_TIMEOUT_S."""
    from huggingface_hub import constants, model_info

    where = f"the {name} captioner's weights {model!r} are not in the Hugging Face cache ({constants.HF_HUB_CACHE})"
    if constants.HF_HUB_OFFLINE:
        raise CaptionerError(f"{where} and the hub is marked offline (HF_HUB_OFFLINE); {_fetch(model)}; "
                             f"{ALTERNATIVES}")
    try:
        model_info(model, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # the hub client raises its HTTP library's errors, not OSError
        raise CaptionerError(f"{where} and {constants.ENDPOINT} cannot give them ({type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:200]}); {_fetch(model)}; {ALTERNATIVES}") from None


class HFCaptioner(Captioner):
    def __init__(self, name: str, model: str, *, device: str = "cpu", batch_size: int = 4):
        try:
            # Where the weights come from is settled first: in seconds, and before torch loads.
            local = Path(model).expanduser().is_dir() or _cached(name, model)
            if not local:
                _check_hub(name, model)
            import torch
            import transformers
        except ImportError as exc:
            raise CaptionerError(f"the {name} captioner needs torch and transformers ({exc}); "
                                 f"install them with: pip install 'ulip2[torch]'; {ALTERNATIVES}") from exc
        model_class = {"blip2": transformers.Blip2ForConditionalGeneration,
                       "blip": transformers.BlipForConditionalGeneration}[name]
        self.name, self.model, self.device, self.batch_size = name, model, device, batch_size
        self._torch = torch
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(model, local_files_only=local)
            dtype = torch.float16 if device.startswith("cuda") else torch.float32
            self.net = model_class.from_pretrained(model, dtype=dtype, local_files_only=local).to(device).eval()
        except (OSError, ValueError) as exc:  # transformers reports a missing/offline model as OSError
            cause = " ".join(str(exc).split())
            raise CaptionerError(f"cannot load the {name} captioner's weights {model!r} ({cause}); "
                                 f"{_fetch(model)}; {ALTERNATIVES}") from exc

    def caption(self, images: Sequence, k: int, *, facts: dict | None = None) -> list[list[str]]:
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = [on_white(im) for im in images[start:start + self.batch_size]]
            inputs = self.processor(images=batch, return_tensors="pt").to(self.device, self.net.dtype)
            with self._torch.inference_mode():
                tokens = self.net.generate(**inputs, do_sample=True, top_p=TOP_P, num_return_sequences=k,
                                           max_new_tokens=MAX_NEW_TOKENS)
            texts = [t.strip() for t in self.processor.batch_decode(tokens, skip_special_tokens=True)]
            # generate returns the k samples of each image consecutively.
            out.extend(texts[i * k:(i + 1) * k] for i in range(len(batch)))
        # An empty decode (only special tokens sampled) is no candidate at all.
        return [[t for t in view if t] for view in out]
