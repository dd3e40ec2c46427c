"""The canonical frame at inference: which way is up, estimated from the points alone.

OBJ, STL and PLY do not say which axis is up, and studios save them y-up or z-up (and now
and then x-up). An encoder trained with the up axis turned at random learns furniture half
as well as one trained upright (Sweet Home 3D's validation top-1: 0.20 against 0.43), so
the encoder is trained y-up and each cloud is turned upright before it is embedded.

How: for each of three candidate ups (the conventions: y-up, z-up, x-up), the cloud is
described as seen with that axis up (core.upright.describe: how its points spread by
height and across the axis, which does not change when it turns about that axis); a small
scorer rates each description for how upright it looks, and the best-rated axis is turned
onto +y by the inverse of the turn its file convention made, so a file saved z-up comes
back to the very frame of its y-up twin. Only these frames are corrected: a mesh saved
upside down or tilted stays so. The scorer is right on about 4 clouds in 5 (figures in
the README); where it is wrong the encoder sees the cloud lying down.

The scorer's weights are a bundle's upright.npz (arrays only, read without pickle): a
multilayer perceptron "w1" (F, H), "b1" (H,), "w2" (H, H), "b2" (H,), "w3" (H,), "b3" (),
and "bins" (2,) = height bins, distance bins, F = features(bins). training/upright.py fits
it. numpy only: the extension and the desktop app run this.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import BundleError
from .sampling import unit_sphere

UPRIGHT_FILE = "upright.npz"
#: The candidate up directions, the conventions files are saved in: as read (+y), z-up
#: (a y-up reader sees the up on +z) and x-up. A file saved upside down is not corrected.
UPS = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32)
#: For each candidate, the rotation taking it onto +y: the inverse of the turn a y-up
#: reader sees in a file saved with that axis up, so a z-up file comes back exactly.
TURNS = np.array([
    np.eye(3),
    [[1, 0, 0], [0, 0, 1], [0, -1, 0]],   # +z up: (x, y, z) -> (x, z, -y), as Blender's y_up
    [[0, -1, 0], [1, 0, 0], [0, 0, 1]],   # +x up: (x, y, z) -> (-y, x, z)
], dtype=np.float32)
HEIGHT_BINS, DISTANCE_BINS = 16, 8
ARRAYS = ("w1", "b1", "w2", "b2", "w3", "b3", "bins")


def features(bins: tuple[int, int]) -> int:
    """How many numbers describe() gives per candidate."""
    return bins[0] * bins[1] + 4 * bins[0]


def describe(xyz: np.ndarray, bins: tuple[int, int] = (HEIGHT_BINS, DISTANCE_BINS)) -> np.ndarray:
    """(B, N, 3) clouds (centred and scaled into the unit sphere here) -> (B, len(UPS),
    features(bins)): for each
    candidate up, the share of points in each (height, distance from the axis) cell, and for
    each height slice its share of points, the offset of its centre from the axis and the
    two spreads of its points across the axis (the square roots of its 2x2 covariance's
    eigenvalues). Each is unchanged when the cloud turns about the candidate axis."""
    heights, distances = bins
    xyz = unit_sphere(np.asarray(xyz)[..., :3])  # whatever the scale the caller has
    turned = np.einsum("kij,bnj->bkni", TURNS, xyz)  # candidate up on +y
    b, k, n = turned.shape[:3]
    u, h, v = turned[..., 0], turned[..., 1], turned[..., 2]
    hb = np.clip(((h + 1) * (heights / 2)).astype(np.int64), 0, heights - 1)
    rb = np.clip((np.sqrt(u * u + v * v) * distances).astype(np.int64), 0, distances - 1)
    cloud = np.arange(b * k).reshape(b, k, 1)
    cells = heights * distances
    hist = np.bincount((cloud * cells + hb * distances + rb).ravel(), minlength=b * k * cells).reshape(b, k, cells)
    slices = (cloud * heights + hb).ravel()

    def per_slice(values: np.ndarray) -> np.ndarray:
        return np.bincount(slices, weights=values.ravel(), minlength=b * k * heights).reshape(b, k, heights)

    count = per_slice(np.ones_like(u))
    safe = np.maximum(count, 1)
    mu, mv = per_slice(u) / safe, per_slice(v) / safe
    cuu, cvv, cuv = per_slice(u * u) / safe - mu * mu, per_slice(v * v) / safe - mv * mv, per_slice(u * v) / safe - mu * mv
    half_trace = (cuu + cvv) / 2
    spread = np.sqrt(np.maximum(half_trace ** 2 - (cuu * cvv - cuv * cuv), 0))
    wide, narrow = (np.sqrt(np.maximum(half_trace + sign * spread, 0)) for sign in (1, -1))
    # scaled so that each kind of number is of order 1 (the shares are ~1/cells each)
    return np.concatenate([hist * (cells / max(n, 1)), count * (heights / max(n, 1)),
                           4 * np.sqrt(mu * mu + mv * mv), 4 * wide, 4 * narrow], -1).astype(np.float32)


class Upright:
    """A bundle's up-axis scorer: `turn(points)` puts each cloud's estimated up onto +y."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = {k: np.asarray(arrays[k], np.float32) for k in ARRAYS if k != "bins"}
        self.bins = tuple(int(v) for v in np.asarray(arrays["bins"]).reshape(-1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Upright:
        try:
            with np.load(path, allow_pickle=False) as data:
                scorer = cls({k: data[k] for k in ARRAYS})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{path}: not an up-axis scorer ({exc}); re-export the bundle "
                              "or drop its \"upright\" entry") from None
        a = scorer.arrays
        if (len(scorer.bins) != 2 or min(scorer.bins) < 1 or a["w1"].ndim != 2
                or a["w1"].shape[0] != features(scorer.bins)
                or a["b1"].shape != a["w1"].shape[1:] or a["w2"].shape != (len(a["b1"]),) * 2
                or a["b2"].shape != a["b1"].shape or a["w3"].shape != a["b1"].shape or a["b3"].shape != ()):
            shapes = ", ".join(f"{k} {v.shape}" for k, v in a.items())
            raise BundleError(f"{path}: its arrays do not fit together ({shapes}, bins {scorer.bins}); "
                              "re-export the bundle")
        return scorer

    def save(self, path: str | os.PathLike) -> None:
        np.savez(path, bins=np.array(self.bins), **self.arrays)

    def scores(self, xyz: np.ndarray) -> np.ndarray:
        """(B, len(UPS)): how upright each cloud looks with each candidate up."""
        a = self.arrays
        hidden = np.maximum(describe(xyz, self.bins) @ a["w1"] + a["b1"], 0.0)
        hidden = np.maximum(hidden @ a["w2"] + a["b2"], 0.0)
        return hidden @ a["w3"] + a["b3"]

    def ups(self, xyz: np.ndarray) -> np.ndarray:
        """(B,) index into UPS of each cloud's estimated up."""
        return self.scores(xyz).argmax(axis=1)

    def turn(self, points: np.ndarray) -> np.ndarray:
        """(B, N, C) points -> a copy with each cloud turned upright about the origin (normals
        too, when C >= 9)."""
        out = np.array(points, dtype=np.float32, copy=True)
        turns = TURNS[self.ups(out[..., :3])]                        # (B, 3, 3)
        for start in (0, 6) if out.shape[-1] >= 9 else (0,):
            out[..., start:start + 3] = np.einsum("bij,bnj->bni", turns, out[..., start:start + 3])
        return out
