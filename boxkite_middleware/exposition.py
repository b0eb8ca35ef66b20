"""Render ``/metrics`` from what is stored, the same way in both modes.

Everything is rebuilt from stored ``key -> value`` entries: in one process from `store.Store`,
in multi-process mode from every worker's files (ours and the app's, so the app's metrics
aggregate too). Our live families, many series whose lines never change, are written by
`livetext`; the app's metrics are rebuilt as prometheus_client's ``MultiProcessCollector``
does and encoded by prometheus_client; baseline families, constant, are encoded once per
baseline. They come from memory (one process) or from the baseline documents in the directory
(several), never from the counting files, where they would be summed over every worker.
The collectors below serve the same families to prometheus_client's own registries and
handlers, and to ``name[]`` selections.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import gzip
import json
import os
import ssl
import threading
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, CollectorRegistry

from . import families, fileformat, livetext, multiprocess
from .baseline import BaselineError
from .store import store

LIVE_FAMILIES = (
    families.FEATURE_VALUE,
    families.FEATURE_CATEGORY,
    families.FEATURE_MISSING,
    families.INFERENCE_VALUE,
    families.INFERENCE_CATEGORY,
    families.INFERENCE_MISSING,
    families.REQUESTS,
    families.EXTRA_COLUMNS,
)
BASELINE_FAMILIES = (
    families.BASELINE_INFO,
    *(families.baseline_of(family) for family in LIVE_FAMILIES[:6]),
)

Entry = tuple[str, str, str, str, float, float]
"""``(type, gauge mode, pid, key, value, timestamp)``: one stored value and where it was."""


def _describe(described: Iterable[families.Family]) -> list[Metric]:
    """Family names, so that ``name[]`` filtering finds the collectors that hold them."""
    return [Metric(family.name, family.documentation, family.kind) for family in described]


@functools.lru_cache(maxsize=1 << 16)
def _parse_key(key: str) -> tuple[str, str, tuple[tuple[str, str], ...], str]:
    metric_name, name, labels, help_text = json.loads(key)
    return metric_name, name, tuple(sorted(labels.items())), help_text


def rebuild(entries: Iterable[Entry]) -> list[Metric]:
    """Families from stored entries, summed and with cumulative buckets as prometheus_client
    does; a histogram without ``_sum`` (negative buckets) also loses the ``_count`` it adds,
    as OpenMetrics forbids ``_count`` alone."""
    metrics: dict[str, Metric] = {}
    for kind, mode, pid, key, value, timestamp in entries:
        metric_name, name, labels, help_text = _parse_key(key)
        metric = metrics.get(metric_name)
        if metric is None:
            metric = metrics[metric_name] = Metric(metric_name, help_text, kind)
        if kind == "gauge":
            metric._multiprocess_mode = mode  # type: ignore[attr-defined]
            metric.add_sample(name, (*labels, ("pid", pid)), value, timestamp)  # type: ignore[arg-type]
        else:
            metric.add_sample(name, labels, value)  # type: ignore[arg-type]
    merged = list(MultiProcessCollector._accumulate_metrics(metrics, accumulate=True))
    for metric in merged:
        if metric.type == "histogram":
            summed = {_labels(s.labels) for s in metric.samples if s.name.endswith("_sum")}
            metric.samples = [
                s
                for s in metric.samples
                if not s.name.endswith("_count") or _labels(s.labels) in summed
            ]
    return merged


def _labels(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def prepare() -> None:
    """Lay out this process's own series for `livetext` now, not in its first scrape: every
    worker builds its layout once (~50 ms), and files of the same series share it."""
    series = sorted((s for s, _ in store().samples()), key=lambda s: s.key)
    if series:
        livetext.layout(tuple(s.key for s in series), tuple(s.family.kind for s in series))


def _file_entries(files: Iterable[tuple[str, bytes]], *, ours: bool = True) -> Iterator[Entry]:
    """Every file's entries; without ``ours``, only the app's (our own files are skipped)."""
    for name, data in files:
        if not ours and f"_{multiprocess.OWN_INFIX}_" in name:
            continue
        parts = name.removesuffix(".db").split("_")
        kind = parts[0]
        mode, pid = (parts[1], parts[2]) if kind == "gauge" and len(parts) > 2 else ("", "")
        summed_by_livetext = not ours and kind in LIVE_KINDS
        for key, value, timestamp in multiprocess.decode(data):
            if not (summed_by_livetext and key.startswith(OURS)):
                yield kind, mode, pid, key, value, timestamp


class StoreCollector:
    """This process's live families, from its store (single-process mode)."""

    def describe(self) -> list[Metric]:
        return _describe(LIVE_FAMILIES)

    def collect(self) -> Iterator[Metric]:
        if _rendering.get():  # `render` writes these itself
            return iter(())
        entries = (
            (series.family.kind, "", "", series.key, value, 0.0)
            for series, value in store().samples()
        )
        return iter(rebuild(entries))


class FilesCollector:
    """Every process's families, from the files in the directory (multi-process mode)."""

    def __init__(self, path: str) -> None:
        self._path = path

    def collect(self) -> Iterator[Metric]:
        return iter(rebuild(_file_entries(multiprocess.read_files(self._path))))


class BaselineCollector:
    """The baseline families and ``boxkite_baseline_info`` of every exposed baseline."""

    def __init__(self, path: str | None = None) -> None:
        self._path = path

    def describe(self) -> list[Metric]:
        return _describe(BASELINE_FAMILIES)

    def collect(self, quiet: bool = True) -> Iterator[Metric]:
        """One family per name over every baseline."""
        if quiet and _rendering.get():  # `render` adds these itself
            return iter(())
        out: dict[str, Metric] = {}
        for metric in self._baseline_metrics():
            merged = out.get(metric.name)
            if merged is None:
                merged = out[metric.name] = Metric(metric.name, metric.documentation, metric.type)
            merged.samples.extend(metric.samples)
        return iter(out.values())

    def _baseline_metrics(self) -> Iterator[Metric]:
        if self._path is None:
            from .recorder import recorders

            for recorder in recorders():
                yield from recorder.baseline_metrics
        else:
            for file, version in multiprocess.published_baselines(self._path):
                yield from _published_metrics(file, version)


@functools.lru_cache(maxsize=64)
def _published_metrics(file: str, version: int) -> list[Metric]:
    """A published baseline's families, read and parsed once per version of its file."""
    published = multiprocess.read_baseline(file)
    try:
        baseline = fileformat.parse(published["file"], file)  # type: ignore[index]
        return fileformat.metrics(baseline, published["labels"])  # type: ignore[index]
    except (TypeError, KeyError, BaselineError):  # not ours, or damaged: serve the rest
        return []


ENVIRONMENT = {
    "port": "BOXKITE_METRICS_PORT",
    "host": "BOXKITE_METRICS_HOST",
    "certfile": "BOXKITE_METRICS_CERTFILE",
    "keyfile": "BOXKITE_METRICS_KEYFILE",
}
"""The variables that configure a separate listener (the gunicorn configuration reads them)."""


@dataclass(frozen=True)
class Listener:
    """Scrapes served on their own port, off the model's: prometheus_client's own server on
    a daemon thread, with TLS when a certificate is given."""

    port: int
    host: str = "0.0.0.0"
    certfile: str | None = None
    keyfile: str | None = None

    @classmethod
    def configured(
        cls,
        port: int | None = None,
        host: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> Listener | None:
        """The listener these options ask for, each falling back to its variable; None
        without a port."""

        def setting(name: str, value: object) -> str | None:
            return os.environ.get(ENVIRONMENT[name]) if value is None else str(value)

        chosen_port = setting("port", port)
        if not chosen_port:
            return None
        return cls(
            int(chosen_port),
            setting("host", host) or "0.0.0.0",
            setting("certfile", certfile) or None,
            setting("keyfile", keyfile) or None,
        )

    def serve(self) -> bool:
        """Start serving on a daemon thread; False if another process already holds the
        port (in multi-process mode the first to bind serves everyone's counts)."""
        with _listening_lock:
            if self not in _listening:
                try:
                    _listening[self] = self._start()
                except OSError as error:
                    if error.errno != errno.EADDRINUSE:
                        raise
                    _listening[self] = False
            return _listening[self]

    def _start(self) -> bool:
        """prometheus_client's threading server, serving `metrics_wsgi_app` (its own handler
        would encode every sample itself, without `livetext`)."""
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from prometheus_client.exposition import ThreadingWSGIServer

        class QuietHandler(WSGIRequestHandler):
            def log_message(self, format: str, *arguments: Any) -> None:
                """Scrapes are not worth a log line each."""

        server = make_server(self.host, self.port, _listener_app, ThreadingWSGIServer, QuietHandler)
        if self.certfile:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.certfile, self.keyfile)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return True


_listening: dict[Listener, bool] = {}
_listening_lock = threading.Lock()


def render(
    accept: str | None = None, accept_encoding: str | None = None, names: list[str] | None = None
) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers of a scrape, negotiated like prometheus_client's own handlers."""
    encoder, content_type = choose_encoder(accept or "")
    if names:
        body = encoder(_Selected(scrape_registry(), names))
    else:
        form = "openmetrics" if content_type.startswith("application/openmetrics") else "text"
        body = _scrape_text(form, encoder).encode()
    headers = [("Content-Type", content_type)]
    if gzip_accepted(accept_encoding or ""):
        body = gzip.compress(body, compresslevel=1)
        headers.append(("Content-Encoding", "gzip"))
    return body, headers


OURS = '["boxkite_'
"""How every key of our families begins (``mmap_key`` is a JSON list, the family first)."""
LIVE_KINDS = ("counter", "histogram")
"""The files that hold our live families (summed by `livetext`); gauges and summaries, even
named like ours, are the app's and go through prometheus_client's rules."""

_rendering: contextvars.ContextVar[bool] = contextvars.ContextVar("rendering", default=False)


def _scrape_text(form: str, encoder: Callable[[Any], bytes]) -> str:
    """Our live families by `livetext`, then the baselines, then everything else."""
    if multiprocess.enabled():
        path = multiprocess.directory()
        multiprocess.fold_ended(path)
        files = multiprocess.read_files(path)
        keys, kinds, totals = _summed(files)
        others: Any = _Metrics(rebuild(_file_entries(files, ours=False)))
        baselines = _baseline_text(form, encoder, path)
    else:
        pairs = sorted(store().samples(), key=lambda pair: pair[0].key)
        keys = tuple(series.key for series, _ in pairs)
        kinds = tuple(series.family.kind for series, _ in pairs)
        totals = np.array([value for _, value in pairs])
        others = REGISTRY
        baselines = _baseline_text(form, encoder, None)
    live = livetext.layout(keys, kinds).render(totals, form) if keys else ""
    token = _rendering.set(True)  # our collectors in the default registry stay silent
    try:
        rest = encoder(others).decode()
    finally:
        _rendering.reset(token)
    return live + baselines + rest


class _FileKeys:
    """A file's keys and where their values are, read once per file and size."""

    def __init__(self, data: bytes) -> None:
        keys, positions = [], []
        for key, position in multiprocess.positions(data):
            if key.startswith(OURS):
                keys.append(key)
                positions.append(position // 8)
        self.keys = keys
        self.positions = np.array(positions, dtype=np.intp)


_file_keys: dict[tuple[str, bytes], _FileKeys] = {}


def _keys_of(name: str, data: bytes) -> _FileKeys:
    """Cached by the file's name and its header (the bytes in use): files only grow, so the
    same size means the same keys."""
    handle = (name, data[:8])
    found = _file_keys.get(handle)
    if found is None:
        if len(_file_keys) > 4096:
            _file_keys.clear()
        found = _file_keys[handle] = _FileKeys(data)
    return found


def _summed(files: list[tuple[str, bytes]]) -> tuple[tuple[str, ...], tuple[str, ...], Any]:
    """Our keys over the counter and histogram files (sorted), their types, and their sums."""
    files = [(name, data) for name, data in files if name.split("_", 1)[0] in LIVE_KINDS]
    per_file = [(name, data, _keys_of(name, data)) for name, data in files]
    keys, kinds, indices = _union([(name, found) for name, _, found in per_file], files)
    totals = np.zeros(len(keys))
    for (_, data, found), index in zip(per_file, indices):
        if found.keys:
            values = np.frombuffer(data, dtype=np.float64, count=len(data) // 8)
            totals[index] += values[found.positions]
    return keys, kinds, totals


_unions: dict[tuple, tuple[tuple, tuple, list]] = {}


def _union(
    per_file: list[tuple[str, _FileKeys]], files: list[tuple[str, bytes]]
) -> tuple[tuple, tuple, list]:
    """Our keys over these files, their types, and each file's keys' places among them:
    the same until a file is added, removed or grows."""
    handle = tuple((name, data[:8]) for name, data in files)
    found = _unions.get(handle)
    if found is not None:
        return found
    kind_of: dict[str, str] = {}
    for name, keys in per_file:
        kind = name.split("_", 1)[0]
        kind_of.update(dict.fromkeys(keys.keys, kind))
    ordered = sorted(kind_of)  # the same series in any files make the same layout
    slots = {key: slot for slot, key in enumerate(ordered)}
    indices = [np.array([slots[key] for key in keys.keys], dtype=np.intp) for _, keys in per_file]
    kinds = [kind_of[key] for key in ordered]
    if len(_unions) > 64:
        _unions.clear()
    found = _unions[handle] = (tuple(ordered), tuple(kinds), indices)
    return found


_baselines: dict[tuple, str] = {}


def _baseline_text(form: str, encoder: Callable[[Any], bytes], path: str | None) -> str:
    """The baseline families as prometheus_client encodes them, once per set of baselines
    (without OpenMetrics' ``# EOF``: the scrape ends with one)."""
    if path is None:
        from .recorder import recorders

        version: tuple = (form, tuple(id(recorder) for recorder in recorders()))
    else:
        version = (form, tuple(multiprocess.published_baselines(path)))
    text = _baselines.get(version)
    if text is None:
        if len(_baselines) > 64:
            _baselines.clear()
        text = encoder(_Metrics(list(BaselineCollector(path).collect(quiet=False)))).decode()
        text = _baselines[version] = text.removesuffix(livetext.EOF)
    return text


class _Metrics:
    """Families already built, for an encoder."""

    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)


def scrape_registry() -> CollectorRegistry:
    """Every family through prometheus_client's collectors: the default registry (the app's
    metrics and ours) in one process; in several, everything in the directory, read afresh."""
    if not multiprocess.enabled():
        register_collectors()
        return REGISTRY
    registry = CollectorRegistry()
    path = multiprocess.directory()
    registry.register(FilesCollector(path))
    registry.register(BaselineCollector(path))
    return registry


class _Selected:
    """Only the samples named by ``name[]``, as prometheus_client's handlers select them, but
    for collectors that cannot say their names in advance (reading files to find them out
    would cost a whole scrape)."""

    def __init__(self, registry: CollectorRegistry, names: list[str]) -> None:
        self._registry = registry
        self._names = set(names)

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            samples = [sample for sample in metric.samples if sample.name in self._names]
            if samples:
                selected = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                selected.samples = samples
                yield selected


_registered = False


def register_collectors() -> None:
    """In single-process mode the default registry serves the live and baseline families."""
    global _registered
    if not _registered:
        _registered = True
        REGISTRY.register(StoreCollector())
        REGISTRY.register(BaselineCollector())


REPORT_PATH = "/drift"
"""Where the drift report is served, next to the metrics (and on the metrics listener)."""


def report(*_: object) -> tuple[bytes, list[tuple[str, str]]]:
    """The drift report page of this server's counts since its workers started (what a scrape
    of it shows), judged with the alert rules' defaults."""
    from .drift import distributions, judge
    from .report import page

    text = render()[0].decode("utf-8")
    verdicts = judge(distributions(text))
    body = page(verdicts, source="this server", window="since the workers started")
    return body.encode("utf-8"), [("Content-Type", "text/html; charset=utf-8")]


Produce = Callable[[str | None, str | None, list[str] | None], tuple[bytes, list[tuple[str, str]]]]


def _wsgi_app(produce: Produce, environ: dict[str, Any], start_response: Any) -> list[bytes]:
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
        return [b""]
    names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
    body, headers = produce(environ.get("HTTP_ACCEPT"), environ.get("HTTP_ACCEPT_ENCODING"), names)
    start_response("200 OK", [*headers, ("Content-Length", str(len(body)))])
    return [b"" if method == "HEAD" else body]


async def _asgi_app(
    produce: Produce, scope: MutableMapping[str, Any], receive: Any, send: Any
) -> None:
    import anyio.to_thread

    if scope["method"] not in ("GET", "HEAD"):
        await send(
            {"type": "http.response.start", "status": 405, "headers": [(b"allow", b"GET, HEAD")]}
        )
        await send({"type": "http.response.body", "body": b""})
        return
    request_headers = {
        key.decode("latin-1").lower(): value.decode("latin-1")
        for key, value in scope.get("headers", [])
    }
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    body, headers = await anyio.to_thread.run_sync(
        produce,
        request_headers.get("accept"),
        request_headers.get("accept-encoding"),
        query.get("name[]"),
    )
    raw_headers = [(name.lower().encode(), value.encode()) for name, value in headers]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def metrics_wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app serving `render` (GET and HEAD), e.g. for werkzeug's DispatcherMiddleware."""
    return _wsgi_app(render, environ, start_response)


async def metrics_asgi_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app serving `render`, on a worker thread so a slow scrape never blocks the loop."""
    await _asgi_app(render, scope, receive, send)


def report_wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app serving the drift `report`."""
    return _wsgi_app(report, environ, start_response)


async def report_asgi_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app serving the drift `report`, on a worker thread."""
    await _asgi_app(report, scope, receive, send)


def _listener_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The metrics listener's routes: the report at `REPORT_PATH`, metrics anywhere else."""
    if environ.get("PATH_INFO") == REPORT_PATH:
        return report_wsgi_app(environ, start_response)
    return metrics_wsgi_app(environ, start_response)
