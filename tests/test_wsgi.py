"""WSGI middleware: Flask with real clients, and the app never sees a difference."""

from __future__ import annotations

import hashlib
import io
import uuid

import pytest
from flask import Flask, Response, jsonify, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

from boxkite_middleware import BoxkiteMiddleware, WSGIMiddleware

from .helpers import (
    CURL_BODY,
    CURL_CONTENT_TYPE,
    Scrape,
    curl_walkthrough,
    mixed_baseline,
    post,
    scrape,
    split_body,
    wine_baseline,
)
from .servers import settled_metrics, wsgi_server

WINE = wine_baseline()


def wine_app() -> Flask:
    app = Flask("wine")

    @app.post("/invocations")
    def invocations():
        rows = request.get_json()["data"]
        return jsonify({"predictions": [round(row[0] / 2, 1) for row in rows]})

    return app


def test_curl_against_flask_under_a_real_server():
    app = wine_app()
    model = "curl-" + uuid.uuid4().hex[:6]
    app.wsgi_app = BoxkiteMiddleware(app.wsgi_app, baseline=WINE, model=model)
    with wsgi_server(app) as url:
        assert curl_walkthrough(url) == {"predictions": [6.4]}
        status, headers, body = settled_metrics(url, model, 1)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    scrape = Scrape(body.decode())
    assert scrape.value("boxkite_requests_total", model=model, reason="ok") == 1
    # 12.8 lands in the bucket of the first alcohol edge >= 12.8, and nowhere else.
    alcohol = WINE.features["alcohol"]
    first = next(i for i, edge in enumerate(alcohol.edges) if edge >= 12.8)
    buckets = scrape.find("boxkite_feature_value_bucket", model=model, feature="alcohol")
    assert [s.value for s in buckets] == [0.0] * first + [1.0] * (len(buckets) - first)
    assert scrape.value("boxkite_feature_value_sum", model=model, feature="alcohol") == 12.8
    assert scrape.total("boxkite_inference_value_bucket", model=model, le="+Inf") == 1


def test_passing_the_flask_app_itself_does_not_recurse():
    app = wine_app()
    app.wsgi_app = BoxkiteMiddleware(app, baseline=WINE, model="literal")
    response = app.test_client().post(
        "/invocations", data=CURL_BODY, content_type=CURL_CONTENT_TYPE
    )
    assert response.status_code == 200 and response.get_json() == {"predictions": [6.4]}
    assert isinstance(app.wsgi_app, WSGIMiddleware)


# ------------------------------------------------------------------------------------------
# The app cannot tell the difference: same bytes in, same response out.


def echo_app() -> Flask:
    """Reports exactly what it read; misbehaves on request, as real apps sometimes do."""
    app = Flask("echo")

    @app.post("/<mode>")
    def echo(mode):
        if mode == "raise-before":
            raise RuntimeError("before start_response")
        data = request.stream.read(7) if mode == "partial" else request.get_data()
        digest = {"sha256": hashlib.sha256(data).hexdigest(), "length": len(data)}
        if mode == "stream":
            return Response(
                (chunk for chunk in [b"[1,", b"2,", b"3]"]), mimetype="application/json"
            )
        if mode == "text":
            return Response(b"plain", mimetype="text/plain")
        if mode == "error":
            return jsonify(digest), 500
        return jsonify(predictions=[1.0], **digest)

    return app


def _call(app, body: bytes, content_type: str, path: str = "/echo", **environ) -> tuple:
    builder = EnvironBuilder(path=path, method="POST", data=body, content_type=content_type)
    env = builder.get_environ()
    env.update(environ)
    if environ.get("wsgi.input_terminated"):
        env.pop("CONTENT_LENGTH", None)
    try:
        iterable, status, headers = run_wsgi_app(app, env, buffered=True)
    except Exception as error:  # both variants must raise the same
        return ("raised", type(error), str(error))
    return status, sorted(headers.items()), b"".join(iterable)


HOSTILE = [
    (b'{"columns": ["x"], "data": [[1', "application/json"),
    (b"\xff\xfe\xfa not utf-8", "application/json"),
    (b"\xef\xbb\xbf" + CURL_BODY, "application/json"),
    (b'{"columns": ["x"], "data": [[1e400], [NaN], [Infinity], [-Infinity]]}', "application/json"),
    (b"[" * 50_000 + b"]" * 50_000, "application/json"),  # deep, and over the cap
    (b"[" * 2_000 + b"]" * 2_000, "application/json"),  # deep, under the cap
    (b'{"columns": ["x", "size"], "data": [[1, 2], [3]]}', "application/json"),
    (b'{"columns": ["x", "x"], "data": [[1, 2]]}', "application/json"),
    (b'{"columns": ["x"], "data": [[1]]}' + b" " * 5000, "application/json"),  # > cap
    (b"", "application/json"),
    (CURL_BODY, CURL_CONTENT_TYPE),
    (b"x,colour\n1.5,red\n", "text/csv"),
    (b"<xml/>", "application/xml"),
]
MODES = ["echo", "partial", "stream", "text", "error", "raise-before"]


@pytest.mark.parametrize(("body", "content_type"), HOSTILE)
@pytest.mark.parametrize("mode", MODES)
def test_hostile_requests_change_nothing_for_app_or_client(body, content_type, mode):
    bare = echo_app()
    wrapped = echo_app()
    wrapped.wsgi_app = BoxkiteMiddleware(
        wrapped.wsgi_app, baseline=mixed_baseline(), model="hostile", max_body_bytes=4096
    )
    bare.config["PROPAGATE_EXCEPTIONS"] = wrapped.config["PROPAGATE_EXCEPTIONS"] = True
    for extra in ({}, {"wsgi.input_terminated": True}):  # with a length, and chunked
        expected = _call(bare, body, content_type, f"/{mode}", **extra)
        assert _call(wrapped, body, content_type, f"/{mode}", **extra) == expected


@given(st.binary(max_size=2000), st.sampled_from(["application/json", "text/csv"]))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_bodies_change_nothing(body, content_type):
    bare, wrapped = echo_app(), echo_app()
    wrapped.wsgi_app = BoxkiteMiddleware(
        wrapped.wsgi_app, baseline=mixed_baseline(), model="random"
    )
    assert _call(wrapped, body, content_type) == _call(bare, body, content_type)


def test_outcomes_of_hostile_requests_are_counted_with_reasons():
    model = "reasons-" + uuid.uuid4().hex[:6]
    app = echo_app()
    app.config["PROPAGATE_EXCEPTIONS"] = True
    app.wsgi_app = BoxkiteMiddleware(
        app.wsgi_app, baseline=mixed_baseline(), model=model, max_body_bytes=4096
    )
    for body, content_type in HOSTILE:
        _call(app, body, content_type)
    _call(app, CURL_BODY, "application/json", "/error")
    _call(app, CURL_BODY, "application/json", "/raise-before")
    _call(
        app,
        b'{"columns": ["x"], "data": [[1]]}' + b" " * 5000,
        "application/json",
        **{"wsgi.input_terminated": True},
    )
    scrape = Scrape(Client(app).get("/metrics").get_data(as_text=True))

    def count(reason: str) -> float:
        return scrape.total("boxkite_requests_total", model=model, reason=reason)

    assert count("undecodable") == 4  # truncated, non-UTF-8, nested 2,000 deep, empty
    assert count("too_large") == 3  # by Content-Length (twice), and counting a chunked body
    assert count("bad_shape") == 1
    assert count("not_json") == 0  # a form or file POST is no prediction request: not counted
    assert count("error_status") == 1
    assert count("no_response") == 1
    assert count("no_features") == 2  # the wine curl (with and without BOM) names no feature
    assert count("ok") == 3  # 1e400/NaN/Infinity, duplicate columns, CSV
    assert scrape.value("boxkite_feature_missing_total", model=model, feature="x") >= 1


def test_close_exc_info_write_and_file_wrapper_pass_through():
    events = []

    class Body:
        def __iter__(self):
            yield b'{"predictions": ["cat"]}'

        def close(self):
            events.append("closed")

    def app(environ, start_response):
        environ["wsgi.input"].read()
        try:
            raise ValueError("late")
        except ValueError:
            import sys

            start_response("200 OK", [("Content-Type", "application/json")], sys.exc_info())
        return Body()

    wrapped = BoxkiteMiddleware(app, baseline=mixed_baseline(), model="close")
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["exc_info"] = exc_info
        return lambda data: None

    environ = EnvironBuilder(
        method="POST", data=b'{"columns": ["x"], "data": [[1]]}', content_type="application/json"
    ).get_environ()
    iterable = wrapped(environ, start_response)
    assert b"".join(iterable) == b'{"predictions": ["cat"]}'
    iterable.close()
    assert events == ["closed"]
    assert seen["exc_info"][0] is ValueError

    class FileWrapper:
        def __init__(self, file, block_size=8192):
            self.file = file

        def __iter__(self):
            return iter([b"file"])

    def file_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](None)

    environ = EnvironBuilder(
        method="POST", data=b"{}", content_type="application/json"
    ).get_environ()
    environ["wsgi.file_wrapper"] = FileWrapper
    returned = BoxkiteMiddleware(file_app, baseline=mixed_baseline(), model="file")(
        environ, start_response
    )
    assert isinstance(returned, FileWrapper)

    written = []

    def write_app(environ, start_response):
        environ["wsgi.input"].read()
        write = start_response("200 OK", [("Content-Type", "application/json")])
        write(b'{"predictions": ')
        return [b'["dog"]}']

    model = "write-" + uuid.uuid4().hex[:6]
    environ = EnvironBuilder(
        method="POST", data=b'{"columns": ["x"], "data": [[1]]}', content_type="application/json"
    ).get_environ()
    out = BoxkiteMiddleware(write_app, baseline=mixed_baseline(), model=model)(
        environ, lambda status, headers, exc_info=None: written.append
    )
    assert list(out) == [b'["dog"]}'] and written == [b'{"predictions": ']
    out.close()
    result = scrape()
    assert result.value("boxkite_inference_category_total", model=model, category="dog") == 1


def test_requests_that_carry_no_prediction_get_the_apps_own_iterable():
    body = [b"hello"]

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    wrapped = BoxkiteMiddleware(app, baseline=mixed_baseline(), model="untouched")
    environ = EnvironBuilder(method="GET", path="/").get_environ()
    assert wrapped(environ, lambda *args: None) is body


def test_expect_100_continue_over_a_real_server():
    app = wine_app()
    model = "continue-" + uuid.uuid4().hex[:6]
    app.wsgi_app = BoxkiteMiddleware(app.wsgi_app, baseline=WINE, model=model)
    with wsgi_server(app) as url:
        assert curl_walkthrough(url, "Expect: 100-continue") == {"predictions": [6.4]}
        assert curl_walkthrough(url, "Transfer-Encoding: chunked") == {"predictions": [6.4]}
        scrape = Scrape(settled_metrics(url, model, 2)[2].decode())
    assert scrape.value("boxkite_requests_total", model=model, reason="ok") == 2


def test_an_app_that_raises_after_start_response_behaves_the_same():
    closed = []

    class Failing:
        def __iter__(self):
            yield b'{"predictions": ['
            raise RuntimeError("mid-stream")

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/json")])
        return Failing()

    model = "raises-" + uuid.uuid4().hex[:6]
    outcomes = []
    for target in (app, BoxkiteMiddleware(app, baseline=mixed_baseline(), model=model)):
        environ = EnvironBuilder(
            method="POST",
            data=b'{"columns": ["x"], "data": [[1]]}',
            content_type="application/json",
        ).get_environ()
        iterable = target(environ, lambda *args: None)
        received = []
        with pytest.raises(RuntimeError, match="mid-stream"):
            for chunk in iterable:
                received.append(chunk)
        iterable.close()
        outcomes.append(received)
    assert outcomes[0] == outcomes[1] == [b'{"predictions": [']
    assert closed == [True, True]
    result = scrape()
    # The features were read and the status was 200: recorded, predictions unreadable.
    assert (
        result.value(
            "boxkite_requests_total", model=model, outcome="recorded", reason="undecodable"
        )
        == 1
    )


@pytest.mark.parametrize("name", ["Content-Type", "content-type", "CONTENT-TYPE"])
def test_response_header_names_match_in_any_case(name):
    """HTTP header names are case-insensitive: any spelling of Content-Type is found."""

    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("X-Other", "1"), (name, "application/json")])
        return [b'["cat"]']

    model = "case-" + uuid.uuid4().hex[:6]
    post(BoxkiteMiddleware(app, baseline=mixed_baseline(), model=model), split_body({"x": [1.0]}))
    result = scrape()
    assert result.value("boxkite_requests_total", model=model, reason="ok") == 1
    assert result.value("boxkite_inference_category_total", model=model, category="cat") == 1


@pytest.mark.parametrize("length", ["²", "١٢", "-1", "1e3"])
def test_a_content_length_that_is_no_ascii_number_passes_through(length):
    def app(environ, start_response):
        body = environ["wsgi.input"].read(2)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    wrapped = BoxkiteMiddleware(app, baseline=mixed_baseline(), model="length")
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/invocations",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": length,
        "wsgi.input": io.BytesIO(b"{}"),
    }
    statuses = []
    iterable = wrapped(environ, lambda status, headers, exc_info=None: statuses.append(status))
    assert b"".join(iterable) == b"{}" and statuses == ["200 OK"]
    iterable.close()
