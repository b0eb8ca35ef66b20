"""The server's other worker processes, as Linux's ``/proc`` shows them: warnings about a
deploy whose scrapes would show part of the counts, said only when they are true.

A server's workers are the processes that share this one's parent and its command line:
forked workers (gunicorn, uWSGI, bjoern) have the master's; workers started by
``multiprocessing``'s spawn method (uvicorn, hypercorn, granian) have the same
``spawn_main(...)`` line but for the numbers of the file descriptors they were handed.
Where ``/proc`` cannot tell (not Linux), the server's own hints are used instead.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import sys
from collections.abc import Iterator
from types import FrameType

from .multiprocess import OWN_INFIX

logger = logging.getLogger("boxkite_middleware")

SEVERAL_WORKERS = (
    "boxkite-middleware: this is one of {count} worker processes, but "
    "PROMETHEUS_MULTIPROC_DIR was not set before prometheus_client was imported, so each "
    "/metrics shows one worker's counts; under gunicorn use -c python:boxkite_middleware.gunicorn, "
    "under other servers export PROMETHEUS_MULTIPROC_DIR before starting them"
)
SPLIT_DIRECTORIES = (
    "boxkite-middleware: worker {pid} keeps its metrics in {theirs}, this one in {ours}: each "
    "/metrics shows part of the counts. Set PROMETHEUS_MULTIPROC_DIR before the server starts "
    "(uWSGI: --env), not in the app module that every worker imports"
)
_SPAWNED = "--multiprocessing-fork"
_DIGITS = re.compile(rb"\d+")

_warned: set[str] = set()


def check_without_directory(*, server_says_several: bool = False) -> None:
    """Warn, once, if this process is one of several workers that keep their counts in
    memory. ``server_says_several`` is the server's own hint (WSGI's ``wsgi.multiprocess``),
    used only where ``/proc`` cannot tell: bjoern says it although it runs one process."""
    workers = _gunicorn_workers()
    if workers is None:
        fellows = fellow_workers()
        if fellows is not None:
            workers = len(fellows)
        elif server_says_several or multiprocessing.parent_process() is not None:
            _warn_once(SEVERAL_WORKERS, count="several")
            return
    if workers is not None and workers > 1:
        _warn_once(SEVERAL_WORKERS, count=workers)


def check_shared_directory(path: str) -> None:
    """Warn, once, if a fellow worker maps its files from another directory: the trap of a
    directory made in the app module when every worker imports it (uWSGI ``--lazy-apps``)."""
    ours = os.path.realpath(path)
    for pid in fellow_workers() or ():
        for theirs in _mapped_directories(pid):
            if theirs != ours:
                _warn_once(SPLIT_DIRECTORIES, pid=pid, theirs=theirs, ours=ours)
                return


def fellow_workers() -> list[int] | None:
    """The pids of this server's workers, this process included; None without ``/proc``."""
    try:
        parent = os.getppid()
        ours = _command_line(os.getpid())
        return [
            pid for pid in _children(parent) if pid == os.getpid() or _command_line(pid) == ours
        ]
    except OSError:
        return None


def _children(parent: int) -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as file:
                    fields = file.read().rpartition(b")")[2].split()
            except OSError:  # ended meanwhile
                continue
            if len(fields) > 1 and int(fields[1]) == parent:
                yield int(entry)


def _command_line(pid: int) -> bytes | None:
    """Its command line, with the numbers of a spawned process's descriptors blotted out."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            line = file.read()
    except OSError:
        return None
    return _DIGITS.sub(b"#", line) if _SPAWNED.encode() in line else line


def _mapped_directories(pid: int) -> set[str]:
    """Directories of the metric files a process has mapped (deleted ones left out)."""
    found = set()
    try:
        with open(f"/proc/{pid}/maps") as file:
            for line in file:
                path = line.rstrip("\n").partition("/")[2]
                if path and f"_{OWN_INFIX}_" in path and path.endswith(".db"):
                    found.add(os.path.dirname("/" + path))
    except OSError:  # another user's process, or ended
        pass
    return found


def _warn_once(template: str, **values: object) -> None:
    if template not in _warned:
        _warned.add(template)
        logger.warning(template.format(**values))


def _gunicorn_workers() -> int | None:
    """The ``workers`` setting of the gunicorn loading this app, or None if it is not gunicorn.

    Known before the workers are forked, so it also serves the first worker. Without our
    configuration nothing of ours runs in gunicorn's master, but the app is built while
    gunicorn's worker (or, with ``--preload``, its application object) is on the call stack,
    and both carry the settings as ``self.cfg``."""
    if "gunicorn" not in sys.modules:
        return None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("gunicorn."):
            settings = getattr(frame.f_locals.get("self"), "cfg", None)
            if settings is not None and hasattr(settings, "workers"):
                return int(settings.workers)
        frame = frame.f_back
    return None
