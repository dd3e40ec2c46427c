"""One object (or one asset file's objects) -> one triplet record: render, sample, write.

Shared by the operator (artist's scene) and the headless worker (asset files). Captions
are not written here: Blender has no torch, so captioning is a later stage in the ulip2
environment (`ulip2 triplets caption STORE`), started at once by the operator if asked.
"""

from __future__ import annotations

import bpy

from core.errors import AssetError
from core.sampling import sample_points
from core.triplets import DONE, CAPTIONED, TripletStore, key_for_arrays, view_name

from .extract import extract
from .render import ViewSettings, render_views

# ULIP-2 samples 10k points per object.
N_POINTS = 10_000


def write_triplet(store: TripletStore, objects, *, settings: ViewSettings, source: str | None, name: str,
                  key: str | None = None, n_points: int = N_POINTS, seed: int = 0, redo: bool = False) -> str | None:
    """Write the record of `objects` (evaluated: modifiers and instances included).

    key: the record key (asset files: the file's hash); default: a hash of the evaluated
    world-space geometry and `name`. Returns the key, or None when it was already stored
    and redo is False. Raises AssetError when there is nothing to sample.
    """
    depsgraph = bpy.context.evaluated_depsgraph_get()
    geometry = extract(depsgraph, objects)
    if not geometry.parts:
        raise AssetError(source, f"{name}: no mesh geometry to render and sample")
    if key is None:
        key = key_for_arrays(name, [a for p in geometry.parts for a in (p.vertices, p.faces)])
    if not redo and store.state().get(key, {}).get("event") in (DONE, CAPTIONED):
        return None
    points = sample_points(geometry.parts, n_points, seed=seed)
    with store.new_record(key) as record:
        paths = [record.view_path(i) for i in range(settings.count)]
        render_views(objects, geometry.world_vertices, paths, settings)
        record.commit(points, {
            "source": {"path": source, "object": name, "kind": "scene" if source is None else "file"},
            "points": {"seed": seed},
            "views": {"files": [view_name(i) for i in range(settings.count)], **settings.to_json()},
            "facts": {"name": name, **geometry.facts()},
        })
    return key
