"""Where this process keeps its live series: one float64 array per metric type.

A request touches one series per non-empty bucket: about 25 for one row, 300 for 100 rows.
prometheus_client's value objects cost one locked Python call each (~0.7 µs in mmap mode), which
was most of the middleware's cost. Here every series is a *slot* of an array, and a request's
whole effect is added under one lock: a batch's bucket slots by one ``numpy.add.at``, the few
other amounts through a memoryview.

With ``PROMETHEUS_MULTIPROC_DIR`` set the arrays are views of this process's own files
(`multiprocess.OwnFile`) in prometheus_client's format: keyed by its ``mmap_key`` and summed
with every other worker's files on each scrape. Only the increment is ours: a float64 store to
the value's 8-aligned offset, one writer per file as with prometheus_client's. Without the
directory the arrays live in memory. Either way `exposition` reads only what is stored here.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client.mmap_dict import mmap_key

from . import multiprocess
from .families import Family

KINDS = ("histogram", "counter")
HISTOGRAM, COUNTER = range(2)
"""Indices of the two blocks (arrays) in `Increments` and `Store`, in the order they are
applied (see `Store.apply`)."""


@dataclass(frozen=True, eq=False)
class Series:
    """One exposed sample: its family, its sample name and its labels."""

    family: Family
    name: str
    labels: dict[str, str]

    @property
    def block(self) -> int:
        return KINDS.index(self.family.kind)

    @functools.cached_property
    def key(self) -> str:
        """The key prometheus_client's own value object would use for this sample."""
        names = list(self.labels)
        return mmap_key(
            self.family.name,
            self.name,
            names,
            [self.labels[name] for name in names],
            self.family.documentation,
        )


class Increments:
    """A request's whole effect per block, planned before any of it is applied.

    ``units`` holds arrays of slots that each get +1 (a batch's bucket indices, with repeats);
    ``slots``/``amounts`` hold everything else (a few rows' buckets, sums, counts)."""

    __slots__ = ("amounts", "slots", "units")

    def __init__(self) -> None:
        self.units: tuple[list[np.ndarray], ...] = ([], [])
        self.slots: tuple[list[int], ...] = ([], [])
        self.amounts: tuple[list[float], ...] = ([], [])

    def add(self, block: int, slot: int, amount: float) -> None:
        self.slots[block].append(slot)
        self.amounts[block].append(amount)

    def compact(self) -> None:
        """Turn the unit arrays into one amount per distinct slot: a request read in slices
        then holds a few hundred amounts, not one slot per value it had."""
        for block, units in enumerate(self.units):
            if units:
                slots, counts = np.unique(np.concatenate(units), return_counts=True)
                self.slots[block].extend(slots.tolist())
                self.amounts[block].extend(counts.tolist())
                units.clear()


class _Block:
    """The series of one metric type: slot ``i`` is ``array[positions[i]]``.

    ``cells``/``where`` are the same places as a memoryview and a list: for a few slots, plain
    indexing beats numpy's per-call overhead by 2-8×."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.series: list[Series] = []
        self.file: multiprocess.OwnFile | None = None
        self.reset()

    def reset(self) -> None:
        self.place(np.zeros(0), np.zeros(0, dtype=np.intp))
        self.laid_out = 0
        """How many of ``series`` have a place in ``array``."""

    def place(self, array: np.ndarray, positions: np.ndarray) -> None:
        self.array, self.positions = array, positions
        self.cells, self.where = array.data, positions.tolist()


class Store:
    """This process's live series, in memory or (``directory`` given) in mmap files."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._blocks = tuple(_Block(kind) for kind in KINDS)
        self.lock = threading.Lock()
        self._pid = os.getpid()

    def allocate(self, series: Sequence[Series]) -> int:
        """Slots for new series of one type, at 0; returns the first (they are contiguous).

        Places are made on the next use, so a recorder's many columns make one file layout."""
        (block_index,) = {item.block for item in series}
        with self.lock:
            block = self._blocks[block_index]
            first = len(block.series)
            block.series.extend(series)
            return first

    def apply(self, increments: Increments) -> None:
        """Add a request's increments under one lock: a batch's units with one ``add.at``,
        the few other amounts one by one.

        Histograms first, then counters in the order they were planned: the recorder plans
        the request's outcome last, so once a scrape shows a request as counted, any scrape
        that starts later shows all of it. (One scrape reads the files one after the other,
        so it may see a request being counted in one file and not yet in the other.)"""
        with self.lock:
            self._update()
            for block, units, slots, amounts in zip(
                self._blocks, increments.units, increments.slots, increments.amounts
            ):
                if units:
                    unit_slots = units[0] if len(units) == 1 else np.concatenate(units)
                    np.add.at(block.array, block.positions[unit_slots], 1.0)
                cells, where = block.cells, block.where
                for slot, amount in zip(slots, amounts):
                    cells[where[slot]] += amount

    def add(self, block_index: int, slot: int, amount: float) -> None:
        with self.lock:
            self._update()
            block = self._blocks[block_index]
            block.cells[block.where[slot]] += amount

    def snapshot(self) -> tuple[np.ndarray, ...]:
        """Every block's values in slot order."""
        with self.lock:
            self._update()
            return tuple(block.array[block.positions] for block in self._blocks)

    def samples(self) -> Iterator[tuple[Series, float]]:
        """Every series with its value (what a scrape of this process reads)."""
        with self.lock:
            self._update()
            pairs = [
                (block.series, block.array[block.positions].tolist()) for block in self._blocks
            ]
        for series, values in pairs:
            yield from zip(series, values)

    def ensure_files(self) -> None:
        """Make this process's files hold every series, e.g. in a worker right after fork, so
        that all of them show, at 0, from the worker's first scrape."""
        with self.lock:
            self._update()

    def _update(self) -> None:
        """Give new series their places; after a fork, start this process's own files (the
        inherited mappings are the parent's file)."""
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            for block in self._blocks:
                if block.file is not None:
                    block.file.close()  # the child's copy of the parent's lock
                    block.file = None
                block.reset()
        started = self.directory is not None and self._blocks[0].file is None
        for block in self._blocks:
            if block.laid_out != len(block.series):
                self._lay_out(block)
        if started and self.directory is not None and self._blocks[0].file is not None:
            multiprocess.fold_ended(self.directory)

    def _lay_out(self, block: _Block) -> None:
        current = block.array[block.positions].tolist()
        values = current + [0.0] * (len(block.series) - len(current))
        if self.directory is None:
            block.place(np.array(values), np.arange(len(values)))
        else:
            entries = [(series.key, value) for series, value in zip(block.series, values)]
            if block.file is None:
                block.file = multiprocess.OwnFile(self.directory, block.kind, entries)
            else:
                block.file.replace(entries)
            positions = np.array(block.file.offsets, dtype=np.intp) // 8
            block.place(np.frombuffer(block.file.mapping, dtype=np.float64), positions)
        block.laid_out = len(block.series)


_store: Store | None = None
_store_lock = threading.Lock()


def store() -> Store:
    """The process's one store: in mmap files iff prometheus_client chose them at its import."""
    global _store
    with _store_lock:
        if _store is None:
            _store = Store(multiprocess.directory() if multiprocess.enabled() else None)
        return _store


def worker_started() -> None:
    """Start this worker process's metric files now and fold those of processes that ended.

    Called for you: when a middleware is built, in the child of every ``os.fork`` of a
    process that has one (gunicorn, multiprocessing), and after each uWSGI fork. Call it
    yourself only from a hook of another server that forks workers from a process with the
    app loaded without running Python's fork hooks. Otherwise a worker starts its files on
    its first request, after the response went out: killed right then, it loses that
    request's counts."""
    if multiprocess.enabled():
        store().ensure_files()


def follow_uwsgi_forks() -> None:
    """uWSGI forks its workers without Python's fork hooks (unless ``--py-call-osafterfork``);
    its own post-fork chain runs `worker_started` instead. Chained through `uwsgidecorators`,
    so that the app's own ``@postfork`` functions still run."""
    global _following_uwsgi
    if _following_uwsgi or "uwsgi" not in sys.modules:
        return
    _following_uwsgi = True
    from uwsgidecorators import postfork

    postfork(_start_quietly)


_following_uwsgi = False


def _before_fork() -> None:
    """Hold the store's lock across ``fork``: a child must not inherit it taken by a thread
    that does not exist there."""
    _store_lock.acquire()
    if _store is not None:
        _store.lock.acquire()


def _after_fork_in_parent() -> None:
    if _store is not None:
        _store.lock.release()
    _store_lock.release()


def _after_fork_in_child() -> None:
    """Fresh locks (the parent's may never have been taken for this fork: uWSGI with
    ``--py-call-osafterfork`` runs only the child's hooks), then this worker's own files, if
    the parent records anything."""
    global _store_lock
    _store_lock = threading.Lock()
    if _store is not None:
        _store.lock = threading.Lock()
        _start_quietly()


def _start_quietly() -> None:
    """`worker_started` from a fork hook, which must never raise: a directory that cannot be
    written is reported by the first request that tries, and counted around."""
    try:
        worker_started()
    except Exception:
        logging.getLogger("boxkite_middleware").debug(
            "boxkite-middleware: could not start this worker's files", exc_info=True
        )


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
