"""A monitor never hurts the server it watches: real gunicorn on real, broken file systems.

Each case breaks the multi-process directory the way production does (a cleaner deletes it,
it is remounted read-only, the disk fills, a worker dies while creating its file, files are
planted), then kills workers: the master must stay up and answer every request.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from boxkite_middleware import Baseline, multiprocess

from .servers import BODY
from .test_gunicorn import WORKERS, Gunicorn, assert_exact

pytestmark = pytest.mark.slow


def _answered(server: Gunicorn, count: int) -> int:
    """How many of ``count`` prediction requests got a 200 with the app's own answer."""
    answered = 0
    for _ in range(count):
        request = urllib.request.Request(
            f"{server.url}/invocations",
            data=BODY,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                answered += response.status == 200 and "pid" in json.loads(response.read())
        except (OSError, ValueError):
            pass
    return answered


def _kill_workers(server: Gunicorn, count: int) -> None:
    """SIGKILL ``count`` workers one after the other, each replaced before the next."""
    for _ in range(count):
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while victim in server.workers() or len(server.workers()) < server.worker_count:
            assert server.process.poll() is None, server.process.stdout.read().decode()
            assert time.monotonic() < deadline, "no replacement worker"
            time.sleep(0.05)


def _survives(server: Gunicorn) -> None:
    _kill_workers(server, 3)
    assert _answered(server, 50) == 50
    assert server.process.poll() is None  # the master is still up
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        assert response.status == 200  # says what it can


@pytest.fixture
def mounted(tmp_path):
    """A fresh tmpfs of 512 KiB (``mount`` needs root; skipped without it)."""
    path = tmp_path / "tmpfs"
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(path)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


WORKER_CLASSES = {
    "sync": ("tests.e2e_plain:wsgi", ()),
    "gthread": ("tests.e2e_plain:wsgi", ("--worker-class", "gthread", "--threads", "4")),
    "uvicorn": ("tests.e2e_plain:asgi", ("--worker-class", "uvicorn_worker.UvicornWorker")),
}


@pytest.mark.parametrize("kind", [*WORKER_CLASSES, "app with metrics of its own"])
def test_directory_deleted_under_a_running_server(tmp_path, kind):
    """The master makes the directory again at the next worker exit: an app with
    prometheus_client metrics of its own could not boot a worker without it."""
    app, options = WORKER_CLASSES.get(kind, ("wsgi", ()))
    server = Gunicorn(tmp_path, app, *options)
    try:
        server.post(20)
        directory = server.directory()
        while directory.exists():  # as a cleaner does, racing the workers' own files
            shutil.rmtree(directory, ignore_errors=True)
        _survives(server)
    finally:
        server.stop()


@pytest.mark.parametrize("kind", WORKER_CLASSES)
def test_directory_remounted_read_only(tmp_path, mounted, kind):
    app, options = WORKER_CLASSES[kind]
    environment = {"PROMETHEUS_MULTIPROC_DIR": str(mounted)}
    server = Gunicorn(tmp_path, app, *options, environment=environment)
    try:
        server.post(20)
        # Files open for writing forbid remounting read-only: stack a read-only mount over it
        # (the workers' open files keep working, nothing new can be created there).
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(mounted)], check=True)
        try:
            _survives(server)
        finally:
            subprocess.run(["umount", "-l", str(mounted)], check=True)
    finally:
        server.stop()


@pytest.mark.parametrize("kind", WORKER_CLASSES)
def test_directory_full_to_the_last_byte(tmp_path, mounted, kind):
    app, options = WORKER_CLASSES[kind]
    environment = {"PROMETHEUS_MULTIPROC_DIR": str(mounted)}
    server = Gunicorn(tmp_path, app, *options, environment=environment)
    try:
        server.post(20)
        filler = subprocess.run(
            ["dd", "if=/dev/zero", f"of={mounted / 'filler'}", "bs=4k"], capture_output=True
        )
        assert b"No space left" in filler.stderr
        _survives(server)
        (mounted / "filler").unlink()  # space again: the folds left undone catch up
        _kill_workers(server, 1)
        # What was answered while the disk was full is counted where a worker had its files
        # already; from now on, every request is.
        before = server.scrape().value("boxkite_requests_total", model="e2e", reason="ok")
        assert 20 <= before <= 70
        server.post(30)
        time.sleep(0.5)  # counted after each response was sent
        after = server.scrape().value("boxkite_requests_total", model="e2e", reason="ok")
        assert after == before + 30
        leftovers = [p.name for p in mounted.glob("*_boxkite_*.db")]
        assert len(leftovers) <= 2 * WORKERS, leftovers  # two files per live worker
    finally:
        server.stop()


def test_an_empty_file_left_by_a_worker_killed_while_creating_it(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir(mode=0o700)
    dead = _a_dead_pid()
    (directory / f"counter_{dead}.db").write_bytes(b"")
    server = Gunicorn(tmp_path, "wsgi", environment={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    try:
        (directory / f"histogram_{dead}.db").write_bytes(b"")  # after start-up's wipe
        server.post(30)
        _survives(server)
        assert_exact(server, 80, scrapes=2)
        assert not (directory / f"histogram_{dead}.db").exists()  # folded away
    finally:
        server.stop()


def _a_dead_pid() -> int:
    pid = 4_000_000
    while Path(f"/proc/{pid}").exists():
        pid -= 1
    return pid


def test_planted_symlinks_are_never_written_through_or_read(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    for name in ("boxkite.owner", "counter_boxkite_1_deadbeef.db", "counter_4.db"):
        (directory / name).symlink_to(victim)
    server = Gunicorn(tmp_path, "wsgi", environment={"PROMETHEUS_MULTIPROC_DIR": str(directory)})
    try:
        server.post(20)
        _kill_workers(server, 1)
        assert_exact(server, 20, scrapes=2)
    finally:
        server.stop()
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("problem", ["world-writable", "someone else's"])
def test_a_directory_others_control_is_refused_at_start_up(tmp_path, problem):
    directory = tmp_path / "metrics"
    directory.mkdir()
    if problem == "world-writable":
        directory.chmod(0o777)
        expected = "world-writable without the sticky bit"
    else:
        if os.geteuid() != 0:
            pytest.skip("only root can give a directory away")
        os.chown(directory, 65534, 65534)
        expected = "belongs to uid 65534"
    with pytest.raises(RuntimeError, match=expected):
        Gunicorn(tmp_path, "wsgi", environment={"PROMETHEUS_MULTIPROC_DIR": str(directory)})


def test_a_fold_told_that_live_workers_died_loses_nothing(tmp_path):
    """What a second server sharing the directory, or a USR2 successor, does when a pid it
    knew is reused by one of our live workers: fold "the dead" pid's files."""
    server = Gunicorn(tmp_path, "wsgi")
    try:
        server.post(100)
        assert_exact(server, 100, scrapes=1)
        assert multiprocess.fold(str(server.directory()), dead_pids=server.workers()) == 0
        server.post(100)
        assert_exact(server, 200, scrapes=3)  # the app's own counter included
    finally:
        server.stop()


def _wide_baseline(features: int = 60) -> Baseline:
    rng = np.random.default_rng(1)
    columns = {f"f{i:02d}": rng.normal(i, 1 + i / 10, 2000).round(3) for i in range(features)}
    columns["x"] = rng.normal(-3, 2, 2000).round(3)
    columns["colour"] = rng.choice(["red", "green", "blue"], 2000)
    return Baseline.from_data(columns, inference=rng.choice(["cat", "dog"], 2000))


def _respawn_seconds(server: Gunicorn) -> float:
    victim = server.workers()[0]
    started = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    while victim in server.workers() or len(server.workers()) < server.worker_count:
        assert time.monotonic() - started < 30, "no replacement worker"
        time.sleep(0.005)
    return time.monotonic() - started


def test_scrapes_never_starve_the_master(tmp_path):
    """8 scrapers in a loop on a 61-feature model: a killed worker is replaced as fast as
    without them (a blocking fold waited > 6 s for the readers' shared lock)."""
    server = Gunicorn(tmp_path, "wsgi", baseline=_wide_baseline())
    stop = threading.Event()
    scrapes = []

    def scrape_in_a_loop() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"{server.url}/metrics", timeout=30) as response:
                    scrapes.append(len(response.read()))
            except OSError:  # the worker serving it was the one killed
                pass

    try:
        server.post(50)
        quiet = [_respawn_seconds(server) for _ in range(3)]
        threads = [threading.Thread(target=scrape_in_a_loop) for _ in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(1)
        busy = [_respawn_seconds(server) for _ in range(3)]
        stop.set()
        for thread in threads:
            thread.join(30)
        assert len(scrapes) >= 3 and min(scrapes) > 1_000_000  # ~0.4 s each, 8 at a time
        assert max(busy) < 2.0, (quiet, busy)  # figures and ratio: benchmarks/bench_faults.py
        assert server.scrape().value("boxkite_requests_total", model="e2e", reason="ok") == 50
    finally:
        stop.set()
        server.stop()
