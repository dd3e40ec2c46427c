"""Point cloud augmentation for training (ULIP's: rotation about the up axis, scale,
jitter, point dropout; plus rgb dropout, since colour is an input channel here, and a
random frame: studios' files are y-up or z-up, and OBJ/STL/PLY do not say which).

Every random draw comes from a generator the caller seeds per (seed, epoch, sample), so a
resumed or multi-process run sees exactly the same augmented points.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from core.sampling import DEFAULT_GREY
from core.upright import TURNS

UP_AXES = {"x": 0, "y": 1, "z": 2}


def _axis_rotations() -> np.ndarray:
    """The 24 rotations that map axes onto axes (signed permutations with determinant +1):
    4 for each of the 6 directions the up axis can land on."""
    import itertools

    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            if np.linalg.det(m) > 0:
                out.append(m)
    return np.array(out, dtype=np.float32)


AXIS_ROTATIONS = _axis_rotations()


@dataclasses.dataclass(frozen=True)
class Augment:
    up: str = "y"  # glTF and OBJ are y-up
    rotate: bool = True
    random_up: bool = False  # then turn the up axis onto any of the 6 axis directions, uniformly
    scale: tuple[float, float] = (0.8, 1.25)
    jitter_sigma: float = 0.01
    jitter_clip: float = 0.05
    max_dropout: float = 0.875
    rgb_dropout: float = 0.2
    # A core.upright.Upright: each sample is then turned as a file saved y-, z- or x-up (at
    # random) reads, and upright again by the scorer, so the encoder learns the frames the
    # scorer leaves at inference, its mistakes included.
    upright: object = dataclasses.field(default=None, compare=False)
    # With a scorer: the share of samples left as they stand, as a file that states its
    # frame (a .glb, a Blender scene) is read without the scorer.
    known_frame: float = 0.0

    def __call__(self, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """points (N, >=6) float -> augmented float32 copy (xyz, rgb)."""
        pts = np.array(points[:, :6], dtype=np.float32)
        xyz = pts[:, :3]
        if self.rotate:
            up = UP_AXES[self.up]
            a, b = [i for i in range(3) if i != up]
            angle = rng.uniform(0, 2 * np.pi)
            c, s = np.cos(angle), np.sin(angle)
            xa, xb = xyz[:, a].copy(), xyz[:, b].copy()
            xyz[:, a], xyz[:, b] = c * xa - s * xb, s * xa + c * xb
        if self.random_up:
            xyz[:] = xyz @ AXIS_ROTATIONS[rng.integers(len(AXIS_ROTATIONS))].T
        known = self.known_frame > 0 and rng.random() < self.known_frame  # no draw at 0: older runs resume alike
        if self.upright is not None and not known:  # read before jitter and dropout, as a sampled file is
            xyz[:] = xyz @ TURNS[rng.integers(len(TURNS))]  # as saved: TURNS' inverse
            pts = self.upright.turn(pts[None])[0]
            xyz = pts[:, :3]
        xyz *= rng.uniform(*self.scale)
        if self.jitter_sigma > 0:
            xyz += np.clip(rng.normal(0, self.jitter_sigma, xyz.shape), -self.jitter_clip, self.jitter_clip)
        if self.max_dropout > 0:
            # Dropped points become copies of the first point: the count stays fixed (ULIP's way).
            drop = rng.random(len(pts)) <= rng.random() * self.max_dropout
            pts[drop] = pts[0]
        if rng.random() < self.rgb_dropout:
            pts[:, 3:6] = DEFAULT_GREY
        return pts


def subsample(points: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly n points of a cloud: a random subset (with repeats only when it has fewer),
    as ULIP-2 feeds stored 10k clouds to models that take fewer points."""
    if len(points) == n:
        return points
    return points[rng.choice(len(points), n, replace=len(points) < n)]
