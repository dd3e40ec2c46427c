"""Every error a JSON body {"error": message}, with a message that says what to fix; never a
traceback (the server's log keeps those)."""

from __future__ import annotations

import logging
import sqlite3

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from core.errors import Ulip2Error

log = logging.getLogger("ulip2.serve")


class ApiError(Exception):
    """A request the server refuses: the HTTP status and the one-line reason sent back."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# What Starlette's own refusals (no route, a method a route lacks) say, in words that point
# at the fix.
_HTTP_MESSAGES = {
    404: "no such route; the routes are listed in /openapi.json",
    405: "this route does not take {method}; it takes {allow}",
}


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.headers)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    template = _HTTP_MESSAGES.get(exc.status_code)
    headers = dict(exc.headers or {})
    message = (template.format(method=request.method, allow=headers.get("Allow", "other methods"))
               if template else str(exc.detail))
    return error_response(exc.status_code, message, headers or None)


def library_error(scrub: dict[str, str]):
    """A core error (the library lacks the bundle's embeddings, a query of the wrong space):
    409, its message with the server's own paths (`scrub`: path -> name) replaced, since
    nothing but the library's records is served."""

    async def handler(request: Request, exc: Ulip2Error) -> JSONResponse:
        message = str(exc)
        for path, name in scrub.items():
            message = message.replace(path, name)
        return error_response(409, message)

    return handler


async def database_error(request: Request, exc: sqlite3.Error) -> JSONResponse:
    # A library locked by a long index run past the timeout, or a damaged file: the request
    # was fine; the log says which.
    log.warning("library error on %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, "the library could not be read or written just now (busy or damaged); "
                               "try again, and if it goes on, check the server's log")


async def not_writable(request: Request, exc: PermissionError) -> JSONResponse:
    log.warning("library not writable: %s", exc)
    return error_response(503, "the server cannot write the library file (its folder is not writable); "
                               "start the server where the library may be written")


async def server_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's ServerErrorMiddleware calls this, then re-raises for the server's log.
    return error_response(500, "internal error: the server's log has the details; "
                               "report it with the request that caused it")
