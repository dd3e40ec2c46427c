"""ULIP-2's loss: contrastive(points, text) + contrastive(points, image), symmetric
cross-entropy with a learnable temperature, features gathered across ranks."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = 100.0


class LogitScale(nn.Module):
    """exp(s) with s learnable, initialised at log(1/0.07); the trainer clamps s itself into
    [0, log 100] after each step (ULIP's and CLIP's recipe), so s never drifts past the cap
    where a clamp in forward() would leave it with no gradient."""

    def __init__(self):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_scale.clamp_(0.0, math.log(LOGIT_SCALE_MAX))


def gather_batch(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank in rank order; the local slice keeps its gradient
    (all_gather copies carry none), so each rank back-propagates through its own rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)


def _symmetric_ce(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    logits = scale * a @ b.t()
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def contrastive_loss(points: torch.Tensor, text: torch.Tensor, image: torch.Tensor | None,
                     scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss over the global batch: each rank passes its local rows (unit vectors).

    Every rank computes the same global loss but back-propagates only through its own rows,
    and DDP averages gradients over ranks: the trainer multiplies the loss by the world size
    so the update equals the single-process one on the same global batch.
    """
    points, text = gather_batch(points.float()), gather_batch(text.float())
    out = {"loss_text": _symmetric_ce(points, text, scale)}
    if image is not None:
        out["loss_image"] = _symmetric_ce(points, gather_batch(image.float()), scale)
    out["loss"] = sum(out.values())
    return out
