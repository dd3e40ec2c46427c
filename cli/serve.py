"""`ulip2 serve`: one library as an HTTP JSON API (serve/). Light to import: Starlette and
uvicorn load only when the command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli import add_command
from cli.library import _BUNDLE_HELP, _DB_HELP
from core.errors import Ulip2Error
from core.library.client import read_token

def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 (a free one) to 65535."""
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; give 0 to 65535")
    return int(text)


def cmd_serve(args) -> int:
    token = read_token(args.token_file) if args.token_file else None
    try:
        import uvicorn

        from serve.app import create_app
        from serve.hosts import LOOPBACK_NAMES, is_loopback, listen, url
    except ImportError as exc:
        if not any(name in str(exc) for name in ("starlette", "uvicorn")):
            raise
        raise Ulip2Error("ulip2 serve needs Starlette and uvicorn: pip install 'ulip2[serve]'") from exc

    loopback = is_loopback(args.host)
    if not loopback and token is None:
        print(f"warning: serving on {args.host}: anyone who reaches it can search and read the library; "
              "writes are off until you give --token-file", file=sys.stderr)
    sock = listen(args.host, args.port)  # first: a port in use is said at once, before the text tower loads
    try:
        app = create_app(args.db, args.bundle, token=token,
                         allowed_hosts=LOOPBACK_NAMES | {args.host.strip("[]").lower()} if loopback else None)
    except BaseException:
        sock.close()
        raise
    db = app.state.connections.db_path
    print(f"serving {db.name} at {url(sock)}/v1/status (routes: {url(sock)}/openapi.json; writes: "
          f"{'need the token in ' + str(args.token_file) if token else 'off'}); Ctrl-C stops", flush=True)
    config = uvicorn.Config(app, log_level="warning" if args.quiet else "info", server_header=False,
                            timeout_graceful_shutdown=10)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stops gracefully on Ctrl-C, then raises it again: the expected end
        pass
    print("stopped", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = add_command(
        sub, "serve", cmd_serve, "serve one library to a studio: an HTTP JSON API for search, assets and tags",
        description="Serves one library file over HTTP, JSON in and out, under /v1: text search, search\n"
                    "like an indexed asset or an uploaded mesh or picture, asset records and thumbnails,\n"
                    "a person's tags written back; and a search page for a browser at the server's address.\n"
                    "The server is the library's one writer; reads run in parallel, beside index runs.\n"
                    "It listens on 127.0.0.1 unless --host says otherwise. Reads need no token; writes\n"
                    "need the token in --token-file (never on the command line), sent as\n"
                    "'Authorization: Bearer TOKEN'; without --token-file the server takes no writes.\n"
                    "Nothing but the library's records is served: assets are named by id, no request\n"
                    "names a file. The routes are listed in /openapi.json.",
        epilog="examples:\n"
               "  ulip2 serve --db studio.sqlite\n"
               "  curl 'http://127.0.0.1:8765/v1/search?q=a+wooden+chair&k=5'\n"
               "  curl http://127.0.0.1:8765/v1/assets/12\n"
               "  curl --data-binary @chair.glb 'http://127.0.0.1:8765/v1/search/mesh?type=glb&k=5'\n"
               "  open http://127.0.0.1:8765/ in a browser: the search page\n\n"
               "  python -c 'import secrets; print(secrets.token_urlsafe(32))' > token; chmod 600 token\n"
               "  ulip2 serve --db studio.sqlite --host 0.0.0.0 --token-file token\n"
               "  curl -X PUT -H \"Authorization: Bearer $(cat token)\" -H 'Content-Type: application/json' \\\n"
               "       -d '{\"tags\": [\"chair\", \"oak\"]}' http://studio-server:8765/v1/assets/12/tags\n\n"
               "Needs the serve extra: pip install 'ulip2[serve]'.")
    p.add_argument("--db", type=Path, default=None, help=_DB_HELP)
    p.add_argument("--bundle", type=Path, default=None, help=_BUNDLE_HELP)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    p.add_argument("--port", type=port_number, default=8765, help="port to listen on (default 8765; 0: a free one)")
    p.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                   help="file holding the bearer token writes need (default: none, and no writes)")
    p.add_argument("--quiet", action="store_true", help="log warnings and errors only, not every request")
