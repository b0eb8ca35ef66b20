"""Real gunicorn, 4 workers, over loopback: every scrape shows exactly what was sent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from .helpers import ROOT_DIR, free_port, mixed_baseline, wait_for
from .servers import Served

pytestmark = pytest.mark.slow
WORKERS = 4


class Gunicorn(Served):
    """A gunicorn master with our configuration, its workers and its multiprocess directory."""

    def __init__(
        self,
        tmp_path: Path,
        app: str,
        *options: str,
        environment=None,
        workers: int = WORKERS,
        baseline=None,
    ) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.worker_count = workers
        path = tmp_path / "histogram.prom"
        (baseline or mixed_baseline()).save(path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        metrics_port = (environment or {}).get("BOXKITE_METRICS_PORT")
        self.metrics_url = f"http://127.0.0.1:{metrics_port}" if metrics_port else self.url
        env = {**os.environ, "BOXKITE_TEST_BASELINE": str(path), **(environment or {})}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None) if environment is None else None
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:boxkite_middleware.gunicorn",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(workers),
                "--graceful-timeout",
                "5",
                *options,
                app if ":" in app else f"tests.e2e_app:{app}",
            ],
            cwd=ROOT_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._wait()

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(self.process.stdout.read().decode())
            if len(self.workers()) == self.worker_count:
                try:
                    self.scrape()
                    return
                except OSError:
                    pass
            time.sleep(0.1)
        self.process.kill()
        raise RuntimeError("gunicorn did not start")

    def workers(self) -> list[int]:
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True
        ).stdout.split()
        return [int(pid) for pid in found]

    def directory(self) -> Path:
        """The temporary directory this master created (its owner file names the master)."""
        for owner in Path(tempfile.gettempdir()).glob("boxkite-metrics-*/boxkite.owner"):
            if owner.read_text().strip() == str(self.process.pid):
                return owner.parent
        raise AssertionError("no multiprocess directory owned by this master")

    def stop(self) -> None:
        workers = self.workers()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        leftover = [
            pid
            for pid in workers
            if Path(f"/proc/{pid}").exists()
            and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
        ]
        assert not leftover, f"stray worker processes {leftover}"


def _requests_counted(server: Gunicorn) -> float:
    return server.scrape().value("boxkite_requests_total", model="e2e", reason="ok")


def assert_exact(server: Gunicorn, requests: int, scrapes: int = 8) -> None:
    """Every scrape, whichever worker answers it, shows every request sent.

    A worker records after it has sent the response (WSGI ``close()``), so the last request
    may still be being counted when its client scrapes: wait for it, never past it."""
    deadline = time.monotonic() + 5
    while (counted := _requests_counted(server)) < requests:
        assert time.monotonic() < deadline, f"only {counted} of {requests} requests counted"
        time.sleep(0.01)
    for _ in range(scrapes):
        scrape = server.scrape()
        assert scrape.value("boxkite_requests_total", model="e2e", reason="ok") == requests
        assert scrape.value("e2e_answered_total") == requests  # the app's own metric
        assert (
            scrape.value("boxkite_feature_value_bucket", model="e2e", feature="x", le="+Inf")
            == 2 * requests
        )
        assert scrape.value("boxkite_feature_missing_total", model="e2e", feature="x") == requests
        assert (
            scrape.value(
                "boxkite_feature_category_total",
                model="e2e",
                feature="colour",
                category="__other__",
            )
            == requests
        )
        assert (
            scrape.value("boxkite_inference_category_total", model="e2e", category="cat")
            == 3 * requests
        )
        # The baseline is served once, never multiplied by the number of workers.
        assert (
            scrape.value(
                "boxkite_feature_value_baseline_bucket", model="e2e", feature="x", le="+Inf"
            )
            == 600
        )


@pytest.mark.parametrize(
    ("app", "options"),
    [
        ("wsgi", ()),
        ("wsgi", ("--worker-class", "gthread", "--threads", "4")),
        ("wsgi", ("--preload",)),
        ("asgi", ("--worker-class", "uvicorn_worker.UvicornWorker")),
    ],
    ids=["sync", "gthread", "preload", "uvicorn"],
)
def test_counts_are_exact_on_every_scrape_even_after_sigkill(tmp_path, app, options):
    server = Gunicorn(tmp_path, app, *options)
    try:
        first = server.scrape()
        assert first.value("boxkite_requests_total", model="e2e", reason="ok") == 0
        buckets = first.find("boxkite_feature_value_bucket", model="e2e", feature="x")
        assert len(buckets) == len(mixed_baseline().features["x"].counts)  # zero series exist
        answered_by = server.post(200)
        if options == ():  # sync workers take one request at a time: the load spreads
            assert len(answered_by) > 1, "requests should spread over several workers"
        assert_exact(server, 200)
        victim = min(answered_by)  # a worker holding counts
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while victim in server.workers() or len(server.workers()) < WORKERS:
            assert time.monotonic() < deadline, "no replacement worker"
            time.sleep(0.1)
        assert_exact(server, 200)
        server.post(100)
        assert_exact(server, 300)
        files = sorted(p.name for p in server.directory().glob("*.db"))
        # The app's and boxkite's files of the dead worker are folded into the archives.
        assert not [name for name in files if name.endswith(f"_{victim}.db")], files
        assert {"counter_archive.db", "histogram_archive.db"} <= set(files)
    finally:
        server.stop()


def test_recycled_workers_lose_nothing_and_files_stay_few(tmp_path):
    server = Gunicorn(tmp_path, "wsgi", "--max-requests", "15")
    seen: list[float] = []
    failures: list[Exception] = []
    done = threading.Event()

    def scrape_while_workers_die() -> None:
        """Scrapes race the folding of dead workers' files: none may fail or go back."""
        while not done.is_set():
            try:
                scrape = server.scrape()
                seen.append(scrape.value("boxkite_requests_total", model="e2e", reason="ok"))
            except Exception as error:  # reported below, in the test's thread
                failures.append(error)
            time.sleep(0.02)

    scraper = threading.Thread(target=scrape_while_workers_die)
    scraper.start()
    try:
        pids: set[int] = set()
        for _ in range(4):  # each batch recycles workers; scrapes land between and during
            pids |= server.post(50)
            scraped = len(seen) + len(failures)
            while len(seen) + len(failures) < scraped + 2 and scraper.is_alive():
                time.sleep(0.01)
        done.set()
        scraper.join(30)
        assert len(pids) > WORKERS  # workers were recycled along the way
        assert not failures, failures
        assert len(seen) >= 8 and seen == sorted(seen), seen  # totals never went down
        assert_exact(server, 200)
        directory = server.directory()
        # Live workers' files (the app's and boxkite's) plus one archive: dead workers folded.
        assert len(list(directory.glob("counter_*.db"))) <= 2 * WORKERS + 1
    finally:
        server.stop()
    assert not directory.exists()  # the temporary directory is removed on exit


def test_a_directory_given_by_the_user(tmp_path):
    given = tmp_path / "metrics"
    given.mkdir()
    (given / "counter_999999.db").write_bytes(b"stale")
    (given / "keep.txt").write_text("not ours")
    server = Gunicorn(tmp_path, "wsgi", environment={"PROMETHEUS_MULTIPROC_DIR": str(given)})
    try:
        assert not (given / "counter_999999.db").exists()  # wiped: our pattern
        assert (given / "keep.txt").exists()  # not ours: kept
        server.post(20)
        assert_exact(server, 20, scrapes=3)
    finally:
        server.stop()
    assert given.exists()


def test_an_unusable_directory_fails_at_start_up(tmp_path):
    with pytest.raises(RuntimeError, match="not a directory"):
        Gunicorn(
            tmp_path, "wsgi", environment={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")}
        )


@pytest.fixture
def read_only_directory(tmp_path):
    """A directory nobody may write to, root included: a read-only tmpfs mount (or, for a
    user who may not mount, a directory without write permission)."""
    path = tmp_path / "read-only"
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        if os.geteuid() == 0:
            pytest.skip("root may write anywhere, and this machine does not allow mounting")
        path.chmod(0o555)
    assert not os.access(path, os.W_OK)
    yield path
    if mounted.returncode == 0:
        subprocess.run(["umount", str(path)], check=True)


def test_an_unwritable_directory_fails_at_start_up(tmp_path, read_only_directory):
    with pytest.raises(RuntimeError, match="not writable"):
        Gunicorn(
            tmp_path, "wsgi", environment={"PROMETHEUS_MULTIPROC_DIR": str(read_only_directory)}
        )


@pytest.mark.parametrize(
    ("server", "options", "warns"),
    [
        ("gunicorn", ["--workers", "2"], True),
        ("gunicorn", ["--workers", "2", "--preload"], True),
        ("gunicorn", ["--workers", "2", "-k", "uvicorn_worker.UvicornWorker"], True),
        ("gunicorn", ["--workers", "1"], False),
        ("uvicorn", ["--workers", "2"], True),
    ],
)
def test_several_workers_without_the_directory_warn_at_start_up(tmp_path, server, options, warns):
    """Plain gunicorn (no boxkite config) or uvicorn --workers: the warning comes when the app
    is loaded, before any prediction request (only /metrics is asked for here)."""
    baseline = tmp_path / "histogram.prom"
    mixed_baseline().save(baseline)
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["BOXKITE_TEST_BASELINE"] = str(baseline)
    port = free_port()
    asgi = server == "uvicorn" or "uvicorn_worker.UvicornWorker" in options
    app = "tests.e2e_app:asgi" if asgi else "tests.e2e_app:wsgi"
    if server == "gunicorn":
        command = ["gunicorn", *options, "--bind", f"127.0.0.1:{port}", app]
    else:
        command = ["uvicorn", *options, "--host", "127.0.0.1", "--port", str(port), app]
    process = subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=ROOT_DIR,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/metrics")
    finally:
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    assert ("PROMETHEUS_MULTIPROC_DIR was not set" in errors) == warns, errors[-2000:]


def test_importing_the_configuration_loses_nothing(tmp_path):
    """``gunicorn --check-config``, or a second launch pointed at a live directory, imports
    the configuration and loads the app: a live process's files stay, a dead one's counts are
    at most folded into the archive; only ``on_starting`` of a server that starts clears."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from boxkite_middleware import multiprocess

    given = tmp_path / "metrics"
    given.mkdir(mode=0o700)
    key = mmap_key("app_requests", "app_requests_total", [], [], "An app's counter.")
    for pid, value in ((os.getpid(), 5.0), (999_999, 7.0)):  # alive (this test), and dead
        written = MmapedDict(str(given / f"counter_{pid}.db"))
        written.write_value(key, value, 0.0)
        written.close()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(given)}
    subprocess.run(
        [sys.executable, "-c", "import boxkite_middleware.gunicorn"], env=env, check=True
    )
    baseline = tmp_path / "histogram.prom"
    mixed_baseline().save(baseline)
    configuration = ["-c", "python:boxkite_middleware.gunicorn", "--check-config"]
    checked = subprocess.run(
        [sys.executable, "-m", "gunicorn", *configuration, "tests.e2e_plain:wsgi"],
        cwd=ROOT_DIR,
        env={**env, "BOXKITE_TEST_BASELINE": str(baseline)},
        capture_output=True,
    )
    assert checked.returncode == 0, checked.stderr
    assert (given / f"counter_{os.getpid()}.db").exists()
    counted = sum(
        value
        for file in given.glob("counter_*.db")
        for stored, value, _ in multiprocess.decode(file.read_bytes())
        if stored == key
    )
    assert counted == 12.0
