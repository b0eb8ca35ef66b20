"""ASGI transport: wrap ``receive`` and ``send`` to copy the exchange; serve /metrics.

Pure ASGI (no ``BaseHTTPMiddleware``): the app's own ``receive`` calls pull the body, so
``100 Continue``, disconnects and streaming behave exactly as without the middleware.
Lifespan and websocket scopes pass through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exposition import metrics_asgi_app, report_asgi_app
from .monitor import Exchange, Options, content_length, header, logger, monitor_for

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .baseline import Baseline

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""The ASGI 3 types, spelled as starlette's ``types`` module spells them."""


class ASGIMiddleware:
    """Record prediction requests of an ASGI app and serve ``/metrics``.

    ``app.add_middleware(ASGIMiddleware, baseline="histogram.prom")`` or
    ``ASGIMiddleware(app, baseline=...)``. Options are those of `Monitor`.
    """

    def __init__(
        self,
        app: ASGIApp,
        baseline: Baseline | str | Path | None = None,
        **options: Unpack[Options],
    ) -> None:
        self.app = app
        self.monitor = monitor_for(self, baseline, options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.monitor.workers_checked:
            self.monitor.check_workers()
        method, path = scope["method"], scope["path"]
        if self.monitor.is_metrics(method, path):
            await metrics_asgi_app(scope, receive, send)
            return
        if self.monitor.is_report(method, path):
            await report_asgi_app(scope, receive, send)
            return
        headers = scope.get("headers", ())
        exchange = self.monitor.exchange(
            method,
            path,
            _header(headers, b"content-type"),
            content_length(_header(headers, b"content-length")),
            _header(headers, b"x-request-id"),
        )
        if exchange is None:
            await self.app(scope, receive, send)
            return

        async def copying_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                exchange.request_data(message.get("body", b""))
            return message

        async def copying_send(message: Message) -> None:
            last = _copy_sent(exchange, message)
            await send(message)
            if last:
                await _finish(exchange)

        try:
            await self.app(scope, copying_receive, copying_send)
        finally:
            exchange.finish()


OFF_LOOP_BYTES = 64 * 1024
"""Exchanges of more bytes are recorded on a worker thread: at ~70 ms per MiB for the densest
JSON (one value a row), recording 64 KiB on the event loop would hold it ~4 ms."""


async def _finish(exchange: Exchange) -> None:
    """Record after the response went out; big exchanges off the event loop, so that the
    worker's other connections wait at most a GIL switch interval (5 ms), not the recording.
    Without anyio (a plain asyncio server without starlette) the recording stays inline."""
    if exchange.copied_bytes > OFF_LOOP_BYTES:
        try:
            import anyio.to_thread
        except ImportError:
            pass
        else:
            await anyio.to_thread.run_sync(exchange.finish)
            return
    exchange.finish()


def _copy_sent(exchange: Exchange, message: Message) -> bool:
    """Copy a message the app sends; True for the last body message. A malformed message is
    the server's to reject: it passes through uncopied and the exchange records no response."""
    try:
        if message["type"] == "http.response.start":
            headers = message.get("headers", ())
            exchange.response_started(
                int(message["status"]),
                _header(headers, b"content-type"),
                _header(headers, b"content-encoding"),
            )
            if exchange.logs_predictions and exchange.request_id is None:
                exchange.request_id = _header(headers, b"x-request-id")
        elif message["type"] == "http.response.body":
            exchange.response_data(message.get("body", b""))
            return not message.get("more_body", False)
    except Exception:
        logger.debug("boxkite-middleware: an ASGI message it could not read passed through")
    return False


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    value = header(headers, name)
    return None if value is None else value.decode("latin-1")
