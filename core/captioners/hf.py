"""BLIP and BLIP-2 captioners through transformers (torch).

Both take a hub id or a local folder holding the model and its processor. K candidates
per image come from nucleus sampling (top_p 0.9), as ULIP-2 generates them.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.captioners import Captioner, CaptionerError

ALTERNATIVES = (
    "alternatives: '--captioner metadata' (offline, not a vision model), '--captioner blip' "
    "(Salesforce/blip-image-captioning-large, about 1.8 GB), or --captioner-model "
    "/path/to/a/downloaded/model (a folder saved with save_pretrained)"
)
TOP_P = 0.9
MAX_NEW_TOKENS = 30


class HFCaptioner(Captioner):
    def __init__(self, name: str, model: str, *, device: str = "cpu", batch_size: int = 4):
        try:
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
            self.processor = transformers.AutoProcessor.from_pretrained(model)
            dtype = torch.float16 if device.startswith("cuda") else torch.float32
            self.net = model_class.from_pretrained(model, dtype=dtype).to(device).eval()
        except (OSError, ValueError) as exc:  # transformers reports a missing/offline model as OSError
            raise CaptionerError(
                f"cannot load the {name} captioner's weights {model!r}: not cached and cannot be "
                f"downloaded here (offline?), or not a {name} model.\n{ALTERNATIVES}\ncause: {exc}"
            ) from exc

    def caption(self, images: Sequence, k: int, *, facts: dict | None = None) -> list[list[str]]:
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = list(images[start:start + self.batch_size])
            inputs = self.processor(images=batch, return_tensors="pt").to(self.device, self.net.dtype)
            with self._torch.inference_mode():
                tokens = self.net.generate(**inputs, do_sample=True, top_p=TOP_P, num_return_sequences=k,
                                           max_new_tokens=MAX_NEW_TOKENS)
            texts = [t.strip() for t in self.processor.batch_decode(tokens, skip_special_tokens=True)]
            # generate returns the k samples of each image consecutively.
            out.extend(texts[i * k:(i + 1) * k] for i in range(len(batch)))
        # An empty decode (only special tokens sampled) is no candidate at all.
        return [[t for t in view if t] for view in out]
