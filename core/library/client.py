"""A served library (`ulip2 serve`, its /v1 routes) as the desktop app and the Blender panel
use it, and the path mapping that turns the paths the server stored into this machine's.

The indexing machine stores paths as it sees them (/mnt/assets/props/chair.glb); an artist's
machine mounts the same share elsewhere (S:\\ on Windows, /Volumes/assets on macOS). A
`PathMap` of prefixes, set once in a client's settings, maps one onto the other, so Reveal,
Open in Blender and Append find the file. Standard library only (urllib): Blender's Python
runs this.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import Ulip2Error

#: The most a reply may hold (a thumbnail is tens of KB, 200 hits a few): a client never
#: reads without bound from whatever answers at the URL.
MAX_REPLY = 16 * 1024 * 1024
MAX_UPLOAD = 32 * 1024 * 1024  # serve.limits.MAX_MESH_BYTES: this module imports nothing of the server's
_WINDOWS = re.compile(r"^([A-Za-z]:|\\\\)")  # a drive letter or a UNC share


class ClientError(Ulip2Error):
    """The server refused a request (its message) or could not be reached."""


@dataclass(frozen=True)
class PathMap:
    """Prefix pairs (as the server stored it, as this machine mounts it), the longest match
    first. Written in settings as `SERVER=LOCAL` pairs separated by `;`."""

    pairs: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> PathMap:
        pairs = []
        for item in (part.strip() for part in text.split(";")):
            if not item:
                continue
            server, sep, local = (s.strip() for s in item.partition("="))
            if not sep or not server or not local:
                raise ClientError(f"path mapping {item!r}: write SERVER_PREFIX=LOCAL_PREFIX, e.g. /mnt/assets=S:\\")
            pairs.append((server.rstrip("/\\") or server, local))
        return cls(tuple(sorted(pairs, key=lambda p: -len(p[0]))))

    def local(self, path: str) -> str:
        """The server's `path` as this machine reaches it (unchanged when no prefix matches)."""
        for server, local in self.pairs:
            if path == server or path.startswith(server.rstrip("/\\") + "/"):
                rest = path[len(server):].lstrip("/")
                if _WINDOWS.match(local):
                    return local.rstrip("\\/") + ("\\" + rest.replace("/", "\\") if rest else "\\")
                return local.rstrip("/") + ("/" + rest if rest else "")
        return path


class LibraryClient:
    """One served library: search, like, asset records, thumbnails, a person's tags. Each
    hit and record gains "local_path", its path through the PathMap."""

    def __init__(self, url: str, *, token: str | None = None, paths: PathMap = PathMap(), timeout: float = 30):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ClientError(f"{url!r} is not a server address; write it as http://HOST:PORT (ulip2 serve prints it)")
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.token, self.paths, self.timeout = token, paths, timeout

    def _call(self, method: str, route: str, params: dict | None = None, body: dict | bytes | None = None):
        query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v not in (None, (), [])},
                                       doseq=True)
        headers = {"Accept": "application/json"}
        data = None
        if isinstance(body, bytes):
            data, headers["Content-Type"] = body, "application/octet-stream"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(f"{self.url}/v1/{route}" + (f"?{query}" if query else ""), data=data,
                                         method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                payload, kind = reply.read(MAX_REPLY + 1), reply.headers.get("Content-Type", "")
        except urllib.error.HTTPError as error:
            raise ClientError(f"{self.url}: {_message(error)}") from None
        except (OSError, ValueError) as error:  # refused, timed out, bad certificate, reset
            raise ClientError(f"cannot reach {self.url} ({error}); is `ulip2 serve` running there?") from None
        if len(payload) > MAX_REPLY:
            raise ClientError(f"{self.url}: a reply of more than {MAX_REPLY} bytes; is this a ulip2 server?")
        if not kind.startswith("application/json"):
            return payload
        try:
            return json.loads(payload)
        except ValueError:
            raise ClientError(f"{self.url}: a reply that is not JSON; is this a ulip2 server?") from None

    def _mapped(self, record: dict) -> dict:
        return record | {"local_path": self.paths.local(record["path"])}

    def status(self) -> dict:
        return self._call("GET", "status")

    def tags(self) -> list[str]:
        """Every label a tag filter can use."""
        return self._call("GET", "tags")["tags"]

    def search(self, text: str, k: int = 10, *, formats=(), folder: str | None = None, tags=()) -> list[dict]:
        reply = self._call("GET", "search", {"q": text, "k": k, "format": list(formats), "folder": folder,
                                             "tag": list(tags)})
        return [self._mapped(hit) for hit in reply["hits"]]

    def like(self, asset_id: int, k: int = 10, *, formats=(), folder: str | None = None, tags=()) -> list[dict]:
        reply = self._call("GET", f"like/{int(asset_id)}", {"k": k, "format": list(formats), "folder": folder,
                                                            "tag": list(tags)})
        return [self._mapped(hit) for hit in reply["hits"]]

    def search_mesh(self, path: str | os.PathLike, k: int = 10, *, formats=(), folder: str | None = None,
                    tags=()) -> list[dict]:
        """Assets like a mesh file of this machine, sent to the server (MAX_UPLOAD bytes at most)."""
        path = Path(path)
        reply = self._call("POST", "search/mesh", {"type": path.suffix.lstrip(".").lower(), "k": k,
                                                   "format": list(formats), "folder": folder, "tag": list(tags)},
                           body=_upload(path, "a mesh file"))
        return [self._mapped(hit) for hit in reply["hits"]]

    def search_image(self, path: str | os.PathLike, k: int = 10, *, formats=(), folder: str | None = None,
                     tags=()) -> list[dict]:
        """Assets like a picture of this machine (PNG, JPEG, WebP), where the server's space embeds images."""
        reply = self._call("POST", "search/image", {"k": k, "format": list(formats), "folder": folder,
                                                    "tag": list(tags)}, body=_upload(Path(path), "an image"))
        return [self._mapped(hit) for hit in reply["hits"]]

    def asset(self, asset_id: int) -> dict:
        return self._mapped(self._call("GET", f"assets/{int(asset_id)}"))

    def thumbnail(self, asset_id: int) -> bytes | None:
        """The asset's PNG, or None when it has none."""
        try:
            return self._call("GET", f"assets/{int(asset_id)}/thumbnail")
        except ClientError as error:
            if "has no thumbnail" in str(error):
                return None
            raise

    def set_tags(self, asset_id: int, tags: list[str]) -> list[str]:
        """Replace a person's tags of the asset (needs the server's token); returns them as stored."""
        return self._call("PUT", f"assets/{int(asset_id)}/tags", body={"tags": list(tags)})["user_tags"]


def _upload(path: Path, what: str) -> bytes:
    """The bytes of a file to send, MAX_UPLOAD at most."""
    try:
        if not path.is_file():
            raise ClientError(f"{path}: not a file; give {what} to search like")
        size = path.stat().st_size
        if size > MAX_UPLOAD:
            raise ClientError(f"{path}: {size} bytes, more than a server takes ({MAX_UPLOAD}); "
                              "index its folder on the server and search like the asset")
        return path.read_bytes()
    except OSError as error:
        raise ClientError(f"{path}: cannot read it ({error.strerror or error})") from None


_NEW_TOKEN = "python -c 'import secrets; print(secrets.token_urlsafe(32))' > {file}; chmod 600 {file}"


def read_token(path: str | os.PathLike) -> str:
    """The bearer token in the file at `path`, stripped: one line of visible characters (the
    server's --token-file, and the file a client keeps the same token in)."""
    path = Path(path)
    fix = f"put a token in it: {_NEW_TOKEN.format(file=path)}"
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise Ulip2Error(f"{path}: cannot read the token file ({reason}); {fix}") from exc
    if not token:
        raise Ulip2Error(f"{path}: the token file is empty; {fix}")
    if not all(33 <= ord(c) < 127 for c in token):  # it travels in an HTTP header
        raise Ulip2Error(f"{path}: the token holds spaces, line breaks or non-ASCII characters; {fix}")
    if os.name == "posix" and os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"warning: {path} is readable by other users of this machine; chmod 600 {path}", file=sys.stderr)
    return token


def _message(error: urllib.error.HTTPError) -> str:
    """The server's JSON error message, else the HTTP status."""
    try:
        return str(json.loads(error.read(64 * 1024))["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return f"HTTP {error.code} {error.reason}"
