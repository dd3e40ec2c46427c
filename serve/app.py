"""The server's routes, all under /v1, JSON in and out, and create_app, which builds them
over one library. Every route reads the library's records and nothing else: an asset is
named by its id, never by a path, and no request opens a file."""

from __future__ import annotations

import asyncio
import hmac
import io
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timezone
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core import __version__
from core.bundle import Bundle, default_bundle_path, read_bundle
from core.errors import AssetError, Ulip2Error
from core.formats import states_frame
from core.library.search import Searcher
from core.library.store import Library, LibraryError, default_db_path
from core.meshio import load_points
from core.spaces import has_image_tower
from serve import errors, limits
from serve.connections import DEFAULT_READERS, Connections, Reader
from serve.errors import ApiError
from serve.hosts import HostCheck
from serve.openapi import openapi_document
from serve.page import page_routes


# -- reads ----------------------------------------------------------------------------------

def _status(reader: Reader) -> dict:
    counts = reader.library.counts()
    last = counts.pop("last_indexed_at")
    embedded = reader.library.spaces().get(reader.bundle_id, (None, 0))[1]
    return counts | {"embedded": embedded,
                     "last_indexed": None if last is None else
                     datetime.fromtimestamp(last, timezone.utc).isoformat(timespec="seconds")}


async def status(request: Request) -> JSONResponse:
    """The library at a glance: asset counts, the bundle, when it was last indexed."""
    limits.only(request.query_params, ())
    state = request.app.state
    counts = await state.connections.read(_status)
    bundle = state.connections.bundle
    return JSONResponse({
        "service": "ulip2", "version": __version__,
        "library": state.connections.db_path.name,  # the file's name: the server's folders are its own
        "bundle": {"id": state.connections.bundle_id, "space": bundle.space, "dim": bundle.dim},
        **counts,
        "writes": "token" if state.token else "off",
    })


def _tags(reader: Reader) -> list[str]:
    return reader.library.tag_labels(reader.bundle_id)


async def tags(request: Request) -> JSONResponse:
    """Every label a tag filter can use: the bundle's predicted tags and a person's own."""
    limits.only(request.query_params, ())
    return JSONResponse({"tags": await request.app.state.connections.read(_tags)})


def _search_text(reader: Reader, text: str, k: int, filters: dict):
    searcher = reader.searcher
    return searcher.search(searcher.text_vector(text), k, **filters)


async def search(request: Request) -> JSONResponse:
    """Assets by text, best first, through core's Searcher."""
    params = request.query_params
    limits.only(params, ("q", "k", "format", "folder", "tag"), repeatable=("format", "tag"))
    text, k, filters = limits.query_text(params), limits.k(params), limits.filters(params)
    hits = await request.app.state.connections.read(_search_text, text, k, filters)
    return _hits(request, {"query": text}, k, filters, hits)


def _search_like(reader: Reader, asset_id: int, k: int, filters: dict):
    searcher = reader.searcher
    vector = searcher.asset_vector(asset_id)
    if vector is None:
        if not reader.library.assets([asset_id]):
            raise _no_asset(asset_id)
        raise ApiError(409, f"asset {asset_id} has no embedding from this server's bundle "
                            f"({reader.bundle_id}); index its folder with that bundle")
    return searcher.search(vector, k, exclude=asset_id, **filters)


async def like(request: Request) -> JSONResponse:
    """Assets like an indexed one (itself left out), best first."""
    params = request.query_params
    limits.only(params, ("k", "format", "folder", "tag"), repeatable=("format", "tag"))
    asset_id = limits.asset_id(request.path_params["asset_id"])
    k, filters = limits.k(params), limits.filters(params)
    hits = await request.app.state.connections.read(_search_like, asset_id, k, filters)
    return _hits(request, {"like": asset_id}, k, filters, hits)


def _hits(request: Request, query: dict, k: int, filters: dict, hits) -> JSONResponse:
    connections = request.app.state.connections
    return JSONResponse(query | {"k": k, "filters": filters, "bundle": connections.bundle_id,
                                 "space": connections.bundle.space, "hits": [h.to_json() for h in hits]})


def _no_asset(asset_id: int) -> ApiError:
    return ApiError(404, f"no asset {asset_id} in this library; search hits give the ids it holds")


@contextmanager
def _uploaded(data: bytes, suffix: str) -> Iterator[str]:
    """The upload as a file of a temporary folder of its own, under a name of the server's
    with the checked type's suffix; gone afterwards."""
    with tempfile.TemporaryDirectory(prefix="ulip2-upload-") as folder:
        path = os.path.join(folder, "upload" + suffix)
        with open(path, "wb") as out:
            out.write(data)
        yield path


def _search_mesh(reader: Reader, data: bytes, suffix: str, k: int, filters: dict):
    encoder = reader.encoder
    with _uploaded(data, suffix) as path:
        try:
            points = load_points(path, encoder.num_points)
        except AssetError as exc:
            raise ApiError(422, f"the uploaded {suffix} file cannot be read: {exc.reason}; "
                                "send a mesh file of that type") from None
        known = states_frame(path)  # the file's name, not the bare suffix: ".glb" alone has no extension
    return reader.searcher.search(encoder.embed_points(points, frame_known=known)[0], k, **filters)


async def search_mesh(request: Request) -> JSONResponse:
    """Assets like an uploaded mesh file (the body, of the type `type` names), best first."""
    params = request.query_params
    limits.only(params, ("type", "k", "format", "folder", "tag"), repeatable=("format", "tag"))
    suffix, k, filters = limits.mesh_type(params), limits.k(params), limits.filters(params)
    data = await limits.body_bytes(request, limits.MAX_MESH_BYTES, "the mesh")
    if not data:
        raise ApiError(400, "the body is empty; send the mesh file's bytes as the body")
    async with request.app.state.uploads:  # one upload decoded at a time bounds the memory they take
        hits = await request.app.state.connections.read(_search_mesh, data, suffix, k, filters)
    return _hits(request, {"mesh": suffix.lstrip(".")}, k, filters, hits)


def _search_image(reader: Reader, data: bytes, k: int, filters: dict):
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:  # the header only: the size before any decoding
            (width, height), kind = image.size, (image.format or "").lower()
    except (OSError, Image.DecompressionBombError) as exc:
        raise ApiError(422, f"the uploaded image cannot be read ({exc}); send a PNG, JPEG or WebP file") from None
    if width * height > limits.MAX_IMAGE_PIXELS:
        raise ApiError(413, f"the image is {width} x {height} pixels; this server decodes "
                            f"{limits.MAX_IMAGE_PIXELS:,} at most: send a smaller copy")
    searcher = reader.searcher
    with _uploaded(data, "." + kind) as path:
        try:
            vector = searcher.image_vector(path)
        except LibraryError as exc:  # a header that reads, pixels that do not
            raise ApiError(422, f"the uploaded image cannot be read ({exc.args[0].split(': ', 1)[-1]}); "
                                "send a PNG, JPEG or WebP file") from None
    return searcher.search(vector, k, **filters)


async def search_image(request: Request) -> JSONResponse:
    """Assets like an uploaded picture (the body), best first, where the bundle's space embeds
    images (open_clip spaces)."""
    params = request.query_params
    limits.only(params, ("k", "format", "folder", "tag"), repeatable=("format", "tag"))
    k, filters = limits.k(params), limits.filters(params)
    space = request.app.state.connections.bundle.space
    if not has_image_tower(space):
        raise ApiError(409, f"this server's bundle is in the {space} space, which has no image tower: search by "
                            "text, like an asset or by a mesh; to search by image, serve a bundle in an openclip space")
    data = await limits.body_bytes(request, limits.MAX_IMAGE_BYTES, "the image")
    if not data:
        raise ApiError(400, "the body is empty; send the image file's bytes as the body")
    async with request.app.state.uploads:
        hits = await request.app.state.connections.read(_search_image, data, k, filters)
    return _hits(request, {"image": True}, k, filters, hits)


def _asset(reader: Reader, asset_id: int) -> dict:
    library, bundle = reader.library, reader.bundle_id
    row = library.assets([asset_id]).get(asset_id)
    if row is None:
        raise _no_asset(asset_id)
    # A label in several vocabularies once, at its best score (they come best first).
    tags: dict[str, float] = {}
    for label, score in library.labels("tags", bundle, ids=[asset_id]).get(asset_id, []):
        tags.setdefault(label, score)
    captions = library.labels("captions", bundle, ids=[asset_id]).get(asset_id, [])
    source = library.thumbnail_source(asset_id)
    return {"asset_id": asset_id, **row,
            "embedded": len(library.embeddings(bundle, [asset_id])[0]) == 1,
            "user_tags": library.user_tags([asset_id]).get(asset_id, []),
            "tags": [{"tag": t, "score": s} for t, s in tags.items()],
            "captions": [{"caption": c, "score": s} for c, s in captions],
            "has_thumbnail": source is not None, "thumbnail_source": source}


async def asset(request: Request) -> JSONResponse:
    """One asset's record: path as stored, format, a person's tags, predicted tags, captions."""
    limits.only(request.query_params, ())
    asset_id = limits.asset_id(request.path_params["asset_id"])
    return JSONResponse(await request.app.state.connections.read(_asset, asset_id))


def _thumbnail(reader: Reader, asset_id: int) -> bytes:
    png = reader.library.thumbnail(asset_id)
    if png is None:
        if not reader.library.assets([asset_id]):
            raise _no_asset(asset_id)
        raise ApiError(404, f"asset {asset_id} has no thumbnail; make previews with: ulip2 index FOLDER "
                            "(point previews) or ulip2 thumbnails (Blender renders)")
    return png


async def thumbnail(request: Request) -> Response:
    """The asset's thumbnail, a PNG from the library file."""
    limits.only(request.query_params, ())
    asset_id = limits.asset_id(request.path_params["asset_id"])
    png = await request.app.state.connections.read(_thumbnail, asset_id)
    return Response(png, media_type="image/png", headers={"X-Content-Type-Options": "nosniff",
                                                          "Cache-Control": "no-cache"})


# -- writes ---------------------------------------------------------------------------------

def _require_token(request: Request) -> None:
    """Writes need the server's token, sent as `Authorization: Bearer TOKEN`; a server started
    without one takes none."""
    token = request.app.state.token
    if token is None:
        raise ApiError(403, "this server takes no writes: start it with --token-file FILE, then send "
                            "Authorization: Bearer TOKEN")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="ulip2"'}
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "writes need the server's token: send Authorization: Bearer TOKEN "
                            "(TOKEN: the content of the server's --token-file)", challenge)
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "the token is not the server's; send the content of its --token-file", challenge)


def _set_tags(library: Library, asset_id: int, tags: list[str]) -> list[str]:
    if not library.assets([asset_id]):
        raise _no_asset(asset_id)
    return library.set_user_tags(asset_id, tags)


async def put_tags(request: Request) -> JSONResponse:
    """Replace a person's tags of one asset (needs the token)."""
    limits.only(request.query_params, ())
    _require_token(request)  # before the body is read: strangers' bodies are not
    asset_id = limits.asset_id(request.path_params["asset_id"])
    tags = limits.tags_body(await limits.json_body(request))
    try:
        stored = await request.app.state.connections.write(_set_tags, asset_id, tags)
    except sqlite3.IntegrityError:  # an index run dropped the asset between the check and the write
        raise _no_asset(asset_id) from None
    return JSONResponse({"asset_id": asset_id, "user_tags": stored})


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.openapi)


ROUTES = [
    Route("/v1/status", status, methods=["GET"]),
    Route("/v1/tags", tags, methods=["GET"]),
    Route("/v1/search", search, methods=["GET"]),
    Route("/v1/like/{asset_id}", like, methods=["GET"]),
    Route("/v1/search/mesh", search_mesh, methods=["POST"]),
    Route("/v1/search/image", search_image, methods=["POST"]),
    Route("/v1/assets/{asset_id}", asset, methods=["GET"]),
    Route("/v1/assets/{asset_id}/thumbnail", thumbnail, methods=["GET"]),
    Route("/v1/assets/{asset_id}/tags", put_tags, methods=["PUT"]),
    Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
]


# -- the app --------------------------------------------------------------------------------

def create_app(db_path: str | os.PathLike | None = None, bundle: Bundle | str | os.PathLike | None = None, *,
               token: str | None = None, allowed_hosts: frozenset[str] | None = None,
               readers: int = DEFAULT_READERS, warm: bool = True) -> Starlette:
    """The ASGI app serving the library at `db_path` (default: $ULIP2_DB, else the one in the
    current folder) searched with `bundle`'s embeddings (default: $ULIP2_BUNDLE, else the
    shipped bundle).

    token: the bearer token writes need; None: the server takes no writes. allowed_hosts:
    the Host names it answers (None: any; serve.hosts.LOOPBACK_NAMES on loopback). readers:
    threads that read in parallel. warm: load the text tower now, not on the first search.
    Raises Ulip2Error before anything is served when the library cannot be opened or holds
    no embeddings from the bundle."""
    db = Path(db_path).expanduser() if db_path is not None else default_db_path()
    if not isinstance(bundle, Bundle):
        bundle = read_bundle(bundle or default_bundle_path(), check_encoders=False)
    if token is not None and not token:
        raise Ulip2Error("the token is empty; give a token of some length, or None to take no writes")
    # Checked here, in the caller's thread: a wrong library or bundle is one error line at
    # start, not a 409 on every search.
    with Library(db, read_only=True) as library:
        searcher = Searcher(library, bundle)
        if warm:
            searcher.text_vector("a chair")
    connections = Connections(db, bundle, readers=readers)

    @asynccontextmanager
    async def lifespan(app):
        yield
        connections.close()

    # Longest first: the resolved path before a relative one it ends with.
    scrub = {str(p): p.name for p in sorted({db.resolve(), db, Path(bundle.path).resolve(), Path(bundle.path)},
                                            key=lambda p: -len(str(p)))}
    handlers = {
        ApiError: errors.api_error,
        HTTPException: errors.http_error,
        Ulip2Error: errors.library_error(scrub),
        sqlite3.Error: errors.database_error,
        PermissionError: errors.not_writable,
        Exception: errors.server_error,
    }
    middleware = [Middleware(HostCheck, names=allowed_hosts)] if allowed_hosts is not None else []
    app = Starlette(routes=ROUTES + page_routes(), exception_handlers=handlers, middleware=middleware, lifespan=lifespan)
    app.state.connections = connections
    app.state.token = token
    app.state.uploads = asyncio.Semaphore(1)
    app.state.openapi = openapi_document()
    return app
