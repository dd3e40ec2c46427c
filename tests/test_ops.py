"""Point grouping ops (core/models/ops.py) against brute-force float64 numpy references."""

import numpy as np
import pytest
import torch

from core.models.ops import farthest_point_sample, gather_points, group_points, knn_indices


def fps_reference(xyz: np.ndarray, n: int) -> list[int]:
    """Farthest point sampling, the textbook way: start at 0, then repeatedly take the point
    farthest (squared Euclidean, float64) from the chosen set."""
    xyz = xyz.astype(np.float64)
    chosen = [0]
    nearest = ((xyz - xyz[0]) ** 2).sum(-1)
    for _ in range(n - 1):
        j = int(np.argmax(nearest))
        chosen.append(j)
        nearest = np.minimum(nearest, ((xyz - xyz[j]) ** 2).sum(-1))
    return chosen


def knn_reference(points: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    d = ((queries[:, None, :].astype(np.float64) - points[None].astype(np.float64)) ** 2).sum(-1)
    return [set(np.argsort(row, kind="stable")[:k].tolist()) for row in d]


@pytest.mark.parametrize("batch,n_points,n_samples", [(1, 64, 8), (3, 500, 64), (2, 2048, 128)])
def test_fps_matches_bruteforce(rng, batch, n_points, n_samples):
    clouds = rng.normal(size=(batch, n_points, 3)).astype(np.float32)
    got = farthest_point_sample(torch.from_numpy(clouds), n_samples)
    assert got.shape == (batch, n_samples)
    assert got.dtype == torch.long
    for b in range(batch):
        assert got[b].tolist() == fps_reference(clouds[b], n_samples), f"batch element {b}"


def test_fps_starts_at_zero_and_picks_distinct_points(rng):
    clouds = rng.uniform(-1, 1, size=(4, 300, 3)).astype(np.float32)
    idx = farthest_point_sample(torch.from_numpy(clouds), 50)
    assert (idx[:, 0] == 0).all()
    for row in idx:
        assert len(set(row.tolist())) == 50


def test_fps_batch_elements_are_independent(rng):
    """Each cloud's samples depend on that cloud only, not on its batch neighbours."""
    clouds = torch.from_numpy(rng.normal(size=(3, 400, 3)).astype(np.float32))
    together = farthest_point_sample(clouds, 32)
    for b in range(3):
        assert torch.equal(together[b], farthest_point_sample(clouds[b:b + 1], 32)[0])


def test_fps_first_pick_is_farthest_from_point_zero():
    xyz = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [5, 0, 0], [2, 2, 0], [-3, 0, 0]]])
    # squared distance to {0}: 1, 25, 8, 9 -> take 2; to {0, 2}: 1, -, 8, 9 -> take 4
    assert farthest_point_sample(xyz, 3).tolist() == [[0, 2, 4]]


@pytest.mark.parametrize("batch,n_points,n_queries,k", [(1, 100, 10, 5), (3, 600, 40, 32)])
def test_knn_matches_bruteforce(rng, batch, n_points, n_queries, k):
    points = rng.normal(size=(batch, n_points, 3)).astype(np.float32)
    queries = rng.normal(size=(batch, n_queries, 3)).astype(np.float32)
    got = knn_indices(torch.from_numpy(points), torch.from_numpy(queries), k)
    assert got.shape == (batch, n_queries, k)
    for b in range(batch):
        expected = knn_reference(points[b], queries[b], k)
        assert [set(row) for row in got[b].tolist()] == expected


def test_gather_points_matches_numpy_indexing(rng):
    points = rng.normal(size=(3, 50, 6)).astype(np.float32)
    idx2 = rng.integers(0, 50, size=(3, 7))
    idx3 = rng.integers(0, 50, size=(3, 4, 5))
    for idx in (idx2, idx3):
        got = gather_points(torch.from_numpy(points), torch.from_numpy(idx)).numpy()
        expected = np.stack([points[b][idx[b]] for b in range(3)])
        assert got.shape == idx.shape + (6,)
        np.testing.assert_array_equal(got, expected)


def test_group_points_shapes_centring_and_colours(rng):
    batch, n, groups, k = 2, 400, 24, 16
    points = rng.normal(size=(batch, n, 6)).astype(np.float32)
    points[..., 3:] = rng.uniform(0, 1, size=(batch, n, 3))
    neighbourhoods, centres = group_points(torch.from_numpy(points), groups, k)
    assert neighbourhoods.shape == (batch, groups, k, 6)
    assert centres.shape == (batch, groups, 3)
    neighbourhoods, centres = neighbourhoods.numpy(), centres.numpy()
    for b in range(batch):
        fps = fps_reference(points[b, :, :3], groups)
        np.testing.assert_array_equal(centres[b], points[b, fps, :3])
        for g in range(groups):
            absolute = neighbourhoods[b, g, :, :3] + centres[b, g]
            # each neighbour is a real point: find it by xyz, and its rgb must be that point's rgb
            d = ((absolute[:, None, :] - points[b, None, :, :3]) ** 2).sum(-1)
            members = d.argmin(1)
            assert d.min(1).max() < 1e-10
            np.testing.assert_array_equal(neighbourhoods[b, g, :, 3:], points[b, members, 3:])
            assert set(members.tolist()) == knn_reference(points[b, :, :3], centres[b, g:g + 1], k)[0]
            # the centre belongs to its own group, at local position 0
            assert fps[g] in set(members.tolist())
            assert np.abs(neighbourhoods[b, g, :, :3]).sum(-1).min() == 0.0


def test_group_points_keeps_xyz_only_clouds(rng):
    points = torch.from_numpy(rng.normal(size=(1, 100, 3)).astype(np.float32))
    neighbourhoods, centres = group_points(points, 8, 4)
    assert neighbourhoods.shape == (1, 8, 4, 3)


def test_fps_onnx_form_matches_eager(tmp_path, rng):
    """The hand-written ONNX form of FPS (used only during export) picks the same points as the
    eager loop, for a batch size and point count other than the ones exported with."""
    import onnxruntime as ort

    class Fps(torch.nn.Module):
        def forward(self, xyz):
            return farthest_point_sample(xyz, 24)

    path = tmp_path / "fps.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Fps(), (torch.rand(2, 100, 3),), str(path), dynamo=False, input_names=["xyz"],
                          output_names=["idx"], dynamic_axes={"xyz": {0: "b", 1: "n"}}, opset_version=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    clouds = rng.normal(size=(3, 700, 3)).astype(np.float32)
    got = session.run(None, {"xyz": clouds})[0]
    assert got.shape == (3, 24)
    for b in range(3):
        assert got[b].tolist() == fps_reference(clouds[b], 24)
