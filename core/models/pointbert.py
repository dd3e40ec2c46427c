"""The ULIP-2 Point-BERT encoder in plain torch.

Module and parameter names follow the ULIP repository's PointTransformer_Colored so the
released checkpoint maps onto it key for key (see checkpoint.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from .config import EncoderConfig
from .ops import group_points


class GroupEncoder(nn.Module):
    """Mini-PointNet: each group of K points -> one feature vector (shared MLP, max-pool twice)."""

    def __init__(self, in_channels: int, out_channels: int, dims: tuple[int, int, int] = (128, 256, 512)):
        super().__init__()
        a, b, c = dims
        self.out_channels = out_channels
        # Point-BERT's layout, kept so its checkpoints load by name (forward uses the ReLUs' slots as F.relu).
        self.first_conv = nn.Sequential(
            nn.Conv1d(in_channels, a, 1), nn.BatchNorm1d(a), nn.ReLU(inplace=True), nn.Conv1d(a, b, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * b, c, 1), nn.BatchNorm1d(c), nn.ReLU(inplace=True), nn.Conv1d(c, out_channels, 1)
        )

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        # The 1x1 convolutions run as matmuls on channel-last rows (the same weights, so
        # Point-BERT checkpoints load), and the first layer of the second MLP is split,
        # W [pooled; x] = W_p pooled + W_x x, so the pooled half is applied once per group
        # rather than once per point: 1.6x a training step on a CPU.
        batch, n_groups, k, channels = groups.shape
        conv1, norm1, _, conv2 = self.first_conv
        conv3, norm2, _, conv4 = self.second_conv
        x = _pointwise(conv1, groups.reshape(batch * n_groups * k, channels))
        x = _pointwise(conv2, F.relu(norm1(x))).reshape(batch * n_groups, k, -1)
        width = x.shape[-1]
        w = conv3.weight[..., 0]
        x = F.linear(x, w[:, width:]) + F.linear(x.max(dim=1).values, w[:, :width], conv3.bias)[:, None]
        x = _pointwise(conv4, F.relu(norm2(x.reshape(batch * n_groups * k, -1))))
        return x.reshape(batch * n_groups, k, -1).max(dim=1).values.reshape(batch, n_groups, self.out_channels)


def _pointwise(conv: nn.Conv1d, rows: torch.Tensor) -> torch.Tensor:
    """A kernel-1 Conv1d applied to (rows, channels)."""
    return F.linear(rows, conv.weight[..., 0], conv.bias)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=False)  # no qkv bias, as in Point-BERT
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * 4)
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, drop_path_rate: float):
        super().__init__()
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(Block(dim, num_heads, r) for r in rates)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        # Point-BERT adds the positional embedding before every block, not only the first.
        for block in self.blocks:
            x = block(x + pos)
        return x


class PointBERT(nn.Module):
    """Points (B, N, C) -> L2-normalised embedding (B, embed_dim) in the target space.

    Points come centred and scaled to the unit sphere (core's sampler makes them so, and
    core.runtime.PointEncoder normalises whatever else it is given). The model does not
    normalise them again: that would undo the scale augmentation of training, as ULIP's
    models leave it to the data.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        dim = config.trans_dim
        self.encoder = GroupEncoder(config.in_channels, config.encoder_dims, config.group_dims)
        self.reduce_dim = nn.Linear(config.encoder_dims, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))
        self.blocks = TransformerEncoder(dim, config.depth, config.num_heads, config.drop_path_rate)
        self.norm = nn.LayerNorm(dim)
        self.projection = nn.Linear(config.feat_dim, config.embed_dim, bias=False)
        nn.init.normal_(self.projection.weight, std=config.embed_dim**-0.5)

    def features(self, points: torch.Tensor) -> torch.Tensor:
        """The un-projected [cls, max-pool] features (B, 2 * trans_dim)."""
        points = points[..., : self.config.in_channels]
        groups, centres = group_points(points, self.config.num_group, self.config.group_size)
        tokens = self.reduce_dim(self.encoder(groups))
        batch = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        pos = torch.cat([self.cls_pos.expand(batch, -1, -1), self.pos_embed(centres)], dim=1)
        x = self.norm(self.blocks(x, pos))
        return torch.cat([x[:, 0], x[:, 1:].max(dim=1).values], dim=-1)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.features(points)), dim=-1)
