"""Added cost per request inside the Flask example's own process, and what it is made of.

    python benchmarks/bench_in_app.py [--blocks 150]

bench_middleware.py times the middleware around a trivial app; here the app is the Flask
example with its scikit-learn model, called in-process (no server) with the bytes wrk sends
in bench_gunicorn.py, in multi-process mode. Bare and wrapped calls alternate in blocks of 10.
Three variants of the wrapped app show where the added time goes: the full middleware, its
transport alone (copying, no decoding or counting), and transport plus decoding (no counting).
Two more show what sampling saves: ``sample=0.1``, and a request that is sampled out.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))
sys.path.insert(0, str(HERE.parent / "examples" / "flask_app"))
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-in-app-"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from common import table  # noqa: E402

BLOCK = 10


def _caller(body: bytes):
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(
        path="/invocations",
        method="POST",
        data=body,
        content_type="application/json; format=pandas-split",
    ).get_environ()

    def call(app) -> None:
        request = dict(environ, **{"wsgi.input": io.BytesIO(body)})
        iterable = app(request, lambda status, headers, exc_info=None: None)
        for _ in iterable:
            pass
        if hasattr(iterable, "close"):
            iterable.close()

    return call


def _added(call, bare, wrapped, blocks: int) -> tuple[float, float]:
    """Median wrapped minus median bare, and median bare, in µs; calls alternate in blocks."""
    timings: dict[str, list[int]] = {"bare": [], "wrapped": []}
    for _ in range(blocks):
        for name, app in (("bare", bare), ("wrapped", wrapped)):
            for _ in range(BLOCK):
                start = time.perf_counter_ns()
                call(app)
                timings[name].append(time.perf_counter_ns() - start)
    medians = {name: statistics.median(values) / 1000 for name, values in timings.items()}
    return medians["wrapped"] - medians["bare"], medians["bare"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=150)
    arguments = parser.parse_args()
    if not (HERE.parent / "examples" / "flask_app" / "model.pkl").exists():
        import subprocess

        subprocess.run(
            [sys.executable, str(HERE.parent / "examples" / "flask_app" / "train.py")], check=True
        )
    from app import app
    from wine import FEATURES, measurements, rows

    from boxkite_middleware import monitor, payload

    wrapped = app.wsgi_app
    bare = wrapped.app
    record = monitor.Exchange._record

    def decode_only(exchange) -> None:
        payload.decode_request(exchange._request, exchange._request_type)
        if exchange._response is not None:
            payload.decode_response(
                exchange._response, exchange._response_type, "", exchange._limit
            )

    results = []
    for size in (1, 100):
        call = _caller(
            json.dumps(
                {"columns": FEATURES, "data": rows(measurements(size, seed=9), FEATURES)}
            ).encode()
        )
        figures = {}
        for variant, recording in (
            ("transport", lambda exchange: None),
            ("transport + decoding", decode_only),
            ("full", record),
        ):
            monitor.Exchange._record = recording
            figures[variant], bare_median = _added(call, bare, wrapped, arguments.blocks)
        monitor.Exchange._record = record
        for variant, share in (("sample 0.1", 0.1), ("sampled out", 1e-12)):
            wrapped.monitor.sample = share
            figures[variant], _ = _added(call, bare, wrapped, arguments.blocks)
        wrapped.monitor.sample = 1.0
        results.append(
            [
                str(size),
                f"{bare_median:.0f}",
                *(f"{figures[name]:.0f}" for name in ("transport", "transport + decoding")),
                f"{figures['full']:.0f}",
                f"{100 * bare_median / (bare_median + figures['full']):.0f} %",
                f"{figures['sample 0.1']:.0f}",
                f"{figures['sampled out']:.0f}",
            ]
        )
    print(
        table(
            [
                "rows",
                "bare app µs",
                "added: transport",
                "+ decoding",
                "+ counting (full)",
                "bare/(bare+added)",
                "added, sample 0.1",
                "added, sampled out",
            ],
            results,
        )
    )


if __name__ == "__main__":
    main()
