"""The one-command demo: train, serve under gunicorn, send normal then drifted traffic, show drift.

    scripts/demo          (sets up .venv, then runs this)

Both example apps run under real gunicorn on loopback ports: the Flask regressor with 4 sync
workers, the FastAPI classifier with 2 uvicorn workers. Every table is read from the live
``/metrics`` (scrapes land on any worker; multi-process mode sums them all).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from wine import FEATURES, measurements, regions, rows  # noqa: E402

from boxkite_middleware.drift import distributions, judge, since, table  # noqa: E402
from boxkite_middleware.report import page  # noqa: E402

REPORT = Path(os.environ.get("BOXKITE_DEMO_REPORT", "drift-report.html")).resolve()
REQUESTS = 150
BATCH = (1, 12)  # rows per request, uniformly


def main() -> int:
    python = sys.executable
    for example in ("flask_app", "fastapi_app"):
        _step(f"training examples/{example}")
        subprocess.run([python, str(HERE / example / "train.py")], check=True)
    servers = {
        "flask_app": _serve("flask_app", workers=4),
        "fastapi_app": _serve("fastapi_app", workers=2),
    }
    try:
        for name, (url, _) in servers.items():
            _wait_until_up(url, name)
        before = _scrape(servers)
        _step(f"sending {REQUESTS} normal requests to each app (1-12 rows each)")
        _send(servers, drifted=False, seed=100)
        after_normal = _scrape(servers)
        _report("NORMAL traffic (new data from the training distribution)", after_normal, before)
        _step(
            f"sending {REQUESTS} drifted requests to each app: alcohol +1.5, residual sugar "
            "×1.8, a new region 'alentejo', pH missing in 1 of 6 rows"
        )
        _send(servers, drifted=True, seed=200)
        verdicts = _report("DRIFTED traffic", _scrape(servers), after_normal)
        REPORT.write_text(
            page(verdicts, source="the two example apps", window="the drifted phase"),
            encoding="utf-8",
        )
        _step(f"the drift report page of the drifted phase: {REPORT}")
    finally:
        for name, (_, process) in servers.items():
            _step(f"stopping {name}")
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    print("\nDone. Point Prometheus at /metrics of every replica; see docs/drift.md.")
    return 0


def _step(message: str) -> None:
    print(f"==> {message}", flush=True)


def _serve(example: str, workers: int) -> tuple[str, subprocess.Popen]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gunicorn = Path(sys.executable).with_name("gunicorn")
    _step(f"starting examples/{example} under gunicorn, {workers} workers, port {port}")
    process = subprocess.Popen(
        [
            str(gunicorn),
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "app:app",
        ],
        cwd=HERE / example,
        # One OpenMP thread per worker: four workers on two cores must not fight over threads.
        env={**os.environ, "PYTHONPATH": str(HERE.parent), "OMP_NUM_THREADS": "1"},
    )
    return f"http://127.0.0.1:{port}", process


def _wait_until_up(url: str, name: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{name} did not start within {seconds} s")


def _batches(drifted: bool, seed: int, with_region: bool) -> list[dict]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(BATCH[0], BATCH[1] + 1, REQUESTS)
    columns = measurements(int(sizes.sum()), seed)
    columns["region"] = regions(int(sizes.sum()), seed + 1).astype(object)
    if drifted:
        columns["alcohol"] = np.round(columns["alcohol"] + 1.5, 1)
        columns["residual sugar"] = np.round(columns["residual sugar"] * 1.8, 2)
        columns["region"][rng.random(sizes.sum()) < 0.3] = "alentejo"
        columns["pH"][rng.random(sizes.sum()) < 1 / 6] = np.nan
    names = [*FEATURES, "region"] if with_region else list(FEATURES)
    table_rows = rows(columns, names)
    bounds = np.cumsum(sizes)
    return [
        {"columns": names, "data": table_rows[end - size : end]}
        for size, end in zip(sizes, bounds, strict=True)
    ]


def _send(servers: dict, drifted: bool, seed: int) -> None:
    def post(url: str, body: dict) -> int:
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json; format=pandas-split"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status

    started = time.perf_counter()
    jobs = [
        (url, body)
        for name, (url, _) in servers.items()
        for body in _batches(drifted, seed, with_region=name == "fastapi_app")
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda job: post(*job), jobs))
    elapsed = time.perf_counter() - started
    print(
        f"    {statuses.count(200)}/{len(jobs)} answered 200 in {elapsed:.1f} s "
        f"({len(jobs) / elapsed:.0f} requests/s)"
    )


def _scrape(servers: dict) -> list:
    found = []
    for url, _ in servers.values():
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:
            found += distributions(response.read().decode())
    return found


def _report(title: str, now: list, earlier: list) -> list:
    window = since(now, earlier)
    verdicts = judge(window)
    drifted = sum(v.drifted is True for v in verdicts)
    print(
        f"\n{title}: {drifted} of {len(verdicts)} columns drifted "
        "(live counts of this phase vs the training baseline)\n"
    )
    print(table(verdicts))
    print()
    return verdicts


if __name__ == "__main__":
    sys.exit(main())
