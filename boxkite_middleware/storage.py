"""The multi-process directory: prepare it, wipe our own files, fold dead workers' files.

prometheus_client gives every process its own ``{type}_{pid}.db`` file (and `store` its
``{type}_boxkite_{pid}.db``) and sums them all on each scrape. With worker churn the files
pile up and scrapes slow down, so when a worker dies its counter, histogram and summary files
are added into one ``*_archive.db`` file per type and removed — under an exclusive lock that
every scrape takes shared, so a scrape never sees a worker counted twice or not at all. Gauges
are left to prometheus_client's own ``mark_process_dead`` rules.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
from collections.abc import Iterator

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
LOCK_FILE = "boxkite.lock"
OWN_PATTERNS = ("counter_*.db", "gauge_*.db", "histogram_*.db", "summary_*.db")
"""The files prometheus_client writes; nothing else in the directory is ever removed."""

ACCUMULATING = ("counter", "histogram", "summary")
ARCHIVE = "archive"
STORE_INFIX = "boxkite"
"""`store.Store` names its files ``{type}_boxkite_{pid}.db``."""


def check_directory(path: str) -> None:
    """Fail at start-up, not at the first request, when the directory cannot be used."""
    if not os.path.isdir(path):
        raise RuntimeError(f"{ENVIRONMENT}={path!r} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise RuntimeError(f"{ENVIRONMENT}={path!r} is not writable")


def wipe(path: str) -> int:
    """Remove the metric files a previous run left (not recursively, nothing else)."""
    removed = 0
    for pattern in OWN_PATTERNS:
        for file in glob.glob(os.path.join(glob.escape(path), pattern)):
            os.remove(file)
            removed += 1
    return removed


@contextlib.contextmanager
def locked(path: str, exclusive: bool) -> Iterator[None]:
    """Shared for scrapes, exclusive for folding a dead worker's files."""
    descriptor = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def retire_process(path: str, pid: int) -> int:
    """A process has ended: prometheus_client's ``mark_process_dead`` (it removes the process's
    live-gauge files), then fold its accumulating files into the archives; return the files
    folded. Both under the exclusive lock, so no scrape reads a file as it goes away."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    folded = 0
    with locked(path, exclusive=True):
        mark_process_dead(pid, path)
        for kind in ACCUMULATING:
            names = (f"{kind}_{pid}.db", f"{kind}_{STORE_INFIX}_{pid}.db")
            dead = [os.path.join(path, name) for name in names]
            dead = [file for file in dead if os.path.exists(file)]
            if not dead:
                continue
            archive_path = os.path.join(path, f"{kind}_{ARCHIVE}.db")
            sources = [*dead, *([archive_path] if os.path.exists(archive_path) else [])]
            merged = MultiProcessCollector.merge(sources, accumulate=False)
            archive = MmapedDict(archive_path)
            try:
                for metric in merged:
                    for sample in metric.samples:
                        key = mmap_key(
                            metric.name,
                            sample.name,
                            list(sample.labels),
                            list(sample.labels.values()),
                            metric.documentation,
                        )
                        archive.write_value(key, sample.value, 0.0)
            finally:
                archive.close()
            for file in dead:
                os.remove(file)
                folded += 1
    return folded
