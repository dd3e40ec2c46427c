"""Fit the up-axis scorer of core/upright.py on upright (y-up) clouds.

No labels are needed: every training cloud stands the right way up, so of its
descriptions (one per candidate up, core.upright.UPS) the first is the upright one, and
the scorer learns to rate it above the others (a softmax over the candidates). Each cloud
is seen in a few augmented copies: a random subset of its points, jitter, and a small
tilt, so a mesh a few degrees off its axis, or sampled differently, is read the same way.
"""

from __future__ import annotations

import numpy as np

from core.progress import OnProgress
from core.upright import DISTANCE_BINS, HEIGHT_BINS, Upright, describe

COPIES = 4
MAX_TILT = np.radians(10)


def _tilted(xyz: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """xyz turned by up to MAX_TILT about a random horizontal axis."""
    theta = rng.uniform(0, 2 * np.pi)
    axis = np.array([np.cos(theta), 0.0, np.sin(theta)])
    angle = rng.uniform(0, MAX_TILT)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k  # Rodrigues
    return xyz @ rotation.T.astype(np.float32)


def descriptions(clouds: np.ndarray, *, copies: int = COPIES, seed: int = 0) -> np.ndarray:
    """(n * copies, 6, F) descriptions of augmented copies of upright clouds (n, N, >=3)."""
    rng = np.random.default_rng(seed)
    n, points = clouds.shape[:2]
    out = []
    for _ in range(copies):
        keep = rng.integers(points // 2, points + 1)
        batch = np.stack([_tilted(c[rng.permutation(points)[:keep], :3], rng) for c in clouds])
        batch += np.clip(rng.normal(0, 0.01, batch.shape), -0.05, 0.05).astype(np.float32)
        out.append(describe(batch))
    return np.concatenate(out)


def fit_upright(clouds: np.ndarray, *, hidden: int = 128, steps: int = 3000, lr: float = 1e-3,
                weight_decay: float = 0.01, seed: int = 0, on_progress: OnProgress | None = None) -> Upright:
    """A scorer fitted on upright clouds (n, N, >=3): 3,000 steps of 256 described copies
    (about a minute on 2 CPU cores for 4,400 clouds). on_progress: (steps done, steps)."""
    import torch

    torch.manual_seed(seed)
    x = torch.from_numpy(descriptions(clouds, seed=seed))
    layers = [torch.nn.Linear(x.shape[-1], hidden), torch.nn.Linear(hidden, hidden), torch.nn.Linear(hidden, 1)]
    model = torch.nn.Sequential(layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    target = torch.zeros(min(256, len(x)), dtype=torch.long)  # the first description is the upright one
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        pick = torch.randint(len(x), (len(target),), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x[pick]).squeeze(-1), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if on_progress is not None:
            on_progress(step + 1, steps)
    w = [(layer.weight.detach().numpy(), layer.bias.detach().numpy()) for layer in layers]
    return Upright({"w1": w[0][0].T, "b1": w[0][1], "w2": w[1][0].T, "b2": w[1][1],
                    "w3": w[2][0][0], "b3": w[2][1][0], "bins": np.array([HEIGHT_BINS, DISTANCE_BINS])})


def upright_accuracy(scorer: Upright, clouds: np.ndarray) -> float:
    """Share of upright clouds whose estimated up is +y (index 0 of core.upright.UPS)."""
    return float((scorer.ups(clouds[..., :3]) == 0).mean()) if len(clouds) else 0.0
