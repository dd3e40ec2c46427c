"""Point grouping in plain torch ops that export to ONNX.

The CUDA kernels Point-BERT normally uses (pointnet2_ops FPS, knn_cuda) do not export;
these do, and follow the same conventions (FPS starts at index 0, as the kernel does).
"""

from __future__ import annotations

import torch


def _distance_operands(xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (B, N, 5) and columns (B, 5, N) with row_i @ cols = |p_i - p_j|^2 for every j.

    Folding |c|^2 - 2 c.p + |p|^2 into one small matmul makes each FPS step four ops
    (gather a row, matmul, min, argmax): the step count (512), not the arithmetic, is what
    costs at 10k points.
    """
    sq = (xyz * xyz).sum(-1, keepdim=True)
    ones = torch.ones_like(sq)
    rows = torch.cat([-2.0 * xyz, ones, sq], dim=-1)
    cols = torch.cat([xyz, sq, ones], dim=-1).transpose(1, 2).contiguous()
    return rows, cols


def _fps_eager(xyz: torch.Tensor, n_samples: int) -> torch.Tensor:
    rows, cols = _distance_operands(xyz)
    farthest = torch.zeros((xyz.shape[0], 1, 1), dtype=torch.long, device=xyz.device)
    chosen = [farthest]
    nearest = torch.bmm(rows[:, :1], cols)  # (B, 1, N) squared distance to the chosen set
    for step in range(n_samples - 1):
        farthest = nearest.argmax(-1, keepdim=True)
        chosen.append(farthest)
        if step < n_samples - 2:
            row = torch.gather(rows, 1, farthest.expand(-1, -1, rows.shape[-1]))
            nearest = torch.minimum(nearest, torch.bmm(row, cols))
    return torch.cat(chosen, dim=1).view(xyz.shape[0], n_samples)


class _FarthestPointSample(torch.autograd.Function):
    """FPS with a hand-written ONNX form: the traced form of the loop carries shape
    bookkeeping around every step (5x the nodes); this one is exactly the four ops."""

    @staticmethod
    def forward(ctx, xyz, n_samples):
        return _fps_eager(xyz, n_samples)

    @staticmethod
    def symbolic(g, xyz, n_samples):
        def const(value, dtype=torch.int64):
            return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))

        sq = g.op("ReduceSum", g.op("Mul", xyz, xyz), const([-1]), keepdims_i=1)
        ones = g.op("Expand", const([1.0], torch.float32), g.op("Shape", sq))
        rows = g.op("Concat", g.op("Mul", xyz, const(-2.0, torch.float32)), ones, sq, axis_i=-1)
        cols = g.op("Transpose", g.op("Concat", xyz, sq, ones, axis_i=-1), perm_i=[0, 2, 1])
        batch = g.op("Slice", g.op("Shape", xyz), const([0]), const([1]))
        farthest = g.op(
            "ConstantOfShape",
            g.op("Concat", batch, const([1, 1]), axis_i=0),
            value_t=torch.tensor([0], dtype=torch.int64),
        )
        chosen = [farthest]
        nearest = g.op("MatMul", g.op("Slice", rows, const([0]), const([1]), const([1])), cols)
        for step in range(n_samples - 1):
            farthest = g.op("ArgMax", nearest, axis_i=2, keepdims_i=1)
            chosen.append(farthest)
            if step < n_samples - 2:
                row = g.op("GatherND", rows, farthest, batch_dims_i=1)
                nearest = g.op("Min", nearest, g.op("MatMul", row, cols))
        return g.op("Reshape", g.op("Concat", *chosen, axis_i=1), g.op("Concat", batch, const([n_samples]), axis_i=0))


def farthest_point_sample(xyz: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Indices (B, n_samples) of farthest point sampling over xyz (B, N, 3), starting at point 0."""
    if torch.onnx.is_in_onnx_export():
        return _FarthestPointSample.apply(xyz, n_samples)
    return _fps_eager(xyz, n_samples)


def knn_indices(points: torch.Tensor, queries: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (B, M, k) of the k nearest points (B, N, 3) to each query (B, M, 3); order within k is not defined."""
    dist = (
        (queries * queries).sum(-1, keepdim=True)
        - 2.0 * torch.bmm(queries, points.transpose(1, 2))
        + (points * points).sum(-1).unsqueeze(1)
    )
    return torch.topk(dist, k, dim=-1, largest=False, sorted=False).indices


def gather_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """points (B, N, C) indexed by idx (B, ...) -> (B, ..., C), via a flat index (exports as one Gather)."""
    batch, n_points, channels = points.shape
    offset = (torch.arange(batch, device=points.device) * n_points).view((-1,) + (1,) * (idx.dim() - 1))
    flat = points.reshape(-1, channels)[(idx + offset).reshape(-1)]
    return flat.view(idx.shape + (channels,))


def group_points(points: torch.Tensor, num_group: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split points (B, N, C>=3) into FPS-centred kNN groups, as Point-BERT does.

    Returns neighbourhoods (B, G, K, C) with xyz relative to the group centre and the
    other channels (rgb) as they are, and the centres (B, G, 3).
    """
    xyz = points[..., :3]
    centres = gather_points(xyz, farthest_point_sample(xyz, num_group))
    neighbours = gather_points(points, knn_indices(xyz, centres, group_size))
    local_xyz = neighbours[..., :3] - centres.unsqueeze(2)
    return torch.cat([local_xyz, neighbours[..., 3:]], dim=-1), centres
