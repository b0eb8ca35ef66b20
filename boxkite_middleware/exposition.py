"""Render ``/metrics``: live families, baseline families from memory, and the app's metrics.

Single-process: the default registry, where `LiveCollector` and `BaselineCollector` are
registered next to the app's own metrics. Multi-process: a fresh registry per scrape with
prometheus_client's ``MultiProcessCollector`` (every worker's mmap file, live series and the
app's metrics) plus `BaselineCollector` — baselines are never written to mmap files, where
they would be summed over every worker, dead ones too.
"""

from __future__ import annotations

import glob
import gzip
import os
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, CollectorRegistry

from . import families, storage
from .recorder import recorders
from .store import COUNTER, HISTOGRAM, multiprocess, store

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


def _describe(described: Iterable[families.Family]) -> list[Metric]:
    """Family names, so that ``name[]`` filtering finds the collectors that hold them."""
    return [Metric(family.name, family.documentation, family.kind) for family in described]


class LiveCollector:
    """This process's live series (single-process mode only)."""

    def describe(self) -> list[Metric]:
        return _describe(LIVE_FAMILIES)

    def collect(self) -> Iterator[Metric]:
        out: dict[str, Metric] = {}
        values = store().snapshot()
        counters, histograms = values[COUNTER], values[HISTOGRAM]
        for recorder in recorders():
            for family, (name, labels, value) in recorder.live_samples(counters, histograms):
                metric = out.get(family.name)
                if metric is None:
                    metric = Metric(family.name, family.documentation, family.kind)
                    out[family.name] = metric
                metric.add_sample(name, labels, value)
        return iter(out.values())


class BaselineCollector:
    """The baseline families and ``boxkite_baseline_info`` of every loaded baseline."""

    def describe(self) -> list[Metric]:
        return _describe(BASELINE_FAMILIES)

    def collect(self) -> Iterator[Metric]:
        """One family per name over every baseline; the samples are built once per recorder."""
        out: dict[str, Metric] = {}
        for recorder in recorders():
            for metric in recorder.baseline_metrics:
                merged = out.get(metric.name)
                if merged is None:
                    merged = out[metric.name] = Metric(
                        metric.name, metric.documentation, metric.type
                    )
                merged.samples.extend(metric.samples)
        return iter(out.values())


class MultiProcessLiveCollector(MultiProcessCollector):
    """prometheus_client's aggregation of every worker's file, with two differences.

    A file that a starting worker has created but not yet sized is empty, and reading it
    would fail the whole scrape: it is left out (its values are all 0 anyway). And the
    ``_count`` it adds to histograms that have no ``_sum`` (negative buckets) is dropped, as
    OpenMetrics forbids it."""

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        super().__init__(registry, path)
        self._directory = path

    def collect(self) -> Iterator[Metric]:
        files = [
            file
            for file in glob.glob(os.path.join(glob.escape(self._directory), "*.db"))
            if _size(file) > 0
        ]
        for metric in self.merge(files, accumulate=True):
            if metric.type == "histogram":
                summed = {_key(s.labels) for s in metric.samples if s.name.endswith("_sum")}
                metric.samples = [
                    s
                    for s in metric.samples
                    if not s.name.endswith("_count") or _key(s.labels) in summed
                ]
            yield metric


def _size(file: str) -> int:
    try:
        return os.path.getsize(file)
    except FileNotFoundError:
        return 0


def _key(labels: dict[str, str]) -> tuple:
    return tuple(sorted(labels.items()))


def render(
    accept: str | None = None, accept_encoding: str | None = None, names: list[str] | None = None
) -> tuple[bytes, list[tuple[str, str]]]:
    """The body and headers of a scrape, negotiated like prometheus_client's own handlers."""
    store().ensure_files()
    encoder, content_type = choose_encoder(accept or "")
    if multiprocess():
        registry = CollectorRegistry()
        MultiProcessLiveCollector(registry, os.environ[storage.ENVIRONMENT])
        registry.register(BaselineCollector())
        with storage.locked(os.environ[storage.ENVIRONMENT], exclusive=False):
            body = encoder(registry.restricted_registry(names) if names else registry)
    else:
        body = encoder(REGISTRY.restricted_registry(names) if names else REGISTRY)
    headers = [("Content-Type", content_type)]
    if gzip_accepted(accept_encoding or ""):
        body = gzip.compress(body, compresslevel=1)
        headers.append(("Content-Encoding", "gzip"))
    return body, headers


def metrics_wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app serving `render` (GET and HEAD), e.g. for werkzeug's DispatcherMiddleware."""
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
        return [b""]
    names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]")
    body, headers = render(environ.get("HTTP_ACCEPT"), environ.get("HTTP_ACCEPT_ENCODING"), names)
    start_response("200 OK", [*headers, ("Content-Length", str(len(body)))])
    return [b"" if method == "HEAD" else body]


async def metrics_asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app serving `render`, on a worker thread so a slow scrape never blocks the loop."""
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
        render,
        request_headers.get("accept"),
        request_headers.get("accept-encoding"),
        query.get("name[]"),
    )
    raw_headers = [(name.lower().encode(), value.encode()) for name, value in headers]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": raw_headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
