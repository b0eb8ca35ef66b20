"""Run as a script: record from several forked processes in multiprocess mode, print scrapes.

python -m tests.multiprocess_scrape DIRECTORY   (PROMETHEUS_MULTIPROC_DIR must be set)
"""

from __future__ import annotations

import json
import os
import sys

from werkzeug.test import Client

from boxkite_middleware import BoxkiteMiddleware

from .helpers import mixed_baseline

HOSTILE_ROWS = [[-1e308], [float("inf")], [float("-inf")], [None], ["abc"], [-3.5]]


def app(environ, start_response):

    environ["wsgi.input"].read()
    APP_COUNTER.inc()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"predictions": ["cat", "dog", "cat", "cat", "dog", "emu"]}']


def main() -> None:
    global APP_COUNTER
    from prometheus_client import Counter

    APP_COUNTER = Counter("app_requests", "The app's own metric.")
    wrapped = BoxkiteMiddleware(app, baseline=mixed_baseline(), model="mp")
    body = json.dumps({"columns": ["x"], "data": HOSTILE_ROWS}, allow_nan=True).encode()
    children = []
    for worker in range(3):
        pid = os.fork()
        if pid == 0:
            client = Client(wrapped)
            for _ in range(worker + 1):
                client.post(
                    "/invocations", data=body, content_type="application/json", buffered=True
                )
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    # A worker that is starting has created its files but not sized them yet.
    for kind in ("counter", "histogram"):
        open(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], f"{kind}_99999.db"), "w").close()
    client = Client(wrapped)
    text = client.get("/metrics").get_data(as_text=True)
    openmetrics = client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    ).get_data(as_text=True)
    selected = client.get("/metrics?name[]=boxkite_requests_total").get_data(as_text=True)
    from prometheus_client.exposition import generate_latest

    from boxkite_middleware.exposition import scrape_registry

    general = generate_latest(scrape_registry()).decode()  # every family by prometheus_client
    json.dump(
        {"text": text, "openmetrics": openmetrics, "selected": selected, "general": general},
        sys.stdout,
    )


if __name__ == "__main__":
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR"), "set PROMETHEUS_MULTIPROC_DIR"
    main()
