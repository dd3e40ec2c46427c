"""The 3D encoder (torch). Configs are data (core/model_configs/*.json); one factory builds them."""

from __future__ import annotations

from .config import EncoderConfig, get_config, list_configs


def create_encoder(config: str | EncoderConfig, *, embed_dim: int | None = None, seed: int | None = None):
    """Build a Point-BERT encoder from a config name or object, optionally re-targeting its
    projection to `embed_dim` (the dimension of the space it is aligned to)."""
    import torch

    from .pointbert import PointBERT

    cfg = get_config(config) if isinstance(config, str) else config
    if embed_dim is not None:
        cfg = cfg.with_embed_dim(embed_dim)
    if seed is not None:
        torch.manual_seed(seed)
    return PointBERT(cfg)


__all__ = ["EncoderConfig", "create_encoder", "get_config", "list_configs"]
