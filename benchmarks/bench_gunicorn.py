"""Throughput and p99 under gunicorn (4 sync workers) with and without the middleware, and
/metrics scrape time with 1, 4 and 16 workers. Needs Debian's ``wrk``.

    python benchmarks/bench_gunicorn.py [--seconds 10] [--rounds 2] [--sample 0.1] [--scrapes-only]

Bare and wrapped runs alternate (rounds), each a fresh gunicorn on a loopback port, loaded by
wrk with a Lua script posting a pandas-split body of 1 or 100 rows; medians over rounds.
"wrapped/bare" is the ratio of those medians; "each round" the ratio within each round, whose
bare and wrapped runs follow each other (less exposed to the host's load changing during a run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "examples"))

from common import median_seconds, table  # noqa: E402
from wine import FEATURES, measurements, rows  # noqa: E402

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json; format=pandas-split"
local file = io.open("{body}", "rb")
wrk.body = file:read("*a")
file:close()
"""


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, variant: str, workers: int, sample: float = 1.0) -> None:
        self.url = f"http://127.0.0.1:{_port()}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:boxkite_middleware.gunicorn",
                "--bind",
                self.url.removeprefix("http://"),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "serve_app:app",
            ],
            cwd=HERE,
            env={
                **os.environ,
                "BOXKITE_BENCH": variant,
                "BOXKITE_BENCH_SAMPLE": "" if sample == 1 else str(sample),
                "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(ROOT),
            },
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/metrics", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # it answers (the bare app has no /metrics)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


def _wrk(url: str, script: Path, seconds: int) -> tuple[float, float]:
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c8",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"{url}/invocations",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    if "Non-2xx" in output:
        raise RuntimeError(output)
    return rate, float(p99.group(1)) * scale


def _write_bodies(folder: Path) -> None:
    """``post-{rows}.lua``: wrk scripts posting a pandas-split body of 1 and of 100 rows."""
    for size in (1, 100):
        body = folder / f"body-{size}.json"
        body.write_text(
            json.dumps({"columns": FEATURES, "data": rows(measurements(size, seed=9), FEATURES)})
        )
        (folder / f"post-{size}.lua").write_text(LUA.format(body=body))


def throughput(seconds: int, rounds: int, folder: Path, sample: float) -> list[list[str]]:
    _write_bodies(folder)
    results = []
    for size in (1, 100):
        script = folder / f"post-{size}.lua"
        figures: dict[str, list[tuple[float, float]]] = {"bare": [], "wrapped": []}
        for _ in range(rounds):
            for variant in ("bare", "wrapped"):
                server = Server(variant, workers=4, sample=sample)
                try:
                    _wrk(server.url, script, 2)  # warm up
                    figures[variant].append(_wrk(server.url, script, seconds))
                finally:
                    server.stop()
        bare_rate = statistics.median(rate for rate, _ in figures["bare"])
        wrapped_rate = statistics.median(rate for rate, _ in figures["wrapped"])
        each_round = [
            f"{100 * wrapped / bare:.0f}"
            for (bare, _), (wrapped, _) in zip(figures["bare"], figures["wrapped"])
        ]
        results.append(
            [
                f"{size}",
                f"{bare_rate:.0f}",
                f"{wrapped_rate:.0f}",
                f"{100 * wrapped_rate / bare_rate:.0f} %",
                ", ".join(each_round),
                f"{statistics.median(p99 for _, p99 in figures['bare']):.2f}",
                f"{statistics.median(p99 for _, p99 in figures['wrapped']):.2f}",
            ]
        )
    return results


SCRAPE_HEADER = ["workers", "first scrape ms", "scrape median ms", "body KiB"]


def scrapes(folder: Path) -> list[list[str]]:
    script = folder / "post-1.lua"
    results = []
    for workers in (1, 4, 16):
        server = Server("wrapped", workers=workers)
        try:
            _wrk(server.url, script, 3)  # every worker records something

            def scrape(url=server.url):
                with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
                    return response.read()

            started = time.perf_counter()
            size = len(scrape())  # the first: one worker lays its series out
            first = time.perf_counter() - started
            for _ in range(4 * workers):  # every worker has served a few
                scrape()
            seconds = median_seconds(scrape, repeats=21)
            results.append(
                [str(workers), f"{first * 1e3:.1f}", f"{seconds * 1e3:.1f}", f"{size / 1024:.0f}"]
            )
        finally:
            server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scrapes-only", action="store_true", help="skip the throughput runs")
    parser.add_argument(
        "--sample", type=float, default=1.0, help="the share of requests the wrapped app records"
    )
    arguments = parser.parse_args()
    if not (ROOT / "examples" / "flask_app" / "model.pkl").exists():
        subprocess.run(
            [sys.executable, str(ROOT / "examples" / "flask_app" / "train.py")], check=True
        )
    with tempfile.TemporaryDirectory() as folder:
        if arguments.scrapes_only:
            _write_bodies(Path(folder))
            print(table(SCRAPE_HEADER, scrapes(Path(folder))))
            return
        print(
            table(
                [
                    "rows",
                    "bare req/s",
                    "wrapped req/s",
                    "wrapped/bare",
                    "each round %",
                    "bare p99 ms",
                    "wrapped p99 ms",
                ],
                throughput(arguments.seconds, arguments.rounds, Path(folder), arguments.sample),
            )
        )
        print()
        print(table(SCRAPE_HEADER, scrapes(Path(folder))))


if __name__ == "__main__":
    main()
