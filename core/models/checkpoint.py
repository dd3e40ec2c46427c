"""Weights onto the Point-BERT encoder, every key and shape checked.

Two formats:
- the released ULIP-2 checkpoint (e.g. ULIP-2-PointBERT-10k-xyzrgb-pc-vit_g-objaverse_shapenet-pretrained.pt):
  a dict whose `state_dict` holds `module.point_encoder.*` (the Point-BERT, same names
  as ours), `module.pc_projection` (768 x 1280, applied as x @ P), `module.logit_scale`,
  and possibly `module.open_clip_model.*` (the frozen space, loaded separately by ulip2);
- ulip2's own encoder file: a safetensors state dict of this module (training writes it).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from ..errors import CheckpointError

_ULIP2_POINT_PREFIX = "point_encoder."
_ULIP2_PROJECTION = "pc_projection"
# Parts of a ULIP-2 checkpoint that are not the 3D encoder.
_ULIP2_IGNORED_PREFIXES = ("open_clip_model.", "logit_scale")


def _strip_module(state: dict) -> dict:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def is_ulip2_state(state: dict) -> bool:
    return any(k.startswith(_ULIP2_POINT_PREFIX) for k in _strip_module(state))


def map_ulip2_state(state: dict) -> dict:
    """A ULIP-2 checkpoint's state dict -> this encoder's state dict names."""
    mapped, unknown = {}, []
    for key, value in _strip_module(state).items():
        if key.startswith(_ULIP2_POINT_PREFIX):
            mapped[key[len(_ULIP2_POINT_PREFIX):]] = value
        elif key == _ULIP2_PROJECTION:
            mapped["projection.weight"] = value.t().contiguous()  # x @ P == Linear with weight P^T
        elif not key.startswith(_ULIP2_IGNORED_PREFIXES):
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"ULIP-2 checkpoint has keys that are not part of its 3D encoder: {unknown[:8]}")
    return mapped


def load_state_checked(model: torch.nn.Module, state: dict, source: str) -> None:
    """Load `state` into `model`, failing with every missing, unexpected and mis-shaped key named."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        lines = [f"{source} does not fit encoder config {model.config.name!r}:"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(missing[:10])}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {', '.join(unexpected[:10])}")
        lines += [f"  shape {s}" for s in shapes[:10]]
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=True)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The raw state dict from a .safetensors file or a torch .pt/.pth checkpoint."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        # weights_only: a checkpoint is data, never code to run. ULIP-2's main.py also saves
        # its argparse.Namespace (`args`) in the checkpoint: allow that one plain-data class.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many kinds for a bad file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (or a dict with 'state_dict'), found {type(obj).__name__}")
    return obj


def load_encoder_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a ULIP-2 release checkpoint or a ulip2 encoder file into `model`, strictly."""
    state = read_checkpoint(path)
    if is_ulip2_state(state):
        state = map_ulip2_state(state)
    load_state_checked(model, state, str(path))
