"""Added latency of the middleware, in-process: the same app with and without it, same run.

    python benchmarks/bench_middleware.py [--calls N] [--boxkite-python PATH]

For WSGI and ASGI, single-process and multi-process (mmap) mode, 1-row and 1000-row
pandas-split requests with the 11 wine features. The app parses the request JSON as Flask
and FastAPI do (so both variants see the garbage collector), then answers. Calls alternate
in blocks between the bare and the wrapped app so both see the same machine noise; the
table gives each one's p50/p99 and the difference. The original boxkite's
``log_prediction`` (fluentd exporter replaced by a no-op, i.e. only its metrics) is timed
on the same 11-feature baseline in its own virtual environment (benchmarks/setup_boxkite.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))

from common import table  # noqa: E402

DEFAULT_BOXKITE = HERE.parent / ".bench" / "boxkite" / "bin" / "python"
BLOCK = 50


def _body(rows: int) -> tuple[bytes, bytes]:
    from wine import FEATURES, measurements
    from wine import rows as as_rows

    data = as_rows(measurements(rows, seed=5), FEATURES)
    request = json.dumps({"columns": FEATURES, "data": data}).encode()
    response = json.dumps({"predictions": [6.0] * rows}).encode()
    return request, response


def _baseline_path(folder: str) -> str:
    from wine import measurements, quality

    from boxkite_middleware import Baseline

    train = measurements(4000, seed=1)
    path = os.path.join(folder, "histogram.prom")
    Baseline.from_data(train, inference=quality(train, seed=3)).save(path)
    return path


def _quantiles(samples: list[int]) -> tuple[float, float]:
    micro = np.asarray(samples) / 1000
    return float(np.percentile(micro, 50)), float(np.percentile(micro, 99))


def _measure(call_bare, call_wrapped, calls: int) -> dict[str, float]:
    bare, wrapped = [], []
    for _ in range(calls // BLOCK):
        for target, out in ((call_bare, bare), (call_wrapped, wrapped)):
            for _ in range(BLOCK):
                start = time.perf_counter_ns()
                target()
                out.append(time.perf_counter_ns() - start)
    (bare_p50, bare_p99), (with_p50, with_p99) = _quantiles(bare), _quantiles(wrapped)
    return {"bare_p50": bare_p50, "bare_p99": bare_p99, "with_p50": with_p50, "with_p99": with_p99}


def _wsgi(baseline: str, request: bytes, response: bytes, calls: int) -> dict[str, float]:
    from boxkite_middleware import WSGIMiddleware

    def app(environ, start_response):
        json.loads(environ["wsgi.input"].read())  # as Flask's request.get_json() does
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(response)))]
        )
        return [response]

    wrapped = WSGIMiddleware(app, baseline=baseline, model="bench")
    base = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/invocations",
        "CONTENT_TYPE": "application/json; format=pandas-split",
        "CONTENT_LENGTH": str(len(request)),
        "wsgi.multiprocess": False,
    }

    def call(target):
        def run():
            environ = dict(base, **{"wsgi.input": io.BytesIO(request)})
            iterable = target(environ, lambda status, headers, exc_info=None: None)
            for _ in iterable:
                pass
            close = getattr(iterable, "close", None)
            if close:
                close()

        return run

    return _measure(call(app), call(wrapped), calls)


def _asgi(baseline: str, request: bytes, response: bytes, calls: int) -> dict[str, float]:
    from boxkite_middleware import ASGIMiddleware

    async def app(scope, receive, send):
        json.loads((await receive())["body"])  # as FastAPI's request.json() does
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": response})

    wrapped = ASGIMiddleware(app, baseline=baseline, model="bench")
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(request)).encode()),
        ],
    }
    loop = asyncio.new_event_loop()

    async def receive():
        return {"type": "http.request", "body": request, "more_body": False}

    async def send(message):
        pass

    def call(target):
        return lambda: loop.run_until_complete(target(scope, receive, send))

    try:
        return _measure(call(app), call(wrapped), calls)
    finally:
        loop.close()


def worker(calls: int) -> None:
    """One mode (decided by PROMETHEUS_MULTIPROC_DIR), every transport and size; JSON out."""
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        baseline = _baseline_path(folder)
        for rows in (1, 1000):
            request, response = _body(rows)
            repeat = calls if rows == 1 else max(BLOCK * 4, calls // 10)
            results[f"WSGI {rows}"] = _wsgi(baseline, request, response, repeat)
            results[f"ASGI {rows}"] = _asgi(baseline, request, response, repeat)
    print(json.dumps(results))


BOXKITE_TIMER = """
import json, os, sys, tempfile, time
import numpy as np
from boxkite.monitoring.collector import BaselineMetricCollector
from boxkite.monitoring.exporter.type import LogExporter
from boxkite.monitoring.service import ModelMonitoringService
columns = json.loads(sys.argv[1]); calls = int(sys.argv[2]); row = json.loads(sys.argv[3])
class Quiet(LogExporter):
    def emit(self, prediction):
        pass
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "histogram.prom")
    rng = np.random.default_rng(1)
    data = [(name, rng.normal(i + 1, 1, 4000)) for i, name in enumerate(columns)]
    ModelMonitoringService.export_text(features=data, inference=rng.normal(6, 1, 1000), path=path)
    service = ModelMonitoringService(log_exporter=Quiet(),
                                     baseline_collector=BaselineMetricCollector(path=path))
    samples = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        service.log_prediction(request_body="{}", features=row, output=6.0)
        samples.append(time.perf_counter_ns() - start)
micro = np.asarray(samples) / 1000
print(json.dumps([float(np.percentile(micro, 50)), float(np.percentile(micro, 99))]))
"""


def _boxkite(python: Path, calls: int, environment: dict) -> tuple[float, float] | None:
    if not python.exists():
        return None
    from wine import FEATURES, measurements

    row = [float(measurements(1, seed=5)[name][0]) for name in FEATURES]
    result = subprocess.run(
        [str(python), "-c", BOXKITE_TIMER, json.dumps(FEATURES), str(calls), json.dumps(row)],
        capture_output=True,
        text=True,
        env=environment,
    )
    if result.returncode != 0:
        raise RuntimeError(f"boxkite timing failed:\n{result.stderr}")
    return tuple(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--boxkite-python", type=Path, default=DEFAULT_BOXKITE)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        worker(arguments.calls)
        return
    rows, boxkite = [], {}
    for mode in ("single", "multi"):
        with tempfile.TemporaryDirectory() as directory:
            environment = dict(os.environ)
            environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
            if mode == "multi":
                environment["PROMETHEUS_MULTIPROC_DIR"] = directory
            output = subprocess.run(
                [sys.executable, __file__, "--worker", "--calls", str(arguments.calls)],
                check=True,
                capture_output=True,
                text=True,
                env=environment,
            ).stdout
        with tempfile.TemporaryDirectory() as directory:  # its own: an older file format
            if mode == "multi":
                environment["PROMETHEUS_MULTIPROC_DIR"] = directory
            boxkite[mode] = _boxkite(arguments.boxkite_python, arguments.calls, environment)
        for case, figures in json.loads(output).items():
            transport, size = case.split()
            added = (
                figures["with_p50"] - figures["bare_p50"],
                figures["with_p99"] - figures["bare_p99"],
            )
            versus = (
                [f"{ours / theirs:.2f}×" for ours, theirs in zip(added, boxkite[mode])]
                if boxkite[mode] and size == "1"
                else ["", ""]
            )
            rows.append(
                [
                    transport,
                    size,
                    mode,
                    f"{figures['bare_p50']:.1f}",
                    f"{figures['with_p50']:.1f}",
                    f"{added[0]:.1f}",
                    f"{figures['bare_p99']:.1f}",
                    f"{figures['with_p99']:.1f}",
                    f"{added[1]:.1f}",
                    *versus,
                ]
            )
    print(
        table(
            [
                "transport",
                "rows",
                "mode",
                "bare p50 µs",
                "with p50 µs",
                "added p50 µs",
                "bare p99 µs",
                "with p99 µs",
                "added p99 µs",
                "added/boxkite p50",
                "added/boxkite p99",
            ],
            rows,
        )
    )
    for mode, figures in boxkite.items():
        if figures:
            print(
                f"\nboxkite log_prediction, 1 row × 11 features, {mode}-process: "
                f"p50 {figures[0]:.1f} µs, p99 {figures[1]:.1f} µs"
            )


if __name__ == "__main__":
    main()
