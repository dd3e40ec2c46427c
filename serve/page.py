"""The library's web page (serve/web/): four files, read once when the app is built and
served from memory under fixed routes, so no request names a file. The page talks to the
/v1 routes only; its Content-Security-Policy lets it load nothing from elsewhere and run no
inline script, so a name or caption that holds markup stays text."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/page.js": ("page.js", "text/javascript; charset=utf-8"),
         "/page.css": ("page.css", "text/css; charset=utf-8"),
         "/icon.svg": ("icon.svg", "image/svg+xml")}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def page_routes() -> list[Route]:
    """One GET route per file of serve/web/."""
    web = resources.files("serve") / "web"
    routes = []
    for route, (name, media_type) in FILES.items():
        body = (web / name).read_bytes()

        async def endpoint(request: Request, body: bytes = body, media_type: str = media_type) -> Response:
            return Response(body, media_type=media_type, headers=HEADERS)

        routes.append(Route(route, endpoint, methods=["GET"], include_in_schema=False))
    return routes
