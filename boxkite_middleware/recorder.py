"""Count decoded requests into prometheus_client value objects, with the baseline's bins.

Series are prometheus_client ``ValueClass`` objects, created once per process: with
``PROMETHEUS_MULTIPROC_DIR`` set they live in this worker's mmap file and
``MultiProcessCollector`` aggregates every worker; without it `LiveCollector` exposes them.
Every request is tallied first (numpy for batches, ``bisect`` for a few rows) and then applied
as one increment per non-empty bucket or category.
"""

from __future__ import annotations

import functools
import math
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import values as prometheus_values
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY
from prometheus_client.utils import floatToGoString

from . import families, fileformat
from .baseline import Baseline, Column, Histogram
from .binning import OTHER, as_float, canonical_category, one_float
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
    # Recorded requests say why their predictions were not, when they were not.
    "recorded": (
        Reason.OK,
        Reason.NO_PREDICTIONS,
        Reason.TOO_LARGE,
        Reason.NOT_JSON,
        Reason.COMPRESSED,
        Reason.UNDECODABLE,
        Reason.UNKNOWN_FORMAT,
        Reason.BAD_SHAPE,
    ),
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

Increments = list[tuple[Any, float]]
"""(value object, amount) pairs: a request's whole effect, applied only once fully planned."""


class _Series:
    """One value object and the sample it is exposed as (single-process mode)."""

    __slots__ = ("family", "labels", "name", "value")

    def __init__(self, family: Family, suffix: str, labels: dict[str, str]) -> None:
        self.family = family
        self.name = family.name + suffix
        self.labels = labels
        names = list(labels)
        # Keyed exactly as prometheus_client keys its own metrics' values.
        self.value = prometheus_values.ValueClass(
            family.kind,
            family.name,
            self.name,
            names,
            [labels[name] for name in names],
            family.documentation,
        )

    def sample(self) -> tuple[Family, Sample]:
        return self.family, (self.name, self.labels, self.value.get())


class NumericColumn:
    """Live histogram of one numeric feature or output, with the baseline's edges."""

    def __init__(
        self, edges: Sequence[float], family: Family, missing: Family, labels: dict[str, str]
    ) -> None:
        self.family = family
        self._edges = np.asarray(edges, dtype=np.float64)
        self._edge_list = [float(edge) for edge in edges]
        self._buckets = [
            _Series(family, "_bucket", {**labels, "le": floatToGoString(edge)})
            for edge in (*self._edge_list, math.inf)
        ]
        self._bucket_values = [bucket.value for bucket in self._buckets]
        self._sum = _Series(family, "_sum", labels) if self._edge_list[0] >= 0 else None
        self.missing = _Series(missing, "_total", labels)
        self._labels = labels

    def plan(self, values: Sequence[Any], increments: Increments) -> None:
        """Append this column's increments for ``values`` (one per non-empty bucket)."""
        if len(values) <= SMALL_BATCH and not isinstance(values, np.ndarray):
            self._plan_few(values, increments)
            return
        numbers = as_float(values)
        nan = np.isnan(numbers)
        present = numbers[~nan]
        counts = np.bincount(np.searchsorted(self._edges, present, side="left"))
        nonzero = np.flatnonzero(counts)
        buckets = self._bucket_values
        increments += [(buckets[i], n) for i, n in zip(nonzero.tolist(), counts[nonzero].tolist())]
        missing = int(nan.sum())
        if missing:
            increments.append((self.missing.value, missing))
        if self._sum is not None:
            with np.errstate(over="ignore", invalid="ignore"):
                self._plan_sum(float(present[np.isfinite(present)].sum()), increments)

    def _plan_few(self, values: Sequence[Any], increments: Increments) -> None:
        """The same rule as `plan` with ``bisect``: numpy's call overhead dominates few rows."""
        total = 0.0
        for value in values:
            number = value if type(value) is float else one_float(value)
            if number != number:
                increments.append((self.missing.value, 1))
                continue
            increments.append((self._bucket_values[bisect_left(self._edge_list, number)], 1))
            if -math.inf < number < math.inf:
                total += number
        if self._sum is not None:
            self._plan_sum(total, increments)

    def _plan_sum(self, total: float, increments: Increments) -> None:
        if total and math.isfinite(total):
            increments.append((self._sum.value, total))

    def samples(self) -> Iterator[tuple[Family, Sample]]:
        cumulative = 0.0
        for bucket in self._buckets:
            cumulative += bucket.value.get()
            yield self.family, (bucket.name, bucket.labels, cumulative)
        if self._sum is not None:  # OpenMetrics: no _sum with negative buckets, no _count alone
            yield self.family, (self.family.name + "_count", self._labels, cumulative)
            yield self._sum.sample()
        yield self.missing.sample()


class CategoryColumn:
    """Live counts of one categorical feature or output; unknown values go to ``__other__``."""

    def __init__(
        self, categories: Iterable[str], family: Family, missing: Family, labels: dict[str, str]
    ) -> None:
        self.family = family
        self._series = {
            category: _Series(family, "_total", {**labels, "category": category})
            for category in (*categories, OTHER)
        }
        self._values = {category: series.value for category, series in self._series.items()}
        self._other = self._values[OTHER]
        self.missing = _Series(missing, "_total", labels)

    def plan(self, values: Sequence[Any], increments: Increments) -> None:
        """Count equal values once (keyed by type too: ``1``, ``1.0`` and ``True`` differ),
        then canonicalise each distinct value: a batch costs one pass in C, not one
        ``canonical_category`` call per row."""
        if isinstance(values, np.ndarray):
            values = values.tolist()
        try:
            distinct = Counter(zip(map(type, values), values))
        except TypeError:  # unhashable values (lists, objects): they are missing anyway
            distinct = Counter((type(v), v if _hashable(v) else None) for v in values)
        counts: dict[Any, int] = {}
        for (_, value), count in distinct.items():
            category = canonical_category(value)
            target = (
                self.missing.value if category is None else self._values.get(category, self._other)
            )
            counts[target] = counts.get(target, 0) + count
        increments += counts.items()

    def samples(self) -> Iterator[tuple[Family, Sample]]:
        for series in self._series.values():
            yield series.sample()
        yield self.missing.sample()


LiveColumn = NumericColumn | CategoryColumn


class Recorder:
    """All live series of one (model, baseline) pair in this process."""

    def __init__(self, model: str, baseline: Baseline | None, feature_names: Sequence[str]):
        self.model = model
        self.baseline = baseline
        self.identity = baseline.identity if baseline else NO_BASELINE
        self._common = {"model": model, "baseline": self.identity}
        self.features: dict[str, LiveColumn] = {}
        self.outputs: dict[str, LiveColumn] = {}
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
                families.REQUESTS,
                "_total",
                {**self._common, "outcome": outcome, "reason": reason},
            )
            for outcome, reasons in OUTCOMES.items()
            for reason in reasons
        }
        self._extra = _Series(families.EXTRA_COLUMNS, "_total", self._common)

    def _column(self, role: str, name: str, column: Column) -> LiveColumn:
        labels = {**self._common, families.COLUMN_LABEL[role]: name}
        if isinstance(column, Histogram):
            return NumericColumn(
                column.edges, families.VALUE_FAMILY[role], families.MISSING_FAMILY[role], labels
            )
        categories = [category for category, _ in column.counts if category != OTHER]
        return CategoryColumn(
            categories, families.CATEGORY_FAMILY[role], families.MISSING_FAMILY[role], labels
        )

    def skip(self, reason: str) -> None:
        self._requests["skipped", reason].value.inc(1)

    def record(self, frame: Frame, predictions: Mapping[str, Sequence[Any]] | str) -> str:
        """Count one request (and its predictions, if decoded); return the outcome's reason.

        ``predictions`` is what the response decoded to, or why it did not decode."""
        if not self.features:
            self.skip(Reason.NO_BASELINE)
            return Reason.NO_BASELINE
        matched = self._match(frame)
        if matched is None:
            self.skip(Reason.NO_FEATURES)
            return Reason.NO_FEATURES
        pairs, extra = matched
        increments: Increments = []
        for column, values in pairs:
            if values is None:  # the request lacks this feature: every row is missing it
                increments.append((column.missing.value, frame.rows))
            else:
                column.plan(values, increments)
        if isinstance(predictions, str):
            reason = predictions
        else:
            reason = Reason.NO_PREDICTIONS
            for name, column in self.outputs.items():
                if name in predictions:
                    column.plan(predictions[name], increments)
                    reason = Reason.OK
        if extra:
            increments.append((self._extra.value, extra))
        increments.append((self._requests["recorded", reason].value, 1))
        for value, amount in increments:
            value.inc(amount)
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

    @functools.cached_property
    def baseline_metrics(self) -> list[Metric]:
        """The baseline's families with this recorder's labels: constant, so built once."""
        if self.baseline is None:
            return []
        return fileformat.metrics(self.baseline, self._common)

    def touch(self) -> None:
        """Make every series exist in this process's mmap file, e.g. right after a fork.

        Reading one value is enough: on a pid change prometheus_client re-creates every value
        of the process in the new process's file."""
        self._extra.value.get()

    def live_samples(self) -> Iterator[tuple[Family, Sample]]:
        """Every live sample with its family, for single-process exposition."""
        for column in (*self.features.values(), *self.outputs.values()):
            yield from column.samples()
        for series in (*self._requests.values(), self._extra):
            yield series.sample()


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


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
