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


def loop_stall(body: bytes, model: str) -> tuple[float, float]:
    """Record ``body`` under ASGI while a ticker sleeps 1 ms at a time on the same event loop:
    the ticker's longest gap and how long the request took, in seconds."""
    import asyncio

    from boxkite_middleware import ASGIMiddleware

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    wrapped = ASGIMiddleware(app, baseline=wine_baseline(), model=model)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "headers": [(b"content-type", b"application/json")],
    }

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        pass

    async def run() -> tuple[float, float]:
        gaps = [0.0]
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.001)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        await wrapped(scope, receive, send)
        elapsed = time.perf_counter() - started
        stop.set()
        await ticking
        return max(gaps), elapsed

    return asyncio.run(run())


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
    print()
    from boxkite_middleware import asgi

    stalls = []
    body = one_value_body(2 << 20)
    loop_stall(body, model="stall warm-up")  # the first start of a worker thread and imports
    for where, threshold in (("on the loop", 1 << 40), ("off the loop", asgi.OFF_LOOP_BYTES)):
        asgi.OFF_LOOP_BYTES, saved = threshold, asgi.OFF_LOOP_BYTES
        try:
            runs = [loop_stall(body, model=f"stall {where}") for _ in range(5)]
        finally:
            asgi.OFF_LOOP_BYTES = saved
        gap, elapsed = (statistics.median(values) for values in zip(*runs))
        stalls.append([where, f"{elapsed * 1e3:.0f} ms", f"{gap * 1e3:.1f} ms"])
    header = ["2 MiB one-value rows, medians of 5", "request", "longest event-loop gap"]
    print(table(header, stalls))


if __name__ == "__main__":
    main()
