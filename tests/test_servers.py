"""The servers and frameworks people deploy on, installed from PyPI and started as their
documentation says: exact counts over repeated scrapes, files of dead workers folded, and the
several-workers warnings only where they are true."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
import urllib.error
from pathlib import Path

import pytest

from .servers import Server
from .test_gunicorn import assert_exact

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
UWSGI = [str(BIN / "uwsgi"), "--http-socket", "127.0.0.1:{port}", "--master", "--need-app"]
UWSGI += ["--die-on-term", "--disable-logging"]
GRANIAN = [str(BIN / "granian"), "--host", "127.0.0.1", "--port", "{port}"]
HYPERCORN = [str(BIN / "hypercorn"), "--bind", "127.0.0.1:{port}"]
UVICORN = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}"]
GUNICORN = [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:{port}"]
WAITRESS = [str(BIN / "waitress-serve"), "--listen", "127.0.0.1:{port}"]
BJOERN = [sys.executable, "-c", "import sys, bjoern, tests.e2e_app as e; "]
BJOERN[-1] += "bjoern.run(e.wsgi, '127.0.0.1', int(sys.argv[1]))"
BJOERN.append("{port}")

SERVERS = {
    "uwsgi": [*UWSGI, "--processes", "2", "--module", "tests.e2e_app:wsgi"],
    "uwsgi-lazy-apps-threads": [
        *UWSGI,
        *("--processes", "2", "--threads", "2", "--lazy-apps"),
        *("--module", "tests.e2e_app:wsgi"),
    ],
    "waitress": [*WAITRESS, "tests.e2e_app:wsgi"],
    "bjoern": BJOERN,
    "granian-wsgi": [*GRANIAN, "--interface", "wsgi", "--workers", "2", "tests.e2e_app:wsgi"],
    "granian-asgi": [*GRANIAN, "--interface", "asgi", "--workers", "2", "tests.e2e_app:asgi"],
    "hypercorn": [*HYPERCORN, "--workers", "2", "tests.e2e_app:asgi"],
    "django-wsgi-gunicorn": [
        *GUNICORN,
        *("-c", "python:boxkite_middleware.gunicorn", "--workers", "2"),
        "tests.e2e_frameworks:django_wsgi",
    ],
    "django-asgi-uvicorn": [*UVICORN, "--workers", "2", "tests.e2e_frameworks:django_asgi"],
    "litestar-uvicorn": [*UVICORN, "tests.e2e_frameworks:litestar"],
    "quart-hypercorn": [*HYPERCORN, "tests.e2e_frameworks:quart"],
}
WARNINGS = re.compile(r"boxkite-middleware: (this is one of|worker \d+ keeps)")


def _start(tmp_path: Path, name: str, *, directory: bool = True, command=None) -> Server:
    if name == "bjoern":
        pytest.importorskip("bjoern", reason="bjoern needs Debian's libev-dev to build")
    return Server(tmp_path, *(command or SERVERS[name]), directory=directory)


@pytest.mark.parametrize("name", list(SERVERS))
def test_every_server_counts_exactly(tmp_path, name):
    server = _start(tmp_path, name)
    try:
        answered_by = server.post(40)
        assert_exact(server, 40, scrapes=4)
        workers = server.workers()
        assert answered_by <= set(workers), (answered_by, workers)
        assert not WARNINGS.search(server.output()), server.output()[-3000:]
    finally:
        server.stop()


def _files_of_ended_processes(directory: Path) -> list[str]:
    ended = []
    for file in directory.glob("*.db"):
        pid = next((part for part in file.stem.split("_") if part.isdigit()), None)
        if pid is not None and not Path(f"/proc/{pid}").exists():
            ended.append(file.name)
    return ended


def kill_one_worker(server: Server) -> None:
    before = set(server.workers())
    os.kill(min(before), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(now := set(server.workers())) < len(before) or now == before:
        assert time.monotonic() < deadline, f"no worker replaced {min(before)}"
        time.sleep(0.05)


def reload_all_workers(server: Server) -> None:
    """hypercorn ends when a worker dies; SIGHUP replaces all of them, gracefully."""
    before = set(server.workers())
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while len(now := set(server.workers())) < len(before) or now & before:
        assert time.monotonic() < deadline, "hypercorn did not reload its workers"
        time.sleep(0.05)


DYING = {
    # uWSGI sleeps 2 s before respawning a worker that died young, unless told not to
    "uwsgi": ([*SERVERS["uwsgi"], "--forkbomb-delay", "0"], kill_one_worker),
    "uvicorn": ([*UVICORN, "--workers", "2", "tests.e2e_app:asgi"], kill_one_worker),
    "granian": (
        [
            *GRANIAN,
            *("--interface", "asgi", "--workers", "2"),
            *("--respawn-failed-workers", "--respawn-interval", "0.1"),
            "tests.e2e_app:asgi",
        ],
        kill_one_worker,
    ),
    "hypercorn": (SERVERS["hypercorn"], reload_all_workers),
}


@pytest.mark.parametrize("name", list(DYING))
def test_dead_workers_files_are_folded_by_the_next_worker(tmp_path, name):
    """No master hooks: each new worker, and each scrape, folds what ended before it. The
    files stay those of live processes (plus one archive per type) and no count is lost."""
    command, replace = DYING[name]
    server = _start(tmp_path, name, command=command)
    try:
        deaths, sent = 6, 0
        for _ in range(deaths):
            sent += 10
            server.post(10)
            assert_exact(server, sent, scrapes=1)
            replace(server)
        server.scrape()
        assert not _files_of_ended_processes(server.directory), server.files()
        assert {"counter_archive.db", "histogram_archive.db"} <= set(server.files())
        own = [name for name in server.files() if "_boxkite_" in name]
        assert len(own) <= 2 * (len(server.workers()) + 1), own  # + uWSGI's master
        server.post(10)
        assert_exact(server, sent + 10, scrapes=3)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("command", "warns"),
    [
        ([*UWSGI, "--processes", "2", "--module", "tests.e2e_app:wsgi"], True),
        ([*UVICORN, "--workers", "2", "tests.e2e_app:asgi"], True),
        ([*HYPERCORN, "--workers", "1", "tests.e2e_app:asgi"], False),
        ([*GRANIAN, "--interface", "wsgi", "--workers", "1", "tests.e2e_app:wsgi"], False),
        ([*GRANIAN, "--interface", "asgi", "--workers", "1", "tests.e2e_app:asgi"], False),
        (BJOERN, False),  # says wsgi.multiprocess=True, runs one process
        ([*WAITRESS, "tests.e2e_app:wsgi"], False),
        ([*UVICORN, "--reload", "tests.e2e_app:asgi"], False),  # one spawned child
    ],
    ids=[
        "uwsgi-2",
        "uvicorn-2",
        "hypercorn-1",
        "granian-wsgi-1",
        "granian-asgi-1",
        "bjoern",
        "waitress",
        "uvicorn-reload",
    ],
)
def test_several_workers_warning_only_when_true(tmp_path, command, warns):
    """Without a directory: after the first requests (all workers started), the log says
    so exactly when scrapes show one worker's counts."""
    if command is BJOERN:
        pytest.importorskip("bjoern", reason="bjoern needs Debian's libev-dev to build")
    server = Server(tmp_path, *command, directory=False)
    try:
        server.post(8)
        time.sleep(0.2)
        assert bool(WARNINGS.search(server.output())) == warns, server.output()[-3000:]
    finally:
        server.stop()


def test_directories_apart_under_lazy_apps_warn(tmp_path):
    """The directory made in the app module: with ``--lazy-apps`` every worker makes its own."""
    command = [
        *UWSGI,
        "--processes",
        "2",
        "--lazy-apps",
        "--module",
        "tests.e2e_own_directory:wsgi",
    ]
    server = Server(tmp_path, *command, directory=False)
    try:
        server.post(8)
        time.sleep(0.2)
        assert re.search(r"worker \d+ keeps its metrics in /\S+, this one in /", server.output())
    finally:
        server.stop()


def test_sigkill_mid_traffic_loses_at_most_the_requests_being_recorded(tmp_path):
    """uWSGI workers killed while clients keep sending: every request answered before a kill
    is counted but, per kill, the one that worker was recording after its answer."""
    server = _start(tmp_path, "uwsgi")
    answered = 0
    stop = threading.Event()

    def send() -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                server.post(1)
            except (urllib.error.URLError, ConnectionError):
                continue
            answered += 1

    clients = [threading.Thread(target=send) for _ in range(2)]
    try:
        for client in clients:
            client.start()
        kills = 4
        for _ in range(kills):
            time.sleep(0.3)
            kill_one_worker(server)
        stop.set()
        for client in clients:
            client.join(30)
        time.sleep(0.5)
        counted = server.scrape().value("boxkite_requests_total", model="e2e", reason="ok")
        assert answered - kills <= counted <= answered, (answered, counted)
        assert answered > 20
    finally:
        stop.set()
        server.stop()
