"""A real uvicorn server on loopback, in a thread, for the server and web page tests."""

from __future__ import annotations

import contextlib
import threading
import time

import uvicorn

from serve.hosts import listen, url


@contextlib.contextmanager
def serving(app):
    """`app` on a real uvicorn server in a thread, on a free loopback port: yields its URL."""
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield url(sock)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"
