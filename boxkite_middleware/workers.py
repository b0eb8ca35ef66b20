"""Several worker processes without multi-process storage: each /metrics shows one worker.

That happens when the app runs under plain ``gunicorn --workers N`` or ``uvicorn --workers N``
without ``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client was imported. It is detected
where it can be, when the middleware is built, and said once per process.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys

SEVERAL_WORKERS = (
    "boxkite-middleware: this looks like one of several worker processes, but "
    "PROMETHEUS_MULTIPROC_DIR was not set before prometheus_client was imported, so /metrics "
    "shows one worker's counts; under gunicorn use -c python:boxkite_middleware.gunicorn, "
    "under uvicorn --workers export PROMETHEUS_MULTIPROC_DIR first"
)

_warned = False


def warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        logging.getLogger("boxkite_middleware").warning(SEVERAL_WORKERS)


def several_at_start_up() -> bool:
    """uvicorn's workers are spawned children of its supervisor; gunicorn says how many."""
    return multiprocessing.parent_process() is not None or (gunicorn_workers() or 1) > 1


def gunicorn_workers() -> int | None:
    """The ``workers`` setting of the gunicorn loading this app, or None if it is not gunicorn.

    Without our configuration nothing of ours runs in gunicorn's master, but the app is built
    while gunicorn's worker (or, with ``--preload``, its application object) is on the call
    stack, and both carry the settings as ``self.cfg``."""
    if "gunicorn" not in sys.modules:
        return None
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("gunicorn."):
            settings = getattr(frame.f_locals.get("self"), "cfg", None)
            if hasattr(settings, "workers"):
                return settings.workers
        frame = frame.f_back
    return None
