"""Where this process keeps its live series: one float64 array per metric type.

A request touches one series per non-empty bucket: about 25 for one row, 300 for 100 rows.
prometheus_client's value objects cost one locked Python call each (~0.7 µs in mmap mode), which
was most of the middleware's cost. Here every series is a *slot* of an array, and a request's
whole effect is added under one lock: a batch's bucket slots by one ``numpy.add.at``, the few
other amounts through a memoryview.

With ``PROMETHEUS_MULTIPROC_DIR`` set the arrays are views of mmap files in prometheus_client's
own format, ``counter_boxkite_{pid}.db`` and ``histogram_boxkite_{pid}.db``: laid out by its
``MmapedDict``, keyed by its ``mmap_key``, read by its ``MultiProcessCollector`` like any other
worker file (the type comes from the name's first word). Only the increment is ours: a float64
store to the value's 8-aligned offset, the same single writer per file as prometheus_client's.
Without the directory the arrays live in memory and `exposition.LiveCollector` reads them.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from . import storage
from .families import Family

KINDS = ("histogram", "counter")
HISTOGRAM, COUNTER = range(2)
"""Indices of the two blocks (arrays) in `Increments` and `Store`, in the order they are
applied (see `Store.apply`)."""


@dataclass(frozen=True)
class Series:
    """One exposed sample: its family, its sample name and its labels."""

    family: Family
    name: str
    labels: dict[str, str]

    @property
    def block(self) -> int:
        return KINDS.index(self.family.kind)

    def mmap_key(self) -> str:
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


class _Block:
    """The series of one metric type: slot ``i`` is ``array[positions[i]]``.

    ``cells``/``where`` are the same places as a memoryview and a list: for a few slots, plain
    indexing beats numpy's per-call overhead by 2-8×."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.series: list[Series] = []
        self.reset()

    def reset(self) -> None:
        self.place(np.zeros(0), np.zeros(0, dtype=np.intp))
        self.laid_out = 0
        """How many of ``series`` have a place in ``array``."""

    def place(self, array: np.ndarray, positions: np.ndarray) -> None:
        self.array, self.positions = array, positions
        self.cells, self.where = memoryview(array), positions.tolist()


class Store:
    """This process's live series, in memory or (``directory`` given) in mmap files."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._blocks = tuple(_Block(kind) for kind in KINDS)
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def allocate(self, series: Sequence[Series]) -> int:
        """Slots for new series of one type, at 0; returns the first (they are contiguous).

        Places are made on the next use, so a recorder's many columns make one file layout."""
        (block_index,) = {item.block for item in series}
        with self._lock:
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
        with self._lock:
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
        with self._lock:
            self._update()
            block = self._blocks[block_index]
            block.cells[block.where[slot]] += amount

    def snapshot(self) -> tuple[np.ndarray, ...]:
        """Every block's values in slot order (single-process exposition)."""
        with self._lock:
            self._update()
            return tuple(block.array[block.positions] for block in self._blocks)

    def ensure_files(self) -> None:
        """Make this process's files hold every series, e.g. in a worker right after fork, so
        that all of them show, at 0, from the worker's first scrape."""
        with self._lock:
            self._update()

    def _update(self) -> None:
        """Give new series their places; after a fork, start this process's own files (the
        inherited mappings are the parent's file)."""
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            for block in self._blocks:
                block.reset()
        for block in self._blocks:
            if block.laid_out != len(block.series):
                self._lay_out(block)

    def _lay_out(self, block: _Block) -> None:
        if self.directory is None:
            grown = np.zeros(len(block.series))
            grown[: block.array.size] = block.array
            block.place(grown, np.arange(len(block.series)))
        else:
            self._map_file(block)
        block.laid_out = len(block.series)

    def _map_file(self, block: _Block) -> None:
        """Add the missing keys with prometheus_client's MmapedDict, then map the file."""
        path = os.path.join(self.directory, f"{block.kind}_{storage.STORE_INFIX}_{self._pid}.db")
        keys = [series.mmap_key() for series in block.series]
        layout = MmapedDict(path)
        try:
            for key in keys:
                layout.read_value(key)  # adds the key, at 0, if the file lacks it
        finally:
            layout.close()
        offsets = {key: pos for key, _, _, pos in MmapedDict.read_all_values_from_file(path)}
        with open(path, "r+b") as file:
            mapping = mmap.mmap(file.fileno(), 0)
        positions = np.array([offsets[key] // 8 for key in keys], dtype=np.intp)
        block.place(np.frombuffer(mapping, dtype=np.float64), positions)  # keeps it mapped


_store: Store | None = None
_store_lock = threading.Lock()


def store() -> Store:
    """The process's one store: in mmap files iff prometheus_client chose them at its import."""
    global _store
    with _store_lock:
        if _store is None:
            _store = Store(os.environ[storage.ENVIRONMENT] if multiprocess() else None)
        return _store


def multiprocess() -> bool:
    """Whether prometheus_client chose mmap files (``PROMETHEUS_MULTIPROC_DIR`` at its import)."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))
