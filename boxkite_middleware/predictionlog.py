"""The prediction log: one JSON line per recorded request, through Python ``logging``.

The original boxkite sent every prediction to fluentd, so that ground truth arriving later
could be joined to what the model saw and said. Here the line goes to the
``boxkite_middleware.predictions`` logger, and the log shipper the team already runs
(fluent-bit, fluentd, vector) collects it from wherever its handler writes.

A request never waits for the log: the exchange's copied bytes are queued as they are, and a
background thread decodes them, builds the line and calls the handlers (whose I/O may block).
The queue holds at most `MAX_QUEUED_BYTES` of bodies; a request that finds it full is dropped
from the log, and counted in ``boxkite_prediction_log_dropped_total``.
"""

from __future__ import annotations

import collections
import datetime
import functools
import json
import logging
import math
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .payload import Location, decode_request, decode_response

MAX_QUEUED_BYTES = 16 * 1024 * 1024
"""Bodies waiting for the log thread, at most; beyond that, requests are dropped from it."""

logger = logging.getLogger("boxkite_middleware.predictions")


@dataclass(frozen=True)
class Entry:
    """What the log thread needs of one recorded exchange: its bytes, undecoded."""

    at: float
    request_id: str | None
    model: str
    baseline: str
    labels: Mapping[str, str]
    status: int | None
    request: bytes | bytearray
    request_type: str
    response: bytes | bytearray | None
    response_type: str
    response_encoding: str
    limit: int
    rows: Location | None
    outputs: Mapping[str, Location] | None

    @property
    def size(self) -> int:
        return len(self.request) + len(self.response or b"")

    def line(self) -> str | None:
        """The JSON line: features and predictions by column, as the middleware read them;
        None if the request no longer decodes (it always did when it was recorded)."""
        frame = decode_request(self.request, self.request_type, self.rows)
        if isinstance(frame, str):
            return None
        predictions: Any = None
        if self.response is not None:
            decoded = decode_response(
                self.response, self.response_type, self.response_encoding, self.limit, self.outputs
            )
            predictions = None if isinstance(decoded, str) else decoded
        names = frame.names or tuple(str(i) for i in range(len(frame.columns)))
        record = {
            "time": datetime.datetime.fromtimestamp(self.at, datetime.timezone.utc).isoformat(),
            "request_id": self.request_id,
            "model": self.model,
            "baseline": self.baseline,
            **({"labels": dict(self.labels)} if self.labels else {}),
            "status": self.status,
            "rows": frame.rows,
            "features": {name: _plain(column) for name, column in zip(names, frame.columns)},
            "predictions": None
            if predictions is None
            else {name: _plain(values) for name, values in predictions.items()},
        }
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _plain(values: Any) -> list[Any]:
    """JSON-ready values: numpy arrays as lists, NaN and infinities as null (JSON has none)."""
    listed = values.tolist() if hasattr(values, "tolist") else list(values)
    return [_finite(value) for value in listed]


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


class PredictionLog:
    """The process's queue of entries and the thread that writes them, started on first use
    (in a forked child too: the parent's thread does not exist there)."""

    def __init__(self) -> None:
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._entries: collections.deque[Entry] = collections.deque()
        self._queued = 0
        self._ready = threading.Condition()
        self._running = False

    def enable(self, model: str) -> None:
        """Make the drop counter of ``model`` show (at 0), and the lines visible."""
        _dropped_counter().labels(model=model)
        _ensure_handler()

    def submit(self, entry: Entry) -> bool:
        """Queue an entry; False (and counted) if the queue is full."""
        with self._ready:
            if self._queued + entry.size > MAX_QUEUED_BYTES:
                _dropped_counter().labels(model=entry.model).inc()
                return False
            if not self._running:
                self._running = True
                threading.Thread(
                    target=self._run, name="boxkite-prediction-log", daemon=True
                ).start()
            self._entries.append(entry)
            self._queued += entry.size
            self._ready.notify_all()
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until the thread has written everything queued; False on timeout."""
        with self._ready:
            return self._ready.wait_for(lambda: self._queued == 0, timeout)

    def _run(self) -> None:
        ready = self._ready
        while True:
            with ready:
                ready.wait_for(lambda: self._entries)
                entry = self._entries.popleft()
            try:
                line = entry.line()
                if line is not None:
                    logger.info(line)
            except Exception:
                logger.debug("boxkite-middleware: could not log a prediction", exc_info=True)
            with ready:
                self._queued -= entry.size
                ready.notify_all()


def _ensure_handler() -> None:
    """Lines go where the app's logging sends INFO of this logger; if nothing would show them
    (no handler on the way), to standard error, as bare JSON lines."""
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    if not logger.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


@functools.cache
def _dropped_counter() -> Any:
    from prometheus_client import Counter

    return Counter(
        "boxkite_prediction_log_dropped",
        "Recorded requests left out of the prediction log because its queue was full.",
        ["model"],
    )


prediction_log = PredictionLog()
