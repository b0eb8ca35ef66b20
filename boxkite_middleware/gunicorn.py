"""A ready gunicorn configuration for multi-worker deploys.

    gunicorn -c python:boxkite_middleware.gunicorn --workers 4 app:app

or, in your own ``gunicorn.conf.py``::

    from boxkite_middleware.gunicorn import *  # noqa: F403  (the hooks below)
    workers = 4

Importing this module (gunicorn does it in the master, before it loads the app — also with
``--preload``) sets ``PROMETHEUS_MULTIPROC_DIR`` before anything can import prometheus_client:
to the directory you exported, checked, or to a fresh temporary one. The hooks clear what a
previous run left, serve scrapes from the master when ``BOXKITE_METRICS_PORT`` is set, create
every series in each worker after it loads the app, fold a dead worker's counts into archive
files, and remove a temporary directory on exit.

No hook raises: gunicorn's master re-raises from its main loop, so an error of ours (the
directory deleted, made read-only, full) would end the whole server at the next worker exit.
Each failure is logged, the first with its traceback; a fold that fails is retried later.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from . import multiprocess

__all__ = [
    "child_exit",
    "on_exit",
    "on_starting",
    "post_worker_init",
    "pre_exec",
    "when_ready",
]

OWNER_FILE = "boxkite.owner"
"""Holds the pid of the gunicorn master that owns a temporary directory."""
FOLD_WAIT = 0.05
"""How long the master tries the directory lock before leaving a fold to the next hook."""

logger = logging.getLogger("boxkite_middleware")


def _prepare() -> tuple[str, bool]:
    if "prometheus_client" in sys.modules and not multiprocess.enabled():
        raise RuntimeError(
            "prometheus_client was imported before boxkite_middleware.gunicorn set "
            f"{multiprocess.ENVIRONMENT}; import this configuration first"
        )
    path = os.environ.get(multiprocess.ENVIRONMENT)
    if path is None:
        path = tempfile.mkdtemp(prefix="boxkite-metrics-")
        os.environ[multiprocess.ENVIRONMENT] = path
        _claim(path)
        return path, True
    multiprocess.check_directory(path)
    return path, os.path.exists(os.path.join(path, OWNER_FILE))


def _claim(path: str) -> None:
    """Mark a temporary directory as this master's (``O_EXCL``: never through a planted link)."""
    owner = os.path.join(path, OWNER_FILE)
    with contextlib.suppress(FileNotFoundError):
        os.remove(owner)  # a USR2 predecessor's claim
    descriptor = os.open(owner, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(str(os.getpid()))


directory, _temporary = _prepare()
_loaded_at = time.time()

_failures: dict[str, float] = {}


def _never_raises(hook: Callable[..., None]) -> Callable[..., None]:
    """Log a hook's failure instead of raising into gunicorn: the first with its traceback,
    then at most one line a minute per hook."""

    @functools.wraps(hook)
    def guarded(*arguments: Any) -> None:
        try:
            hook(*arguments)
        except Exception:
            last = _failures.get(hook.__name__)
            now = time.monotonic()
            if last is None:
                logger.exception("boxkite-middleware: %s failed (it is retried)", hook.__name__)
            elif now - last > 60:
                logger.error("boxkite-middleware: %s failed again", hook.__name__)
            else:
                return
            _failures[hook.__name__] = now

    return guarded


@_never_raises
def on_starting(server: Any) -> None:
    """Take over a temporary directory handed on by ``USR2``, and clear what a previous run
    left (not after a ``USR2`` re-exec: the old master's workers still write there)."""
    if os.path.exists(os.path.join(directory, OWNER_FILE)):
        _claim(directory)
    if "GUNICORN_PID" not in os.environ:
        multiprocess.wipe(directory, published_before=_loaded_at)


@_never_raises
def when_ready(server: Any) -> None:
    """With ``BOXKITE_METRICS_PORT`` set, the master serves every worker's counts there
    (``BOXKITE_METRICS_HOST``, ``BOXKITE_METRICS_CERTFILE`` and ``…_KEYFILE`` too)."""
    from .exposition import Listener

    listener = Listener.configured()
    if listener is not None:
        listener.serve()


@_never_raises
def post_worker_init(worker: Any) -> None:
    """Every series exists in this worker's files before its first request (the fork hook
    does this already for an app loaded before the fork; this covers one loaded after)."""
    from .store import worker_started

    worker_started()


@_never_raises
def child_exit(server: Any, worker: Any) -> None:
    """A worker ended (even by SIGKILL): prometheus_client's bookkeeping, then fold its files
    and any an earlier fold left; if scrapes hold the lock, the next fold takes them.

    A directory deleted under the server (a ``/tmp`` cleaner) is made again first: the app's
    own prometheus_client metrics fail at import without it, so no new worker could boot."""
    if not os.path.isdir(directory):
        os.mkdir(directory, 0o700)
        logger.error("boxkite-middleware: %s was deleted; made it again", directory)
        if _temporary:
            _claim(directory)
    multiprocess.fold(directory, dead_pids=[worker.pid], wait=FOLD_WAIT)


@_never_raises
def pre_exec(server: Any) -> None:
    """USR2: the new master must use the same directory, so it inherits it."""
    server.cfg.env_orig[multiprocess.ENVIRONMENT] = directory


@_never_raises
def on_exit(server: Any) -> None:
    """Remove a temporary directory this master created and still owns."""
    owner = os.path.join(directory, OWNER_FILE)
    try:
        with open(owner) as file:
            mine = file.read().strip() == str(os.getpid())
    except OSError:
        return
    if mine:
        multiprocess.wipe(directory, only_dead=False)
        for name in (OWNER_FILE, multiprocess.LOCK_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
        with contextlib.suppress(OSError):  # not empty: someone else's files, leave them
            os.rmdir(directory)
