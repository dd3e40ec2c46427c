"""Objects -> one triplet record: extract, sample, render, describe.

Shared by the operator (artist's scene: `write_triplet` writes the store itself) and the
headless worker (asset files: `render_triplet` fills a folder and the ulip2 process that
started the worker commits it, so the store has one writer). Captions are not written
here: Blender has no torch, so captioning is a later stage in the ulip2 environment
(`ulip2 triplets caption STORE`), started at once by the operator if asked.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from core.errors import AssetError
from core.triplets import DONE, CAPTIONED, TripletStore, key_for_arrays, view_name

from .extract import Geometry, extract
from .render import ViewSettings, render_views

# ULIP-2 samples 10k points per object.
N_POINTS = 10_000


def geometry_of(objects, *, source: str | None, name: str) -> Geometry:
    """World-space mesh parts of `objects`, evaluated (modifiers and instances included).
    Raises AssetError when there is nothing to sample."""
    geometry = extract(bpy.context.evaluated_depsgraph_get(), objects)
    if not geometry.parts:
        raise AssetError(source, f"{name}: no mesh geometry to render and sample")
    return geometry


def render_triplet(folder: str | Path, objects, geometry: Geometry, *, settings: ViewSettings, source: str | None,
                   name: str, kind: str, n_points: int = N_POINTS, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Sample points (y-up, the store's frame) and render the views into `folder`; (points,
    the record's meta fields).

    kind: "scene" (an artist's object), "file" (an asset file's objects) or "asset" (one
    object marked as an asset in a .blend), as core/triplets.py's format describes.
    """
    points = geometry.points(n_points, seed)
    render_views(objects, geometry.world_vertices, [Path(folder) / view_name(i) for i in range(settings.count)],
                 settings)
    return points, {
        "source": {"path": source, "object": name, "kind": kind},
        "points": {"seed": seed},
        "views": {"files": [view_name(i) for i in range(settings.count)], **settings.to_json()},
        "facts": {"name": name, **geometry.facts()},
    }


def write_triplet(store: TripletStore, objects, *, settings: ViewSettings, source: str | None, name: str,
                  key: str | None = None, n_points: int = N_POINTS, seed: int = 0, redo: bool = False) -> str | None:
    """Write the record of `objects` straight into `store` (inside an artist's Blender).

    key: the record key; default: a hash of the evaluated world-space geometry and `name`.
    Returns the key, or None when it was already stored and redo is False. Raises
    AssetError when there is nothing to sample.
    """
    geometry = geometry_of(objects, source=source, name=name)
    if key is None:
        key = key_for_arrays(name, [a for p in geometry.parts for a in (p.vertices, p.faces)])
    if not redo and store.state().get(key, {}).get("event") in (DONE, CAPTIONED):
        return None
    with store.new_record(key) as record:
        points, meta = render_triplet(record.path, objects, geometry, settings=settings, source=source, name=name,
                                      kind="scene" if source is None else "file", n_points=n_points, seed=seed)
        record.commit(points, meta)
    return key
