"""Real servers on loopback for tests: werkzeug's threaded server and uvicorn in threads, and
any server's command line in its own process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from werkzeug.serving import make_server

from .helpers import ROOT_DIR, Scrape, free_port, mixed_baseline

ROWS = [[-3.5, "red"], [1.25, "purple"], [None, "blue"]]  # known values, one unseen, one missing
BODY = json.dumps({"columns": ["x", "colour"], "data": ROWS}).encode()
"""What `Served.post` sends to the apps of `tests.e2e_app` and `tests.e2e_frameworks`."""


@contextlib.contextmanager
def wsgi_server(app) -> Iterator[str]:
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@contextlib.contextmanager
def asgi_server(app) -> Iterator[str]:
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def settled_metrics(url: str, model: str, requests: int) -> tuple[int, dict, bytes]:
    """``/metrics`` once all ``requests`` of ``model`` are counted (at most 5 s).

    A request is counted after its response went out, so a scrape sent the instant the response
    arrives may come first; a request never counted fails the caller's own checks."""
    from .helpers import Scrape

    deadline = time.monotonic() + 5
    while True:
        answer = get(f"{url}/metrics")
        counted = Scrape(answer[2].decode()).total("boxkite_requests_total", model=model)
        if counted >= requests or time.monotonic() > deadline:
            return answer
        time.sleep(0.01)


class Served:
    """A server of the e2e apps on loopback: send them predictions, scrape them."""

    url: str
    metrics_url: str

    def post(self, count: int) -> set[int]:
        """Send `BODY` ``count`` times from 8 threads; the pids of the workers that answered."""

        def one(_):
            request = urllib.request.Request(
                f"{self.url}/invocations",
                data=BODY,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())["pid"]

        with ThreadPoolExecutor(max_workers=8) as pool:
            return set(pool.map(one, range(count)))

    def scrape(self) -> Scrape:
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=30) as response:
            return Scrape(response.read().decode())


class Server(Served):
    """A server's command line (``{port}`` filled in), started as users start it, in its own
    session; with a multiprocess directory of its own unless ``directory=False``."""

    def __init__(
        self, tmp_path: Path, *command: str, directory: bool = True, **environment: str
    ) -> None:
        baseline = tmp_path / "histogram.prom"
        mixed_baseline().save(baseline)
        port = free_port()
        self.url = self.metrics_url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(BOXKITE_TEST_BASELINE=str(baseline), **environment)
        self.directory = tmp_path / "metrics"
        if directory:
            self.directory.mkdir(mode=0o700)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.directory)
        self._log = tmp_path / "server.log"
        with open(self._log, "wb") as log:
            self.process = subprocess.Popen(
                [part.format(port=port) for part in command],
                cwd=ROOT_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.output()
            try:
                self.scrape()
                return
            except OSError:
                assert time.monotonic() < deadline, f"did not start:\n{self.output()}"
                time.sleep(0.1)

    def output(self) -> str:
        return self._log.read_text(errors="replace")

    def workers(self) -> list[int]:
        """The processes keeping metric files in the directory; the server's first one only if
        it is alone (uWSGI's master loads the app too, but answers no request)."""
        found = []
        for process in Path("/proc").iterdir():
            with contextlib.suppress(OSError):
                if process.name.isdigit() and str(self.directory) in (process / "maps").read_text():
                    found.append(int(process.name))
        return [pid for pid in found if pid != self.process.pid] or found

    def files(self) -> list[str]:
        return sorted(path.name for path in self.directory.glob("*.db"))

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):  # workers a master left behind
            os.killpg(self.process.pid, signal.SIGKILL)
