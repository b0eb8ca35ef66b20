"""The prediction log: a JSON line per recorded request, written off the request path."""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import urllib.request

import pytest

from boxkite_middleware import BoxkiteMiddleware

from .helpers import mixed_baseline, scrape
from .servers import BODY, ROWS, Server, asgi_server, wsgi_server


class Lines(logging.Handler):
    """Collects the log's lines; ``hold`` blocks the log thread like a stuck log shipper."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict] = []
        self.hold = threading.Event()
        self.hold.set()

    def emit(self, record: logging.LogRecord) -> None:
        self.hold.wait(30)
        self.lines.append(json.loads(record.getMessage()))


@pytest.fixture
def lines():
    from boxkite_middleware.predictionlog import logger

    handler = Lines()
    logger.addHandler(handler)
    yield handler
    handler.hold.set()
    logger.removeHandler(handler)


def _post(url: str, body: bytes, **headers: str) -> bytes:
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json", **headers}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def _flush() -> None:
    from boxkite_middleware.predictionlog import prediction_log

    assert prediction_log.flush(10)


def _wsgi_app(environ, start_response):
    document = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
    start_response("200 OK", [("Content-Type", "application/json"), ("X-Request-ID", "theirs")])
    return [json.dumps({"predictions": ["cat"] * len(document["data"])}).encode()]


def test_a_line_per_request_with_its_features_predictions_and_request_id(lines):
    wrapped = BoxkiteMiddleware(
        _wsgi_app, baseline=mixed_baseline(), model="logged-wsgi", log_predictions=True
    )
    with wsgi_server(wrapped) as url:
        _post(url, BODY, **{"X-Request-ID": "req-1"})
        _post(url, BODY)  # no request id: the one the app answers with
        _post(url, b'{"columns": ["x"], "data": [[NaN]]}')  # NaN is not JSON: null in the log
    _flush()
    first, second, third = lines.lines
    assert first["request_id"] == "req-1" and second["request_id"] == "theirs"
    assert first["model"] == "logged-wsgi" and first["baseline"] == mixed_baseline().identity
    assert first["status"] == 200 and first["rows"] == 3
    assert first["features"] == {"x": [row[0] for row in ROWS], "colour": [r[1] for r in ROWS]}
    assert first["predictions"] == {"0": ["cat", "cat", "cat"]}
    assert third["features"] == {"x": [None]}
    assert first["time"].endswith("+00:00")


def test_asgi_lines_and_nothing_for_requests_not_recorded(lines):
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/invocations")
    async def invocations(document: dict) -> dict:
        return {"predictions": [len(row) for row in document["data"]]}

    app.add_middleware(
        BoxkiteMiddleware, baseline=mixed_baseline(), model="logged-asgi", log_predictions=True
    )
    with asgi_server(app) as url:
        _post(url, BODY, **{"X-Request-ID": "a1"})
        _post(url, b'{"columns": ["unknown"], "data": [[1]]}')  # no feature of the baseline
    _flush()
    assert [line["request_id"] for line in lines.lines] == ["a1"]
    assert lines.lines[0]["predictions"] == {"0": [2, 2, 2]}


def test_a_stuck_log_drops_and_counts_never_blocks_the_app(lines, monkeypatch):
    from boxkite_middleware import predictionlog

    monkeypatch.setattr(predictionlog, "MAX_QUEUED_BYTES", 3 * (len(BODY) + 64))
    wrapped = BoxkiteMiddleware(
        _wsgi_app, baseline=mixed_baseline(), model="logged-stuck", log_predictions=True
    )
    dropped = {"name": "boxkite_prediction_log_dropped_total", "model": "logged-stuck"}
    assert scrape().value(**dropped) == 0  # shows from the start
    lines.hold.clear()  # the handler blocks: the queue fills
    with wsgi_server(wrapped) as url:
        answers = [_post(url, BODY) for _ in range(10)]
    assert all(json.loads(answer)["predictions"] == ["cat"] * 3 for answer in answers)
    lines.hold.set()
    _flush()
    # three bodies fit (the one the stuck handler holds still counts); the other seven drop
    assert scrape().value(**dropped) == 7
    assert len(lines.lines) == 3


def test_gunicorn_workers_log_after_a_preloaded_fork(tmp_path):
    """The log thread is started in each worker (the master's does not survive a fork); with
    no handler configured, lines go to standard error as bare JSON."""
    command = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:{port}", "--preload"]
    command += ["-c", "python:boxkite_middleware.gunicorn", "-w", "2", "tests.e2e_logged:app"]
    server = Server(tmp_path, *command)
    try:
        server.post(20)
        assert server.scrape().value("boxkite_requests_total", model="logged", reason="ok") == 20
    finally:
        server.stop()
    logged = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert len(logged) == 20 and {line["model"] for line in logged} == {"logged"}
    assert all(math.isclose(line["features"]["x"][0], -3.5) for line in logged)
