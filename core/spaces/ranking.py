"""Ranking in a space: the k best of a score vector, an asset's nearest texts (tags,
captions), and zero-shot accuracy against class vectors. numpy only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (argpartition: O(n), not a full sort)."""
    if k >= len(scores):
        return np.argsort(-scores)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.argsort(-scores[part])]


def nearest_texts(vectors: np.ndarray, text_vectors: np.ndarray, texts: Sequence[str], k: int,
                  threshold: float | None = None) -> list[list[tuple[str, float]]]:
    """Per row of `vectors`: up to k (text, cosine) pairs, best first, at or above threshold."""
    scores = np.asarray(vectors, np.float32) @ np.asarray(text_vectors, np.float32).T
    out = []
    for row in scores:
        best = top_k(row, k)
        out.append([(texts[i], round(float(row[i]), 6)) for i in best if threshold is None or row[i] >= threshold])
    return out


def zero_shot(embeddings: np.ndarray, labels: list[str], class_vectors: np.ndarray,
              classnames: list[str]) -> dict:
    """Top-1 / top-5 accuracy and per-class top-1 of embeddings against class vectors."""
    index = {name: i for i, name in enumerate(classnames)}
    truth = np.array([index[label] for label in labels])
    ranked = np.argsort(-(embeddings @ class_vectors.T), axis=1)[:, :5]
    top1 = ranked[:, 0] == truth
    top5 = (ranked == truth[:, None]).any(axis=1)
    per_class = {name: float(top1[truth == i].mean()) for name, i in index.items() if (truth == i).any()}
    return {"n": len(labels), "classes": len(classnames), "top1": float(top1.mean()),
            "top5": float(top5.mean()), "per_class_top1": per_class}
