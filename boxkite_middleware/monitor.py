"""What the WSGI and ASGI middleware share: options, which requests to copy, and recording.

A transport creates an `Exchange` per candidate request, feeds it the bytes the app reads and
writes, and calls `Exchange.finish` once the response is done. An exchange never raises: what
it cannot record it counts as skipped, with a reason.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import logging
import random
import re
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AnyStr, TypedDict

from . import exposition, multiprocess, processes
from .baseline import Baseline
from .payload import (
    CSV_TYPES,
    Frame,
    Location,
    Reason,
    decode_any_request,
    decode_response,
    is_json,
)
from .predictionlog import Entry, prediction_log
from .recorder import Recorder, recorder_for
from .store import follow_uwsgi_forks, worker_started

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
"""Larger request or response bodies are not copied (skipped as ``too_large``)."""

logger = logging.getLogger("boxkite_middleware")

_failed = False


def log_failure(what: str) -> None:
    """Log the current exception: the first in a process with its traceback, later ones at
    debug level, so that a broken store (a vanished directory, a full disk) cannot flood the
    app's logs at request rate."""
    global _failed
    if _failed:
        logger.debug("boxkite-middleware %s", what, exc_info=True)
    else:
        _failed = True
        logger.exception("boxkite-middleware %s (later failures are logged at debug level)", what)


def count_skipped(recorder: Recorder, reason: str) -> None:
    """Count a skipped request; if even that fails, log it: never raise into the app."""
    try:
        recorder.skip(reason)
    except Exception:
        log_failure("could not count a skipped request")


def header(headers: Iterable[tuple[AnyStr, AnyStr]], name: AnyStr) -> AnyStr | None:
    """The first value of a header, ``name`` in lower case; WSGI (str) or ASGI (bytes) pairs.

    A plain scan: building werkzeug's or starlette's ``Headers`` for two lookups cost a tenth
    of a one-row request."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def content_length(value: str | None) -> int | None:
    """A ``Content-Length`` header's value, or None unless it is plain ASCII digits (RFC 9110,
    8.6): ``str.isdigit`` alone admits ``²``, which ``int`` rejects."""
    if value and value.isascii() and value.isdigit():
        return int(value)
    return None


def media_type(content_type: str | None) -> str:
    """``application/json; format=pandas-split`` -> ``application/json``.

    The media type is everything before the first ``;`` (RFC 9110, 8.3.1); its parameters are
    not needed, so no parser is. This module serves both transports, so it could use neither
    werkzeug's nor starlette's (each is only in its own extra)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class Paths:
    """Request paths: exact ones, and templates such as ``/models/{name}/predict`` whose
    ``{...}`` parts each match one path segment (as Starlette's and Flask's routes do)."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._exact: set[str] = set()
        templates = []
        for pattern in patterns:
            pieces = re.split(r"(\{[^{}/]*\})", pattern)
            if len(pieces) == 1:
                self._exact.add(pattern)
            else:
                templates.append(
                    "".join("[^/]+" if i % 2 else re.escape(p) for i, p in enumerate(pieces))
                )
        self._templates = re.compile("|".join(templates)) if templates else None

    def __contains__(self, path: str) -> bool:
        if path in self._exact:
            return True
        return self._templates is not None and self._templates.fullmatch(path) is not None


@dataclass(frozen=True)
class Locations:
    """Where the rows are in a request and each output in a response, when the app's JSON is
    none of the shapes we know: dotted paths (`payload.locate`)."""

    rows: Location | None = None
    outputs: dict[str, Location] | None = None


class Options(TypedDict, total=False):
    """The middleware's keyword-only options, as type checkers see them (defaults and
    meanings: `Monitor` and docs/reference.md)."""

    model: str
    metrics_path: str | None
    report_path: str | None
    paths: Iterable[str] | None
    exclude_paths: Iterable[str] | None
    max_body_bytes: int
    features: Iterable[str] | None
    expose_baseline: bool
    metrics_port: int | None
    metrics_host: str | None
    metrics_certfile: str | None
    metrics_keyfile: str | None
    pause_gc: bool
    sample: float
    record_server_errors: bool
    labels: Mapping[str, str] | None
    rows: Location | None
    outputs: Mapping[str, Location] | None
    log_predictions: bool


def monitor_for(owner: object, baseline: Baseline | str | Path | None, options: Any) -> Monitor:
    """The `Monitor` of a middleware; an unknown option is a TypeError that names the
    middleware the user called, not this module's class."""
    for name in options:
        if name not in Options.__annotations__:
            close = difflib.get_close_matches(name, Options.__annotations__, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(
                f"{type(owner).__name__}() got an unexpected keyword argument {name!r}{hint}"
            )
    return Monitor(baseline, **options)


class Monitor:
    """The middleware's options and its recorder; shared by the WSGI and ASGI transports."""

    def __init__(
        self,
        baseline: Baseline | str | Path | None = None,
        *,
        model: str = "default",
        metrics_path: str | None = "/metrics",
        paths: Iterable[str] | None = None,
        exclude_paths: Iterable[str] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        features: Iterable[str] | None = None,
        expose_baseline: bool = True,
        metrics_port: int | None = None,
        metrics_host: str | None = None,
        metrics_certfile: str | None = None,
        metrics_keyfile: str | None = None,
        pause_gc: bool = True,
        sample: float = 1.0,
        record_server_errors: bool = False,
        labels: Mapping[str, str] | None = None,
        rows: Location | None = None,
        outputs: Mapping[str, Location] | None = None,
        log_predictions: bool = False,
        report_path: str | None = exposition.REPORT_PATH,
    ) -> None:
        if isinstance(baseline, (str, Path)):
            baseline = Baseline.load(baseline)
        if baseline is None and not features:
            warnings.warn(
                "BoxkiteMiddleware without a baseline records request outcomes only: pass "
                "baseline='histogram.prom' (or features=[...]) to record feature values",
                stacklevel=3,
            )
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        if not 0 < sample <= 1:
            raise ValueError("sample is the share of requests to record: 0 < sample <= 1")
        if multiprocess.enabled():
            multiprocess.check_safe(multiprocess.directory())
        else:
            exposition.register_collectors()
        self.recorder: Recorder = recorder_for(
            model,
            baseline,
            list(features or ()),
            expose_baseline=expose_baseline,
            labels=labels,
        )
        self._prepare_files()
        listener = exposition.Listener.configured(
            metrics_port, metrics_host, metrics_certfile, metrics_keyfile
        )
        if listener is not None:
            metrics_path = report_path = None  # the app's own port no longer answers scrapes
            listener.serve()
        self.metrics_path = metrics_path
        self.report_path = report_path
        self.paths = None if paths is None else Paths(paths)
        self.exclude_paths = Paths(exclude_paths or ())
        self.max_body_bytes = max_body_bytes
        self.pause_gc = pause_gc
        self.sample = sample
        self.record_server_errors = record_server_errors
        self.locations = Locations(rows, None if outputs is None else dict(outputs))
        self.log_predictions = log_predictions
        if log_predictions:
            prediction_log.enable(model)
        logger.info(
            "boxkite-middleware: model %r, baseline %s (%d features, %d outputs), metrics %s, "
            "%s, recording %s of prediction requests",
            model,
            self.recorder.identity,
            len(self.recorder.features),
            len(self.recorder.outputs),
            f"on port {listener.port}" if listener else metrics_path or "not served here",
            f"files in {multiprocess.directory()}" if multiprocess.enabled() else "in memory",
            "all" if sample == 1 else f"{sample:.0%}",
        )
        self.check_workers()
        self.workers_checked = False  # again on the first request

    def _prepare_files(self) -> None:
        """Lay out every series now, not in the first request; in multi-process mode check
        the file layout and publish the baseline. A directory that cannot be written (gone,
        read-only, full) is logged, not raised: the app must boot and serve regardless."""
        try:
            if multiprocess.enabled():
                path = multiprocess.directory()
                multiprocess.check_directory(path)
                multiprocess.self_check(path)
                self.recorder.publish_baseline(path)
            worker_started()
            follow_uwsgi_forks()
            exposition.prepare()
        except (OSError, multiprocess.UnusableDirectory):
            log_failure("cannot write its metric files; requests pass through uncounted")

    def check_workers(self, *, server_says_several: bool = False) -> None:
        """Warn if scrapes would show part of the counts (several workers without a shared
        directory, or with different ones). Run when the middleware is built and again on its
        first request, when a server that starts its workers one by one has started them all.
        ``server_says_several`` is WSGI's ``wsgi.multiprocess``."""
        self.workers_checked = True
        try:
            if multiprocess.enabled():
                processes.check_shared_directory(multiprocess.directory())
            else:
                processes.check_without_directory(server_says_several=server_says_several)
        except Exception:  # a warning is never worth an error
            logger.debug("boxkite-middleware: could not check the workers", exc_info=True)

    def is_metrics(self, method: str, path: str) -> bool:
        return path == self.metrics_path and method in ("GET", "HEAD")

    def is_report(self, method: str, path: str) -> bool:
        return path == self.report_path and method in ("GET", "HEAD")

    def exchange(
        self,
        method: str,
        path: str,
        content_type: str | None,
        content_length: int | None,
        request_id: str | None = None,
    ) -> Exchange | None:
        """An exchange to copy this request into, or None if it carries no prediction."""
        if method != "POST" or (self.paths is not None and path not in self.paths):
            return None
        if path in self.exclude_paths:
            return None
        kind = media_type(content_type)
        if not (is_json(kind) or kind in CSV_TYPES):
            # Any POST is a candidate only if it is JSON or CSV (forms, uploads are no
            # predictions); on a declared prediction path anything else is worth counting.
            if self.paths is not None:
                count_skipped(self.recorder, Reason.NOT_JSON)
            return None
        if self.sample < 1 and random.random() >= self.sample:
            count_skipped(self.recorder, Reason.SAMPLED_OUT)  # decided before any copying
            return None
        if content_length is not None and content_length > self.max_body_bytes:
            count_skipped(self.recorder, Reason.TOO_LARGE)
            return None
        return Exchange(
            self.recorder,
            kind,
            self.max_body_bytes,
            pause_gc=self.pause_gc,
            record_server_errors=self.record_server_errors,
            locations=self.locations,
            log_predictions=self.log_predictions,
            request_id=request_id,
        )


class _CollectorPause:
    """Pause Python's cyclic garbage collector while any thread records a request.

    Decoding a 1000-row request allocates ~1000 short-lived lists. Collections that run while
    they are alive promote them to older generations, which soon triggers a full collection of
    the whole process (~10 ms with a typical app loaded): p99 of a 1000-row request went from
    3 to 15 ms. Paused, the temporaries are freed by reference counting before any collection
    sees them. The collector's switch is process-wide, so the pause is counted: the first
    recording thread turns it off if it was on, the last one turns it back on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._resume = False

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                self._resume = gc.isenabled()
                gc.disable()
            self._active += 1

    def __exit__(self, *exception: object) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0 and self._resume:
                gc.enable()


_COLLECTOR_PAUSE = _CollectorPause()


class Exchange:
    """The copied bytes of one request and its response, recorded once in `finish`."""

    __slots__ = (
        "_finished",
        "_limit",
        "_locations",
        "_pause_gc",
        "_record_server_errors",
        "_recorder",
        "_request",
        "_request_type",
        "_response",
        "_response_encoding",
        "_response_skip",
        "_response_type",
        "_status",
        "logs_predictions",
        "request_id",
    )

    def __init__(
        self,
        recorder: Recorder,
        request_type: str,
        limit: int,
        *,
        pause_gc: bool = True,
        record_server_errors: bool = False,
        locations: Locations | None = None,
        log_predictions: bool = False,
        request_id: str | None = None,
    ) -> None:
        self._recorder = recorder
        self.logs_predictions = log_predictions
        self.request_id = request_id  # for the prediction log; else the response's, if any
        self._locations = locations or Locations()
        self._pause_gc = pause_gc
        self._record_server_errors = record_server_errors
        self._request_type = request_type
        self._limit = limit
        self._request: bytearray | None = bytearray()
        self._response: bytearray | None = None
        self._response_skip = Reason.NO_PREDICTIONS  # why there is no copy, if there is none
        self._status: int | None = None
        self._response_type = ""
        self._response_encoding = ""
        self._finished = False

    @property
    def copied_bytes(self) -> int:
        return len(self._request or b"") + len(self._response or b"")

    def request_data(self, data: bytes) -> None:
        if self._request is not None:
            if len(self._request) + len(data) > self._limit:
                self._request = None  # too large: stop copying, remember why
            else:
                self._request += data

    def response_started(self, status: int, content_type: str | None, encoding: str | None):
        """Copy the response body only for JSON successes: never stream or files."""
        self._status = status
        self._response_type = media_type(content_type)
        self._response_encoding = (encoding or "").strip().lower()
        if 200 <= status < 300 and is_json(self._response_type):
            self._response = bytearray()

    def response_data(self, data: bytes) -> None:
        if self._response is not None:
            if len(self._response) + len(data) > self._limit:
                self._response, self._response_skip = None, Reason.TOO_LARGE
            else:
                self._response += data

    def finish(self) -> None:
        """Record what was copied; safe to call more than once, never raises."""
        if self._finished:
            return
        self._finished = True
        with _COLLECTOR_PAUSE if self._pause_gc else contextlib.nullcontext():
            try:
                reason = self._record()
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug(
                        "boxkite-middleware: model %r: %s (status %s, %s)",
                        self._recorder.model,
                        reason,
                        self._status,
                        self._request_type,
                    )
            except Exception:
                log_failure("could not record a request")
                count_skipped(self._recorder, Reason.INTERNAL_ERROR)

    def _record(self) -> str:
        """Record, or count why not; the reason label it was counted with."""
        server_error = self._record_server_errors and (self._status or 0) >= 500
        if self._status is None:
            reason = Reason.NO_RESPONSE
        elif self._status >= 400 and not server_error:
            reason = Reason.ERROR_STATUS
        elif self._request is None:
            reason = Reason.TOO_LARGE
        else:
            frames = decode_any_request(self._request, self._request_type, self._locations.rows)
            if not isinstance(frames, str):
                return self._record_frames(frames, server_error)
            reason = frames
        self._recorder.skip(reason)
        return reason

    def _record_frames(self, frames: Frame | Iterator[Frame | str], server_error: bool) -> str:
        if server_error:  # the features of the requests that break the model
            predictions: Any = Reason.ERROR_STATUS
        elif self._response is None:
            predictions = self._response_skip
        else:
            predictions = decode_response(
                self._response,
                self._response_type,
                self._response_encoding,
                self._limit,
                self._locations.outputs,
            )
        if isinstance(frames, Frame):
            reason = self._recorder.record(frames, predictions)
        else:
            reason = self._recorder.record_slices(frames, predictions)
        if self.logs_predictions and reason not in (Reason.NO_BASELINE, Reason.NO_FEATURES):
            self._log(predictions)
        return reason

    def _log(self, predictions: Any) -> None:
        """Queue the exchange for the prediction log (decoded there, off the request)."""
        assert self._request is not None
        prediction_log.submit(
            Entry(
                at=time.time(),
                request_id=self.request_id,
                model=self._recorder.model,
                baseline=self._recorder.identity,
                labels=self._recorder.labels,
                status=self._status,
                request=self._request,
                request_type=self._request_type,
                response=None if isinstance(predictions, str) else self._response,
                response_type=self._response_type,
                response_encoding=self._response_encoding,
                limit=self._limit,
                rows=self._locations.rows,
                outputs=self._locations.outputs,
            )
        )
