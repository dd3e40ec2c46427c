"""`ulip2 serve`: one asset library as an HTTP JSON API for a studio (Starlette on uvicorn).
A surface like cli/ and gui/: thin over core.library, which never imports it.

    app          create_app(db, bundle, token): the routes under /v1, the OpenAPI document
    connections  read-only Library connections, one per reader thread, and the one writer
    limits       bounds on what a request may ask, and the checks that hold it to them
    errors       ApiError, and the handlers that make every error a JSON body {"error": ...}
    hosts        which Host headers a server bound to loopback answers; listening sockets

Starlette and uvicorn are the optional extra `serve` (pip install 'ulip2[serve]').
"""
