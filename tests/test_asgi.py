"""ASGI middleware: FastAPI under uvicorn with real clients; the app never sees a difference."""

from __future__ import annotations

import contextlib
import hashlib
import uuid

import httpx2
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient

from boxkite_middleware import ASGIMiddleware, BoxkiteMiddleware

from .helpers import (
    CURL_BODY,
    CURL_CONTENT_TYPE,
    Scrape,
    curl_walkthrough,
    mixed_baseline,
    scrape,
    split_body,
    wine_baseline,
)
from .servers import asgi_server, get, settled_metrics
from .test_wsgi import HOSTILE, MODES

WINE = wine_baseline()


def wine_app() -> FastAPI:
    app = FastAPI()

    @app.post("/invocations")
    async def invocations(request: Request):
        rows = (await request.json())["data"]
        return {"predictions": [round(row[0] / 2, 1) for row in rows]}

    return app


def test_add_middleware_builds_the_asgi_variant():
    app = wine_app()
    app.add_middleware(BoxkiteMiddleware, baseline=WINE, model="kind")
    with TestClient(app) as client:
        response = client.post(
            "/invocations", content=CURL_BODY, headers={"Content-Type": CURL_CONTENT_TYPE}
        )
        assert response.json() == {"predictions": [6.4]}
    assert isinstance(app.middleware_stack.app, ASGIMiddleware) or any(
        m.cls is BoxkiteMiddleware for m in app.user_middleware
    )


def test_curl_against_fastapi_under_uvicorn():
    app = wine_app()
    model = "asgi-curl-" + uuid.uuid4().hex[:6]
    app.add_middleware(BoxkiteMiddleware, baseline=WINE, model=model)
    with asgi_server(app) as url:
        assert curl_walkthrough(url) == {"predictions": [6.4]}
        status, _headers, body = settled_metrics(url, model, 1)
        openmetrics = get(f"{url}/metrics", {"Accept": "application/openmetrics-text"})
    assert status == 200
    scrape = Scrape(body.decode())
    assert scrape.value("boxkite_requests_total", model=model, reason="ok") == 1
    assert scrape.value("boxkite_feature_value_sum", model=model, feature="alcohol") == 12.8
    assert openmetrics[1]["content-type"].startswith("application/openmetrics-text")
    assert openmetrics[2].endswith(b"# EOF\n")


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/{mode}")
    async def echo(mode: str, request: Request):
        if mode == "raise-before":
            raise RuntimeError("before the response")
        if mode == "partial":
            data = b""
            async for chunk in request.stream():
                data = chunk[:7]
                break
        else:
            data = await request.body()
        digest = {"sha256": hashlib.sha256(data).hexdigest(), "length": len(data)}
        if mode == "stream":
            return StreamingResponse(iter([b"[1,", b"2,", b"3]"]), media_type="application/json")
        if mode == "text":
            return PlainTextResponse("plain")
        if mode == "error":
            return JSONResponse(digest, status_code=500)
        return {"predictions": [1.0], **digest}

    return app


async def _call(app, body: bytes, content_type: str, path: str) -> tuple:
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(path, content=body, headers={"Content-Type": content_type})
    headers = sorted((k, v) for k, v in response.headers.items() if k != "date")
    return response.status_code, headers, response.content


@pytest.mark.parametrize(("body", "content_type"), HOSTILE)
@pytest.mark.parametrize("mode", MODES)
def test_hostile_requests_change_nothing_for_app_or_client(body, content_type, mode):
    import asyncio

    bare = echo_app()
    wrapped = echo_app()
    wrapped.add_middleware(
        BoxkiteMiddleware, baseline=mixed_baseline(), model="asgi-hostile", max_body_bytes=4096
    )
    expected = asyncio.run(_call(bare, body, content_type, f"/{mode}"))
    assert asyncio.run(_call(wrapped, body, content_type, f"/{mode}")) == expected


def test_gzip_inside_is_decompressed_from_the_copy():
    app = FastAPI()

    @app.post("/invocations")
    async def invocations(request: Request):
        rows = (await request.json())["data"]
        return {"predictions": ["cat"] * len(rows), "padding": "x" * 2000}

    model = "gzip-" + uuid.uuid4().hex[:6]
    app.add_middleware(GZipMiddleware, minimum_size=100)  # inner: added first
    app.add_middleware(BoxkiteMiddleware, baseline=mixed_baseline(), model=model)  # outer
    with TestClient(app) as client:
        response = client.post(
            "/invocations",
            json={"columns": ["x"], "data": [[1.0], [2.0]]},
            headers={"Accept-Encoding": "gzip"},
        )
        assert response.headers["content-encoding"] == "gzip"
        assert response.json()["predictions"] == ["cat", "cat"]
        scrape = Scrape(client.get("/metrics", headers={"Accept-Encoding": "identity"}).text)
    assert scrape.value("boxkite_inference_category_total", model=model, category="cat") == 2


def test_lifespan_and_websockets_pass_through():
    events = []

    async def socket(websocket):
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text() + "!")
        await websocket.close()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(routes=[WebSocketRoute("/ws", socket)], lifespan=lifespan)
    app.add_middleware(BoxkiteMiddleware, baseline=mixed_baseline(), model="lifespan")
    with TestClient(app) as client, client.websocket_connect("/ws") as websocket:
        websocket.send_text("hello")
        assert websocket.receive_text() == "hello!"
    assert events == ["startup", "shutdown"]


def test_metrics_head_and_filters():
    app = wine_app()
    model = "filters-" + uuid.uuid4().hex[:6]
    app.add_middleware(BoxkiteMiddleware, baseline=WINE, model=model)
    with TestClient(app) as client:
        head = client.head("/metrics")
        assert head.status_code == 200 and head.content == b""
        only = client.get("/metrics", params={"name[]": "boxkite_requests_total"}).text
        assert "boxkite_requests_total{" in only and "boxkite_feature_value" not in only
        # Other methods reach the app, which has no such route.
        assert client.post("/metrics", content=b"{}").status_code == 404


def test_an_app_that_raises_after_the_response_started():
    import asyncio

    async def app(scope, receive, send):
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b"[1,", "more_body": True})
        raise RuntimeError("mid-stream")

    async def run(target):
        messages = []

        async def receive():
            return {"type": "http.request", "body": b'{"columns": ["x"], "data": [[1]]}'}

        async def send(message):
            messages.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "headers": [(b"content-type", b"application/json")],
        }
        with pytest.raises(RuntimeError, match="mid-stream"):
            await target(scope, receive, send)
        return messages

    model = "asgi-raises-" + uuid.uuid4().hex[:6]
    wrapped = ASGIMiddleware(app, baseline=mixed_baseline(), model=model)
    assert asyncio.run(run(app)) == asyncio.run(run(wrapped))
    result = scrape()
    assert (
        result.value(
            "boxkite_requests_total", model=model, outcome="recorded", reason="undecodable"
        )
        == 1
    )


def test_expect_100_continue_and_chunked_under_uvicorn():
    app = wine_app()
    model = "asgi-continue-" + uuid.uuid4().hex[:6]
    app.add_middleware(BoxkiteMiddleware, baseline=WINE, model=model)
    with asgi_server(app) as url:
        assert curl_walkthrough(url, "Expect: 100-continue") == {"predictions": [6.4]}
        assert curl_walkthrough(url, "Transfer-Encoding: chunked") == {"predictions": [6.4]}
        scrape = Scrape(settled_metrics(url, model, 2)[2].decode())
    assert scrape.value("boxkite_requests_total", model=model, reason="ok") == 2


@pytest.mark.parametrize("name", [b"content-type", b"Content-Type"])
def test_header_names_match_in_any_case(name):
    """Servers lower-case request headers, but apps may send any spelling: both are found."""
    import asyncio

    async def app(scope, receive, send):
        await receive()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(name, b"application/json")]}
        )
        await send({"type": "http.response.body", "body": b'["cat"]'})

    async def receive():
        return {"type": "http.request", "body": split_body({"x": [1.0]})}

    async def send(message):
        pass

    model = "asgi-case-" + uuid.uuid4().hex[:6]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(name, b"application/json")],
    }
    asyncio.run(ASGIMiddleware(app, baseline=mixed_baseline(), model=model)(scope, receive, send))
    result = scrape()
    assert result.value("boxkite_requests_total", model=model, reason="ok") == 1
    assert result.value("boxkite_inference_category_total", model=model, category="cat") == 1


@pytest.mark.parametrize("length", ["²", "١٢", "-1", "1e3", " 12"])
def test_a_content_length_that_is_no_ascii_number_passes_through(length):
    """``"²".isdigit()`` is true and ``int("²")`` raises: such a header reached the server."""
    import asyncio

    async def app(scope, receive, send):
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    wrapped = ASGIMiddleware(app, baseline=mixed_baseline(), model="length")
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "headers": [(b"content-type", b"application/json"), (b"content-length", length.encode())],
    }
    asyncio.run(wrapped(scope, receive, send))
    assert [message.get("status", message.get("body")) for message in sent] == [200, b"{}"]


def test_recording_a_big_body_does_not_block_the_event_loop():
    """A 2 MiB body of one-value rows takes ~0.2 s to record: on a worker thread, the loop
    keeps serving (a ticker's longest gap stays near the GIL's 5 ms switch interval)."""
    from benchmarks.bench_body_cost import loop_stall, one_value_body

    longest_gap, recording = loop_stall(one_value_body(2 << 20), model="loop")
    counted = scrape().value("boxkite_requests_total", model="loop", reason="no_predictions")
    assert counted == 1  # it was recorded, in the thread, before the app's call returned
    assert recording > 0.05  # the recording was long enough to have blocked the loop
    assert longest_gap < recording / 2, (longest_gap, recording)
