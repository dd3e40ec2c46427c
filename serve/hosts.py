"""Where the server listens, and which Host headers it answers.

A server on loopback answers only requests addressed to a loopback name: a web page the
user visits cannot point a name of its own at 127.0.0.1 (DNS rebinding) and read the
library through the user's browser. Bound to another address, it answers any name."""

from __future__ import annotations

import ipaddress
import socket

from starlette.types import ASGIApp, Receive, Scope, Send

from core.errors import Ulip2Error
from serve.errors import error_response

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def host_name(header: str) -> str:
    """The name of a Host header: '[::1]:8765' -> '::1', 'localhost:8765' -> 'localhost'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """ASGI middleware: HTTP requests whose Host is not one of `names` get a 400 JSON error."""

    def __init__(self, app: ASGIApp, names: frozenset[str]):
        self.app = app
        self.names = frozenset(n.lower() for n in names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(header) not in self.names:
                response = error_response(400, f"this server answers requests to {', '.join(sorted(self.names))} "
                                               "only; use one of those names in the URL")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (port 0: a free one), made here rather than by uvicorn
    so that a port in use is one error line before anything starts, and the port is known."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise Ulip2Error(f"cannot listen on {host}: {exc.strerror or exc}; give --host an address of this machine") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise Ulip2Error(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port, "
                         "or stop the program that holds it") from exc
    return sock


def url(sock: socket.socket) -> str:
    """http://HOST:PORT of a listening socket, as a client types it."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
