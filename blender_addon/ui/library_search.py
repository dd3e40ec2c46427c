"""Text search of the asset library from Blender, and the results' previews: of the SQLite
file `ulip2 index` makes, or of the studio's library through `ulip2 serve`.

With a file, the query is embedded by the bundle's ONNX text tower and searched with core's
Searcher over the bundle's embeddings in the library. With a server, the server embeds and
searches (core.library.client), and each path comes back through the preferences' path
mapping. Each result's thumbnail (a PNG stored in the library) is written once to the
extension's user folder and shown through bpy.utils.previews.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import bpy

from core.library.client import LibraryClient, PathMap
from core.library.search import Searcher
from core.library.store import Library, LibraryError

from .user_files import user_folder

_previews = None  # one bpy.utils.previews collection for the session


@dataclass
class Result:
    asset_id: int
    path: str
    format: str
    score: float
    thumbnail: str  # PNG file in the user folder, "" when the library has none


def search_library(models, library_path: str, query: str, k: int = 20) -> list[Result]:
    """The k assets nearest to `query` in `library_path`, best first."""
    if not library_path:
        raise LibraryError("no index database set: choose the library file in the ulip2 preferences "
                           "(make one with: ulip2 index FOLDER --db FILE)")
    if not query.strip():
        raise LibraryError("type what to search for")
    with Library(bpy.path.abspath(library_path), create=False, read_only=True) as library:
        searcher = Searcher(library, models.bundle, device=models.device)
        hits = searcher.search(models.text.embed_text([query])[0], k)
        return [Result(h.asset_id, h.path, h.format, h.score, _thumbnail_file(library.thumbnail(h.asset_id)))
                for h in hits]


def search_server(url: str, path_map: str, query: str, k: int = 20) -> list[Result]:
    """The k assets nearest to `query` in the library `ulip2 serve` serves at `url`, best
    first, each path as this machine reaches it through `path_map`."""
    if not query.strip():
        raise LibraryError("type what to search for")
    client = LibraryClient(url, paths=PathMap.parse(path_map))
    return [Result(h["asset_id"], h["local_path"], h["format"], h["score"],
                   _thumbnail_file(client.thumbnail(h["asset_id"]))) for h in client.search(query, k)]


def _thumbnail_file(png: bytes | None) -> str:
    if png is None:
        return ""
    path = user_folder("thumbnails") / f"{hashlib.sha256(png).hexdigest()[:24]}.png"
    if not path.is_file():
        path.write_bytes(png)
    return str(path)


def preview(thumbnail: str):
    """The bpy.utils.previews entry of a thumbnail file (None when there is none)."""
    global _previews
    if not thumbnail or not Path(thumbnail).is_file():
        return None
    if _previews is None:
        import bpy.utils.previews

        _previews = bpy.utils.previews.new()
    return _previews.get(thumbnail) or _previews.load(thumbnail, thumbnail, "IMAGE")


def preview_icon(thumbnail: str) -> int:
    """The icon id of a thumbnail for layouts (0 when there is none; Blender assigns ids
    only where it draws, so headless it stays 0 though the image is loaded)."""
    entry = preview(thumbnail)
    return entry.icon_id if entry is not None else 0


def clear_previews() -> None:
    global _previews
    if _previews is not None:
        import bpy.utils.previews

        bpy.utils.previews.remove(_previews)
        _previews = None
