"""What a request may ask, and the checks that hold it there: each refusal an ApiError (400,
413 or 415) naming the parameter and the bound."""

from __future__ import annotations

import json
import os
import unicodedata
from collections.abc import Mapping

from starlette.datastructures import QueryParams
from starlette.requests import Request

from core.formats import ASSET_EXTENSIONS, BLENDER_FORMATS, TRIMESH_FORMATS
from serve.errors import ApiError

MAX_BODY_BYTES = 64 << 10  # a JSON body: a tag list is a few hundred bytes
MAX_MESH_BYTES = 32 << 20  # an uploaded mesh; a larger one is searched for once indexed (like)
MAX_IMAGE_BYTES = 16 << 20  # an uploaded picture
MAX_IMAGE_PIXELS = 40_000_000  # decoded: 160 MB as RGBA; a photo of 8000 x 5000
MAX_K = 200                # hits per search
DEFAULT_K = 10
MAX_QUERY_CHARS = 1_000    # a text query (the text tower reads 256 tokens at most anyway)
MAX_FOLDER_CHARS = 4_096   # PATH_MAX on Linux
MAX_FILTER_TAGS = 16       # tag filters of one search
MAX_TAGS = 64              # a person's tags of one asset
MAX_TAG_CHARS = 100
_MAX_ID = 2**63 - 1        # SQLite's largest integer: a longer id names no asset

_FORMATS = sorted(e.lstrip(".") for e in ASSET_EXTENSIONS)
UPLOAD_TYPES = tuple(e.lstrip(".") for e in TRIMESH_FORMATS)


def asset_id(text: str) -> int:
    """An asset id from the route; anything but a whole number in SQLite's range names no
    asset (404), '..' and other path pieces included: ids are looked up, never opened."""
    if not (text.isascii() and text.isdigit()) or int(text) > _MAX_ID:
        raise ApiError(404, f"no asset {text[:40]!r}: asset ids are whole numbers, as search hits give them")
    return int(text)


def only(params: QueryParams, known: tuple[str, ...], repeatable: tuple[str, ...] = ()) -> None:
    """Refuse parameters the route does not read (a misspelt filter would be ignored) and
    repeats of those read once."""
    for name in params.keys():
        if name not in known:
            raise ApiError(400, f"unknown parameter {name[:40]!r}; this route takes {', '.join(known) or 'none'}")
        if name not in repeatable and len(params.getlist(name)) > 1:
            raise ApiError(400, f"parameter {name!r} is given more than once; give it once")


def k(params: QueryParams) -> int:
    text = params.get("k")
    if text is None:
        return DEFAULT_K
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_K:
        raise ApiError(400, f"k={text[:20]!r}: give a whole number of hits from 1 to {MAX_K}")
    return int(text)


def plain_text(text: str, what: str, limit: int) -> str:
    """`text` stripped, refused when empty, longer than `limit` characters or holding control
    characters (user text is plain text: no markup is interpreted, none is needed)."""
    text = text.strip()
    if not text:
        raise ApiError(400, f"{what} is empty; give some words")
    if len(text) > limit:
        raise ApiError(400, f"{what} is {len(text)} characters long; keep it to {limit}")
    if any(unicodedata.category(c).startswith("C") for c in text):
        raise ApiError(400, f"{what} holds control characters; send plain text")
    return text


def query_text(params: QueryParams) -> str:
    if "q" not in params:
        raise ApiError(400, "no query: give the words to look for as q, e.g. /v1/search?q=a+wooden+chair")
    return plain_text(params["q"], "q", MAX_QUERY_CHARS)


def filters(params: QueryParams) -> dict:
    """The Searcher.search filters the query names: format (repeatable), folder, tag (repeatable)."""
    formats = []
    for name in params.getlist("format"):
        name = name.lower().lstrip(".")
        if name not in _FORMATS:
            raise ApiError(400, f"format={name[:20]!r} is not a format ulip2 indexes; choose from {', '.join(_FORMATS)}")
        formats.append(name)
    folder = params.get("folder")
    if folder is not None:
        folder = plain_text(folder, "folder", MAX_FOLDER_CHARS)
        # A filter on the folders the library records, never opened: relative to what would
        # it be, on a server?
        if not os.path.isabs(folder):
            raise ApiError(400, f"folder={folder[:60]!r} is not absolute; give the folder as search hits show it")
    tags = [plain_text(t, "tag", MAX_TAG_CHARS) for t in params.getlist("tag")]
    if len(tags) > MAX_FILTER_TAGS:
        raise ApiError(400, f"{len(tags)} tag filters; give {MAX_FILTER_TAGS} at most")
    return dict(formats=formats, folder=folder, tags=tags)


async def body_bytes(request: Request, limit: int, what: str = "the body") -> bytes:
    """The request's body, refused (413) as soon as it is known to pass `limit` bytes: from
    Content-Length before anything is read, else while it streams in."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"{what} is {int(length)} bytes; this server takes {limit} at most")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"{what} passes {limit} bytes, the most this server takes")
    return bytes(body)


async def json_body(request: Request, limit: int = MAX_BODY_BYTES):
    """The request's JSON body, at most `limit` bytes."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, f"the body is {kind[:60]}; send JSON with Content-Type: application/json")
    body = await body_bytes(request, limit)
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not UTF-8 text; send JSON") from None
    except ValueError as exc:
        raise ApiError(400, f"the body is not JSON ({exc}); send e.g. {{\"tags\": [\"chair\", \"oak\"]}}") from None


def mesh_type(params: QueryParams) -> str:
    """The uploaded mesh's file type (`type=glb`) as an extension: one trimesh reads. Blender's
    formats are not taken: a Blender run per request would be the server's to pay for."""
    given = params.get("type")
    if given is None:
        raise ApiError(400, f"say the mesh's file type as type=, one of {', '.join(UPLOAD_TYPES)}")
    suffix = "." + given.lower().lstrip(".")
    if suffix not in TRIMESH_FORMATS:
        hint = ("; index such files with ulip2 index and search like them (/v1/like/ID)"
                if suffix in BLENDER_FORMATS else "")
        raise ApiError(415, f"type={given[:20]!r} is not a mesh type this server reads from an upload; "
                            f"send one of {', '.join(UPLOAD_TYPES)}{hint}")
    return suffix


def tags_body(body) -> list[str]:
    """The tags of a PUT .../tags body {"tags": [text, ...]}, each plain text."""
    example = 'send e.g. {"tags": ["chair", "oak"]}'
    if not isinstance(body, Mapping) or set(body) != {"tags"}:
        raise ApiError(400, f"the body must be an object with one key, tags; {example}")
    tags = body["tags"]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ApiError(400, f"tags must be a list of strings; {example} ([] removes every tag)")
    if len(tags) > MAX_TAGS:
        raise ApiError(400, f"{len(tags)} tags; give {MAX_TAGS} at most")
    return [plain_text(t, f"tags[{i}]", MAX_TAG_CHARS) for i, t in enumerate(tags)]
