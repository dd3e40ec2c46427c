"""The model bundle: a directory that turns points into embeddings on its own.

    bundle.json        format version, space (name, dim), encoder config, points per
                       object, input channels, the ONNX files, provenance, `trained`
    encoder.onnx       points (B, N, 6) -> L2-normalised embedding (B, dim), fp32
    encoder.fp16.onnx  the same in float16 (optional; for GPUs)
    encoder.safetensors  the torch weights (float16), for fine-tuning with ulip2 retrain
    text/text.onnx     the space's text tower (optional): token ids (and attention mask)
                       -> L2-normalised text embedding (B, dim), fp32, dynamic batch
    text/tokenizer.json  its tokenizer for the HF `tokenizers` library, truncation and
                       padding included
    prompts.npz        prompt ensembles (ULIP's templates) of the shipped vocabularies'
                       class names in the bundle's space: "classnames", "vectors",
                       "templates" (optional; bundle.json's "prompts" names it). Tagging
                       with LVIS then embeds none of its 74k prompts. Bundles made before
                       kept it as text/prompts.npz under "text": it is read from there too.

With a text tower (bundle.json's optional "text" entry: "onnx", "tokenizer", and the
space's text-cache key), the bundle embeds texts without torch
(core.spaces.text_space_for_bundle); `ulip2 models add-text` adds one.
Reading a bundle needs neither torch nor the space's weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

from .errors import BundleError

FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
DEFAULT_BUNDLE_ENV = "ULIP2_BUNDLE"
# The default model, trained by training/recipes/default_model.py and shipped in the package.
SHIPPED_BUNDLE = Path(__file__).parent / "data" / "default_bundle"


class UntrainedBundleWarning(UserWarning):
    """The bundle's encoder has random weights: its embeddings carry no meaning."""


@dataclasses.dataclass(frozen=True)
class Bundle:
    path: Path
    space: str
    dim: int
    config: dict
    num_points: int
    channels: int
    files: dict  # "fp32" / "fp16" -> ONNX file name, "weights" -> torch weights
    trained: bool
    provenance: dict
    # "onnx", "tokenizer" -> file names; "cache_key" -> the space's text-cache key; None
    # for a bundle without a text tower (the key is optional in bundle.json).
    text: dict | None = None
    prompts: str | None = None  # prompts.npz, the carried prompt ensembles, or None

    @property
    def has_text(self) -> bool:
        return self.text is not None

    def carried_prompts(self, templates) -> dict:
        """class name -> prompt-ensemble vector from the bundle's prompts.npz, when it was made
        with these templates (else {}): no torch, no text tower needed."""
        if not self.prompts:
            return {}
        import numpy as np

        with np.load(self.path / self.prompts, allow_pickle=False) as data:
            if data["templates"].tolist() != list(templates):
                return {}
            return dict(zip(data["classnames"].tolist(), data["vectors"].astype(np.float32)))

    def text_file(self, what: str) -> Path:
        """The text tower's "onnx" or "tokenizer" file."""
        if self.text is None:
            raise BundleError(
                f"bundle {self.path} has no text tower; make a copy with one: "
                f"ulip2 models add-text {self.path} --out DIR"
            )
        return self.path / self.text[what]

    def onnx_path(self, precision: str = "fp32") -> Path:
        if precision not in self.files:
            raise BundleError(
                f"bundle {self.path} has no {precision} encoder (it has: {', '.join(sorted(self.files))}); "
                f"export one with: ulip2 export --out DIR --fp16"
            )
        return self.path / self.files[precision]

    def to_json(self) -> dict:
        meta = {
            "format_version": FORMAT_VERSION,
            "space": {"name": self.space, "dim": self.dim},
            "encoder": self.config,
            "num_points": self.num_points,
            "channels": self.channels,
            "files": self.files,
            "trained": self.trained,
            "provenance": self.provenance,
        }
        if self.text is not None:
            meta["text"] = {k: v for k, v in self.text.items() if k != "prompts"}
        if self.prompts:
            meta["prompts"] = self.prompts
        return meta


def write_bundle(bundle: Bundle) -> Path:
    """Write bundle.json atomically (the ONNX files must already be in place)."""
    target = bundle.path / BUNDLE_FILE
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(bundle.to_json(), indent=2) + "\n")
    os.replace(tmp, target)
    return target


def _text_entry(text) -> dict | None:
    """bundle.json's optional "text" entry, checked (KeyError/TypeError when malformed)."""
    if text is None:
        return None
    text = dict(text)
    if not (isinstance(text["onnx"], str) and isinstance(text["tokenizer"], str)):
        raise TypeError('"text" needs "onnx" and "tokenizer" file names')
    return text


def _prompts_entry(meta: dict) -> str | None:
    """The carried prompt ensembles' file: "prompts", or where older bundles kept it."""
    name = meta.get("prompts") or (meta.get("text") or {}).get("prompts")
    if name is not None and not isinstance(name, str):
        raise TypeError('"prompts" is a file name')
    return name


def bundle_path(path: str | os.PathLike) -> Path:
    """A bundle argument as a folder: the name `default` (when no such folder is here) is
    the bundle commands use when none is named ($ULIP2_BUNDLE, else the shipped one)."""
    if os.fspath(path) == "default" and not Path("default").exists():
        return default_bundle_path()
    return Path(path).expanduser()


def read_bundle(path: str | os.PathLike, *, warn_untrained: bool = True) -> Bundle:
    """Open the bundle at `path` (a directory, its bundle.json, or `default`) and check it is complete."""
    path = bundle_path(path)
    if path.name == BUNDLE_FILE:
        path = path.parent
    meta_file = path / BUNDLE_FILE
    if not meta_file.is_file():
        raise BundleError(f"{path}: not a model bundle (no {BUNDLE_FILE}); make one with: ulip2 export --out {path}")
    try:
        meta = json.loads(meta_file.read_text())
        version = meta["format_version"]
        if version > FORMAT_VERSION:
            raise BundleError(f"{meta_file}: format version {version} is newer than this ulip2 reads ({FORMAT_VERSION}); upgrade ulip2")
        bundle = Bundle(
            path=path.resolve(),
            space=meta["space"]["name"],
            dim=int(meta["space"]["dim"]),
            config=meta["encoder"],
            num_points=int(meta["num_points"]),
            channels=int(meta["channels"]),
            files=dict(meta["files"]),
            trained=bool(meta["trained"]),
            provenance=dict(meta.get("provenance", {})),
            text=_text_entry(meta.get("text")),
            prompts=_prompts_entry(meta),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{meta_file}: malformed bundle description ({type(exc).__name__}: {exc})") from exc
    text_files = [bundle.text[k] for k in ("onnx", "tokenizer")] if bundle.text else []
    needed = [*bundle.files.values(), *text_files, *([bundle.prompts] if bundle.prompts else [])]
    missing = [name for name in needed if not (bundle.path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: bundle is incomplete, missing {', '.join(missing)}; re-export it")
    if warn_untrained and not bundle.trained:
        warnings.warn(
            f"model bundle {bundle.path} is untrained (random weights): its embeddings carry no meaning; "
            "export one from a checkpoint with: ulip2 export --checkpoint CKPT",
            UntrainedBundleWarning,
            stacklevel=2,
        )
    return bundle


def default_bundle_path() -> Path:
    """The bundle used when none is named: $ULIP2_BUNDLE, else the one shipped with ulip2."""
    env = os.environ.get(DEFAULT_BUNDLE_ENV)
    if env:
        return Path(env).expanduser()
    if (SHIPPED_BUNDLE / BUNDLE_FILE).is_file():
        return SHIPPED_BUNDLE
    raise BundleError(
        "no model bundle given and none is shipped with this install yet; "
        f"pass --bundle DIR, set {DEFAULT_BUNDLE_ENV}, or make one with: ulip2 export --out DIR"
    )
