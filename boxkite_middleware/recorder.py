"""Count decoded requests into prometheus_client value objects, with the baseline's bins.

Series are prometheus_client ``ValueClass`` objects, created once per process: with
``PROMETHEUS_MULTIPROC_DIR`` set they live in this worker's mmap file and
``MultiProcessCollector`` aggregates every worker; without it `LiveCollector` exposes them.
Every request is tallied first (numpy for batches, ``bisect`` for a few rows) and then applied
as one increment per non-empty bucket or category.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import values as prometheus_values
from prometheus_client.registry import REGISTRY
from prometheus_client.utils import floatToGoString

from . import families
from .baseline import Baseline, Column, Histogram
from .binning import OTHER, as_float, canonical_category
from .families import Family
from .payload import Frame, Reason

SMALL_BATCH = 8
"""Up to this many rows, plain Python (``bisect``) beats numpy's per-call overhead."""

DEFAULT_EDGES = (-1e4, -1e3, -1e2, -10.0, -1.0, -0.1, 0.0, 0.1, 1.0, 10.0, 1e2, 1e3, 1e4)
"""Buckets for ``features=[...]`` without a baseline: decades either side of zero."""

_UNBINNED = Histogram(DEFAULT_EDGES, (0,) * (len(DEFAULT_EDGES) + 1), 0)

NO_BASELINE = "none"
"""The ``baseline`` label of series recorded without a baseline."""

OUTCOMES = {
    "recorded": (Reason.OK, Reason.NO_PREDICTIONS),
    "skipped": (
        Reason.NOT_JSON,
        Reason.UNDECODABLE,
        Reason.TOO_LARGE,
        Reason.UNKNOWN_FORMAT,
        Reason.BAD_SHAPE,
        Reason.NO_FEATURES,
        Reason.ERROR_STATUS,
        Reason.NO_RESPONSE,
        Reason.NO_BASELINE,
        Reason.INTERNAL_ERROR,
    ),
}

Sample = tuple[str, dict[str, str], float]
Make = Callable[[Family, str, dict[str, str]], Any]


@dataclass(frozen=True)
class Tally:
    """What one column of one request adds: counts per bucket or category, missing, sum."""

    counts: Mapping[int | str, int]
    missing: int
    total: float = 0.0


class _Series:
    """One value object and the sample it is exposed as (single-process mode)."""

    __slots__ = ("family", "labels", "name", "value")

    def __init__(self, make: Make, family: Family, suffix: str, labels: dict[str, str]) -> None:
        self.family = family
        self.name = family.name + suffix
        self.labels = labels
        self.value = make(family, suffix, labels)

    def sample(self) -> Sample:
        return self.name, self.labels, self.value.get()


class NumericColumn:
    """Live histogram of one numeric feature or output, with the baseline's edges."""

    def __init__(self, edges: Sequence[float], family: Family, make: Make, labels: dict) -> None:
        self._edges = np.asarray(edges, dtype=np.float64)
        self._edge_list = [float(edge) for edge in edges]
        self.family = family
        self._buckets = [
            _Series(make, family, "_bucket", {**labels, "le": floatToGoString(edge)})
            for edge in (*self._edge_list, math.inf)
        ]
        self._sum = _Series(make, family, "_sum", labels) if self._edge_list[0] >= 0 else None
        self._labels = labels

    def tally(self, values: Sequence[Any]) -> Tally:
        if len(values) <= SMALL_BATCH and not isinstance(values, np.ndarray):
            return self._tally_few(values)
        numbers = as_float(values)
        nan = np.isnan(numbers)
        present = numbers[~nan]
        counts = np.bincount(np.searchsorted(self._edges, present, side="left"))
        finite = present[np.isfinite(present)]
        with np.errstate(over="ignore"):
            total = float(finite.sum())
        nonzero = np.flatnonzero(counts)
        return Tally(dict(zip(nonzero.tolist(), counts[nonzero].tolist())), int(nan.sum()), total)

    def _tally_few(self, values: Sequence[Any]) -> Tally:
        counts: dict[int | str, int] = {}
        missing, total = 0, 0.0
        for value in values:
            number = as_float((value,))[0] if type(value) is not float else value
            if number != number:
                missing += 1
                continue
            index = bisect_left(self._edge_list, number)
            counts[index] = counts.get(index, 0) + 1
            if -math.inf < number < math.inf:
                total += number
        return Tally(counts, missing, total)

    def apply(self, tally: Tally) -> None:
        for index, count in tally.counts.items():
            self._buckets[index].value.inc(count)
        if self._sum is not None and tally.total and math.isfinite(tally.total):
            self._sum.value.inc(tally.total)

    def samples(self) -> Iterator[Sample]:
        cumulative = 0.0
        for bucket in self._buckets:
            cumulative += bucket.value.get()
            yield bucket.name, bucket.labels, cumulative
        if self._sum is not None:  # OpenMetrics: no _sum with negative buckets, no _count alone
            yield self.family.name + "_count", self._labels, cumulative
            yield self._sum.sample()


class CategoryColumn:
    """Live counts of one categorical feature or output; unknown values go to ``__other__``."""

    def __init__(self, categories: Iterable[str], family: Family, make: Make, labels: dict) -> None:
        self.family = family
        self._series = {
            category: _Series(make, family, "_total", {**labels, "category": category})
            for category in (*categories, OTHER)
        }

    def tally(self, values: Sequence[Any]) -> Tally:
        counts: dict[int | str, int] = {}
        missing = 0
        known = self._series
        for value in values.tolist() if isinstance(values, np.ndarray) else values:
            category = canonical_category(value)
            if category is None:
                missing += 1
                continue
            if category not in known:
                category = OTHER
            counts[category] = counts.get(category, 0) + 1
        return Tally(counts, missing)

    def apply(self, tally: Tally) -> None:
        for category, count in tally.counts.items():
            self._series[category].value.inc(count)

    def samples(self) -> Iterator[Sample]:
        for series in self._series.values():
            yield series.sample()


class _Column:
    """A column's counter and its missing-value series."""

    def __init__(self, counter: NumericColumn | CategoryColumn, missing: _Series) -> None:
        self.counter = counter
        self.missing = missing

    def tally(self, values: Sequence[Any]) -> Tally:
        return self.counter.tally(values)

    def apply(self, tally: Tally) -> None:
        self.counter.apply(tally)
        if tally.missing:
            self.missing.value.inc(tally.missing)


class Recorder:
    """All live series of one (model, baseline) pair in this process."""

    def __init__(self, model: str, baseline: Baseline | None, feature_names: Sequence[str]):
        self.model = model
        self.baseline = baseline
        self.identity = baseline.identity if baseline else NO_BASELINE
        self._common = {"model": model, "baseline": self.identity}
        self.features: dict[str, _Column] = {}
        self.outputs: dict[str, _Column] = {}
        columns = (
            baseline.columns()
            if baseline
            else (("feature", name, _UNBINNED) for name in feature_names)
        )
        for role, name, column in columns:
            target = self.features if role == "feature" else self.outputs
            target[name] = self._column(role, name, column)
        self._requests = {
            (outcome, reason): _Series(
                _make,
                families.REQUESTS,
                "_total",
                {**self._common, "outcome": outcome, "reason": reason},
            )
            for outcome, reasons in OUTCOMES.items()
            for reason in reasons
        }
        self._extra = _Series(_make, families.EXTRA_COLUMNS, "_total", self._common)

    def _column(self, role: str, name: str, column: Column) -> _Column:
        labels = {**self._common, families.COLUMN_LABEL[role]: name}
        if isinstance(column, Histogram):
            counter = NumericColumn(column.edges, families.VALUE_FAMILY[role], _make, labels)
        else:
            categories = [category for category, _ in column.counts if category != OTHER]
            counter = CategoryColumn(categories, families.CATEGORY_FAMILY[role], _make, labels)
        return _Column(counter, _Series(_make, families.MISSING_FAMILY[role], "_total", labels))

    def skip(self, reason: str) -> None:
        self._requests["skipped", reason].value.inc(1)

    def record(self, frame: Frame, predictions: Mapping[str, Sequence[Any]] | str) -> str:
        """Count one request (and its predictions, if decoded); return the outcome's reason."""
        if not self.features:
            self.skip(Reason.NO_BASELINE)
            return Reason.NO_BASELINE
        matched = self._match(frame)
        if matched is None:
            self.skip(Reason.NO_FEATURES)
            return Reason.NO_FEATURES
        pairs, extra = matched
        tallies = [
            (column, column.tally(values) if values is not None else Tally({}, frame.rows))
            for column, values in pairs
        ]
        reason = Reason.NO_PREDICTIONS
        if not isinstance(predictions, str):
            outputs = [
                (column, column.tally(predictions[name]))
                for name, column in self.outputs.items()
                if name in predictions
            ]
            if outputs:
                tallies += outputs
                reason = Reason.OK
        for column, tally in tallies:
            column.apply(tally)
        if extra:
            self._extra.value.inc(extra)
        self._requests["recorded", reason].value.inc(1)
        return reason

    def _match(self, frame: Frame) -> tuple[list, int] | None:
        """Baseline features paired with request columns: by name, or by position if unnamed."""
        if frame.names is None:
            if len(frame.columns) != len(self.features):
                return None
            return list(zip(self.features.values(), frame.columns)), 0
        by_name: dict[str, Sequence[Any]] = {}
        for name, values in zip(frame.names, frame.columns):
            by_name.setdefault(name, values)
        pairs = [(column, by_name.get(name)) for name, column in self.features.items()]
        used = sum(values is not None for _, values in pairs)
        if not used:
            return None
        return pairs, len(frame.names) - used

    def touch(self) -> None:
        """Make this process's copy of every series exist (mmap mode re-creates after fork)."""
        self._extra.value.get()

    def live_samples(self) -> Iterator[tuple[Family, Sample]]:
        """Every live sample with its family, for single-process exposition."""
        for column in (*self.features.values(), *self.outputs.values()):
            for sample in column.counter.samples():
                yield column.counter.family, sample
            yield column.missing.family, column.missing.sample()
        for series in (*self._requests.values(), self._extra):
            yield series.family, series.sample()


def _make(family: Family, suffix: str, labels: dict[str, str]) -> Any:
    """A value object keyed exactly like prometheus_client's own metrics key theirs."""
    names = list(labels)
    return prometheus_values.ValueClass(
        family.kind,
        family.name,
        family.name + suffix,
        names,
        [labels[name] for name in names],
        family.documentation,
    )


_recorders: dict[tuple[str, str], Recorder] = {}
_recorders_lock = threading.Lock()


def recorder_for(
    model: str, baseline: Baseline | None, feature_names: Sequence[str] = ()
) -> Recorder:
    """The process's one recorder for ``(model, baseline)``: middleware built twice shares it.

    Two value objects for one series would overwrite each other's mmap entry and lose counts.
    """
    identity = baseline.identity if baseline else NO_BASELINE
    with _recorders_lock:
        existing = _recorders.get((model, identity))
        if existing is None:
            existing = _recorders[model, identity] = Recorder(model, baseline, feature_names)
            _register_collectors()
        elif baseline is None and list(existing.features) != list(feature_names):
            raise ValueError(
                f"model {model!r} already records features {list(existing.features)} without a "
                "baseline; give this middleware another model= name"
            )
    return existing


def recorders() -> list[Recorder]:
    with _recorders_lock:
        return list(_recorders.values())


def multiprocess() -> bool:
    """Whether prometheus_client chose mmap files (``PROMETHEUS_MULTIPROC_DIR`` at its import)."""
    return bool(getattr(prometheus_values.ValueClass, "_multiprocess", False))


_registered = False


def _register_collectors() -> None:
    """In single-process mode the default registry serves live and baseline families."""
    global _registered
    if _registered:
        return
    from .exposition import BaselineCollector, LiveCollector

    if not multiprocess():
        REGISTRY.register(LiveCollector())
        REGISTRY.register(BaselineCollector())
    _registered = True
