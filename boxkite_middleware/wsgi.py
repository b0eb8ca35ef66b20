"""WSGI transport: copy what the app reads and writes, record on ``close()``, serve /metrics.

The app sees the same bytes, status, headers, ``exc_info``, ``write()`` callable and
``close()`` as without the middleware; a request that carries no prediction gets the app's
own iterable back untouched (servers look for ``wsgi.file_wrapper`` instances).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exposition import metrics_wsgi_app, report_wsgi_app
from .monitor import Exchange, Options, content_length, header, logger, monitor_for

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from typing_extensions import Unpack

    from .baseline import Baseline


class WSGIMiddleware:
    """Record prediction requests of a WSGI app and serve ``/metrics``.

    ``app.wsgi_app = WSGIMiddleware(app.wsgi_app, baseline="histogram.prom")``; passing the
    Flask app itself wraps its current ``wsgi_app`` (so assigning the result back does not
    recurse). Options are those of `Monitor`.
    """

    def __init__(
        self,
        app: WSGIApplication,
        baseline: Baseline | str | Path | None = None,
        **options: Unpack[Options],
    ) -> None:
        self.app: WSGIApplication = getattr(app, "wsgi_app", app)
        self.monitor = monitor_for(self, baseline, options)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if self.monitor.is_metrics(method, path):
            return metrics_wsgi_app(environ, start_response)
        if self.monitor.is_report(method, path):
            return report_wsgi_app(environ, start_response)
        if not self.monitor.workers_checked:
            self.monitor.check_workers(server_says_several=bool(environ.get("wsgi.multiprocess")))
        exchange = self.monitor.exchange(
            method,
            path,
            environ.get("CONTENT_TYPE"),
            content_length(environ.get("CONTENT_LENGTH")),
            environ.get("HTTP_X_REQUEST_ID"),
        )
        if exchange is None:
            return self.app(environ, start_response)
        environ["wsgi.input"] = _TeeInput(environ["wsgi.input"], exchange)

        def copying_start_response(status: str, headers: list, exc_info: Any = None) -> Any:
            try:
                exchange.response_started(
                    int(status[:3]),
                    header(headers, "content-type"),
                    header(headers, "content-encoding"),
                )
                if exchange.logs_predictions and exchange.request_id is None:
                    exchange.request_id = header(headers, "x-request-id")
            except Exception:  # a malformed status is the server's to reject, not ours
                logger.debug("boxkite-middleware: unreadable status %r", status)
            write = start_response(status, headers, exc_info)

            def copying_write(data: bytes) -> object:
                exchange.response_data(data)
                return write(data)

            return copying_write

        try:
            iterable = self.app(environ, copying_start_response)
        except Exception:
            exchange.finish()
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(iterable, file_wrapper):
            exchange.finish()
            return iterable
        return _TeeResponse(iterable, exchange)


class _TeeInput:
    """``wsgi.input`` that copies what the app reads; everything else passes through."""

    def __init__(self, stream: Any, exchange: Exchange) -> None:
        self._stream = stream
        self._exchange = exchange

    def read(self, *size: Any) -> bytes:
        data = self._stream.read(*size)
        self._exchange.request_data(data)
        return data

    def readinto(self, buffer: Any) -> int | None:
        """werkzeug reads with ``readinto`` when the stream has it; copy those bytes too."""
        readinto = getattr(self._stream, "readinto", None)
        if readinto is None:
            data = self._stream.read(len(buffer))
            buffer[: len(data)] = data
            count: int | None = len(data)
        else:
            count = readinto(buffer)
        if count:
            self._exchange.request_data(bytes(memoryview(buffer)[:count]))
        return count

    def readline(self, *size: Any) -> bytes:
        line = self._stream.readline(*size)
        self._exchange.request_data(line)
        return line

    def readlines(self, *hint: Any) -> list[bytes]:
        lines = self._stream.readlines(*hint)
        for line in lines:
            self._exchange.request_data(line)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            self._exchange.request_data(line)
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _TeeResponse:
    """The app's response iterable, copied as it passes; recorded after the app's close()."""

    def __init__(self, iterable: Iterable[bytes], exchange: Exchange) -> None:
        self._iterable = iterable
        self._exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._iterable:
            self._exchange.response_data(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        finally:
            self._exchange.finish()
