"""The services of the MLflow walkthrough, each started on loopback in a temporary directory
and stopped on exit: PostgreSQL, an MLflow tracking server, and the served model.

PostgreSQL's ``initdb`` refuses to run as root: as root, the database runs as ``nobody``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

USER = "mlflow"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:4]} ended with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer") from None
            time.sleep(0.2)


def postgres_binary(name: str) -> str | None:
    """A PostgreSQL program: on the PATH, or where Debian's packages keep it."""
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """A fresh PostgreSQL cluster; yields the SQLAlchemy URI of its ``postgres`` database."""
    initdb, pg_ctl = postgres_binary("initdb"), postgres_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise FileNotFoundError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    data = Path(tempfile.mkdtemp(prefix="walkthrough-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        os.chown(data, 65534, 65534)  # nobody
        as_user = ["runuser", "-u", "nobody", "--"]
    port = free_port()

    def run(command: list[str], check: bool = True) -> None:
        subprocess.run([*as_user, *command], check=check, capture_output=True)

    run([initdb, "-D", str(data / "cluster"), "-U", USER, "--auth=trust", "-E", "UTF8"])
    options = f"-h 127.0.0.1 -p {port} -k {data}"
    run(
        [pg_ctl, "-D", str(data / "cluster"), "-o", options, "-l", str(data / "log"), "-w", "start"]
    )
    try:
        yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
    finally:
        run([pg_ctl, "-D", str(data / "cluster"), "-m", "fast", "-w", "stop"], check=False)
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def tracking_server(backend: str) -> Iterator[str]:
    """``mlflow server`` on a backend store (a PostgreSQL or SQLite URI), its artifacts on
    disk; yields its URL."""
    root = Path(tempfile.mkdtemp(prefix="walkthrough-mlflow-"))
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port"]
    command += [str(port), "--backend-store-uri", backend, "--workers", "1"]
    command += ["--artifacts-destination", (root / "artifacts").as_uri()]
    with open(root / "server.log", "wb") as log:
        process = subprocess.Popen(
            command, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", process)
        yield url
    finally:
        stop(process)
        shutil.rmtree(root, ignore_errors=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process's group, then SIGKILL what is left after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
