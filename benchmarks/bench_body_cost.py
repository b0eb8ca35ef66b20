"""Peak extra memory and CPU of one request by body size, wrapped vs bare, in this process.

.venv/bin/python benchmarks/bench_body_cost.py

Bodies of 1 KiB, 1 MiB and the default cap, in two shapes: wine rows (11 numbers a row, the
walkthrough's shape) and one-value rows (``[[1], [2], ...]``, the most objects per byte a
client can send). Memory is tracemalloc's peak during the call (Python objects, numpy arrays
and orjson's output are all traced) minus what the bare app's call peaks at; CPU is the
process time of the call, median of several.
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import table
from boxkite_middleware import BoxkiteMiddleware
from boxkite_middleware.monitor import DEFAULT_MAX_BODY_BYTES
from tests.helpers import wine_baseline, wine_like


def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"ok": true}']


def wine_body(size: int) -> bytes:
    columns = wine_like(max(1, size // 60))
    names = list(columns)
    rows = [[float(columns[name][i]) for name in names] for i in range(len(columns[names[0]]))]
    body = json.dumps({"columns": names, "data": rows}).encode()
    while len(body) > size:
        rows = rows[: int(len(rows) * size / len(body) * 0.99)]
        body = json.dumps({"columns": names, "data": rows}).encode()
    return body


def one_value_body(size: int) -> bytes:
    rows = (size - 40) // 4
    body = json.dumps({"columns": ["alcohol"], "data": [[i % 10] for i in range(rows)]})
    return body.replace(" ", "").encode()[:size]


def call(target, body: bytes) -> None:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/invocations",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    iterable = target(environ, lambda *arguments: None)
    b"".join(iterable)
    getattr(iterable, "close", lambda: None)()


def peak(target, body: bytes) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    call(target, body)
    result = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    return result


def cpu(target, body: bytes, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.process_time()
        call(target, body)
        timings.append(time.process_time() - start)
    return statistics.median(timings)


def main() -> None:
    wrapped = BoxkiteMiddleware(app, baseline=wine_baseline(), model="bench")
    rows = []
    for shape, make in (("wine rows", wine_body), ("one-value rows", one_value_body)):
        for label, size in (("1 KiB", 1024), ("1 MiB", 1 << 20), ("cap", DEFAULT_MAX_BODY_BYTES)):
            body = make(size)
            repeats = 3 if size > 1 << 20 else 15
            call(wrapped, body)  # warm
            extra = peak(wrapped, body) - peak(app, body)
            wrapped_cpu, bare_cpu = cpu(wrapped, body, repeats), cpu(app, body, repeats)
            rows.append(
                [
                    shape,
                    f"{label} ({len(body):,} B)",
                    f"{extra / 1e6:.2f} MB",
                    f"{extra / len(body):.1f}×",
                    f"{(wrapped_cpu - bare_cpu) * 1e3:.2f} ms",
                ]
            )
    print(table(["shape", "body", "peak extra memory", "× body", "extra CPU"], rows))


if __name__ == "__main__":
    main()
