"""Real servers on loopback for tests: werkzeug's threaded server and uvicorn, in threads."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
from collections.abc import Iterator

from werkzeug.serving import make_server

from .helpers import free_port


@contextlib.contextmanager
def wsgi_server(app) -> Iterator[str]:
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@contextlib.contextmanager
def asgi_server(app) -> Iterator[str]:
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def settled_metrics(url: str, model: str, requests: int) -> tuple[int, dict, bytes]:
    """``/metrics`` once all ``requests`` of ``model`` are counted (at most 5 s).

    A request is counted after its response went out, so a scrape sent the instant the response
    arrives may come first; a request never counted fails the caller's own checks."""
    from .helpers import Scrape

    deadline = time.monotonic() + 5
    while True:
        answer = get(f"{url}/metrics")
        counted = Scrape(answer[2].decode()).total("boxkite_requests_total", model=model)
        if counted >= requests or time.monotonic() > deadline:
            return answer
        time.sleep(0.01)
