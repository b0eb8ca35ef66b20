"""A ready gunicorn configuration for multi-worker deploys.

    gunicorn -c python:boxkite_middleware.gunicorn --workers 4 app:app

or, in your own ``gunicorn.conf.py``::

    from boxkite_middleware.gunicorn import *  # noqa: F403  (the hooks below)
    workers = 4

Importing this module (gunicorn does it in the master, before it loads the app — also with
``--preload``) sets ``PROMETHEUS_MULTIPROC_DIR`` before anything can import prometheus_client:
to the directory you exported, checked and wiped of stale metric files, or to a fresh
temporary one. The hooks re-create every series in each worker after it loads the app, fold a
dead worker's counts into archive files, and remove a temporary directory on exit.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Any

from . import storage

__all__ = ["child_exit", "on_exit", "post_worker_init", "pre_exec"]

OWNER_FILE = "boxkite.owner"
"""Holds the pid of the gunicorn master that owns a temporary directory."""


def _prepare() -> str:
    if "prometheus_client" in sys.modules:
        from prometheus_client import values

        if not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(
                "prometheus_client was imported before boxkite_middleware.gunicorn set "
                f"{storage.ENVIRONMENT}; import this configuration first"
            )
    path = os.environ.get(storage.ENVIRONMENT)
    reexecuted = "GUNICORN_PID" in os.environ  # USR2: the old master's workers still write
    if path is None:
        path = tempfile.mkdtemp(prefix="boxkite-metrics-")
        os.environ[storage.ENVIRONMENT] = path
        _claim(path)
        return path
    storage.check_directory(path)
    if os.path.exists(os.path.join(path, OWNER_FILE)):
        _claim(path)  # a temporary directory handed over by USR2
    elif not reexecuted:
        storage.wipe(path)
    return path


def _claim(path: str) -> None:
    with open(os.path.join(path, OWNER_FILE), "w") as file:
        file.write(str(os.getpid()))


directory = _prepare()


def post_worker_init(worker: Any) -> None:
    """Every series exists in this worker's file from its first scrape (also after fork)."""
    from .store import store

    store().ensure_files()


def child_exit(server: Any, worker: Any) -> None:
    """A worker ended (even by SIGKILL): prometheus_client's bookkeeping, then fold its files."""
    storage.retire_process(directory, worker.pid)


def pre_exec(server: Any) -> None:
    """USR2: the new master must use the same directory, so it inherits it."""
    server.cfg.env_orig[storage.ENVIRONMENT] = directory


def on_exit(server: Any) -> None:
    """Remove a temporary directory this master created and still owns."""
    owner = os.path.join(directory, OWNER_FILE)
    try:
        with open(owner) as file:
            mine = file.read().strip() == str(os.getpid())
    except OSError:
        return
    if mine:
        storage.wipe(directory)
        for name in (OWNER_FILE, storage.LOCK_FILE):  # the lock exists once anyone scraped
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
        with contextlib.suppress(OSError):  # not empty: someone else's files, leave them
            os.rmdir(directory)
