"""The app's jobs against a served library (`ulip2 serve`, through core.library.client): the
same Results and Details as gui.jobs gives from a library file, each path as this machine
reaches it (the settings' path mapping). Free of Qt, like gui.jobs. Indexing, tagging,
captioning and thumbnails are the server machine's work, not the app's."""

from __future__ import annotations

import os
from collections.abc import Sequence

from core.library.client import LibraryClient, PathMap, read_token
from core.library.search import Hit
from core.spaces import has_image_tower
from gui.jobs import RESULTS_K, Details, Results


def connect(url: str, token_file: str = "", path_map: str = "") -> LibraryClient:
    """The client the settings describe; Ulip2Error (a ClientError) naming what is wrong."""
    return LibraryClient(url, token=read_token(token_file) if token_file else None, paths=PathMap.parse(path_map))


def _hit(record: dict) -> Hit:
    return Hit(record["asset_id"], record["local_path"], record["format"], record["folder"], record["score"],
               record.get("object", ""))


def search(client: LibraryClient, *, text: str = "", like: int | None = None, image: str | None = None,
           tags: Sequence[str] = (), k: int = RESULTS_K) -> Results:
    """Text search, assets like the indexed asset `like` (left out), or like a picture (where
    the server's space embeds images), with the tag filter; each hit's thumbnail read here,
    off the UI thread."""
    status = client.status()
    bundle, space = status["bundle"]["id"], status["bundle"]["space"]
    image_tower = has_image_tower(space)
    if image is not None:
        if not image_tower:  # the window's note says why; nothing is searched
            return Results([], {}, bundle, space, f"image {os.path.basename(image)}", list(tags), [], False)
        records, query = client.search_image(image, k, tags=tags), f"image {os.path.basename(image)}"
    elif like is not None:
        records, query = client.like(like, k, tags=tags), f"like asset {like}"
    elif text.strip():
        records, query = client.search(text.strip(), k, tags=tags), text.strip()
    else:  # the server ranks; it does not list: a query shows assets
        records, query = [], ""
    hits = [_hit(r) for r in records]
    thumbnails = {h.asset_id: png for h in hits if (png := client.thumbnail(h.asset_id)) is not None}
    return Results(hits, thumbnails, bundle, space, query, list(tags), client.tags(), image_tower,
                   status["embedded"] - (like is not None))


def details(client: LibraryClient, asset_id: int) -> Details:
    record = client.asset(asset_id)
    user = record["user_tags"]
    return Details(asset_id, record["local_path"], record["format"], record["size"], user,
                   [(t["tag"], t["score"]) for t in record["tags"] if t["tag"] not in user],
                   record["captions"][0]["caption"] if record["captions"] else None)


def save_tags(client: LibraryClient, asset_id: int, labels: Sequence[str]) -> list[str]:
    """A person's tags of one asset replaced on the server (it needs the token); as stored."""
    return client.set_tags(asset_id, [t.strip() for t in labels if t.strip()])
