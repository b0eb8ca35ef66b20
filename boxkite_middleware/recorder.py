"""Count decoded requests with the baseline's bins, into the process's `store.Store`.

Every series is a slot of the store, created once per process; `exposition` reads the store,
never the recorder. A request is
tallied first (numpy for batches, ``bisect`` for a few rows) into `Increments`, then applied
at once: a request is counted whole or, if anything fails while tallying, not at all.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from . import families, fileformat, multiprocess
from .baseline import TOP_CLASS, Baseline, Column, Histogram, class_order
from .binning import OTHER, BucketTable, canonical_category, float_matrix, one_float
from .families import Family
from .payload import Frame, Reason
from .store import COUNTER, HISTOGRAM, Increments, Series, Store, store

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
        Reason.ERROR_STATUS,  # a 5xx answer, with record_server_errors=True
        Reason.PREDICTIONS_MISSING,
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
        Reason.SAMPLED_OUT,
    ),
}


class NumericColumn:
    """Live histogram of one numeric feature or output, with the baseline's edges."""

    def __init__(
        self,
        histogram: Histogram,
        family: Family,
        missing: Family,
        labels: dict[str, str],
        store: Store,
        position: int,
    ) -> None:
        self.edge_list = [float(edge) for edge in histogram.edges]
        self.position = position
        """Its column in the recorder's `NumericColumns` table."""
        self._buckets = [
            Series(family, family.name + "_bucket", {**labels, "le": floatToGoString(edge)})
            for edge in (*self.edge_list, math.inf)
        ]
        self.has_sum = histogram.has_sum
        total = [Series(family, family.name + "_sum", labels)] if self.has_sum else []
        self.first = store.allocate(self._buckets + total)
        self.sum_slot = self.first + len(self._buckets)  # used only if has_sum
        self.missing = Series(missing, missing.name + "_total", labels)
        self.missing_slot = store.allocate([self.missing])


class CategoryColumn:
    """Live counts of one categorical feature or output; unknown values go to ``__other__``."""

    def __init__(
        self,
        categories: Iterable[str],
        family: Family,
        missing: Family,
        labels: dict[str, str],
        store: Store,
    ) -> None:
        self._series = [
            Series(family, family.name + "_total", {**labels, "category": category})
            for category in (*categories, OTHER)
        ]
        self._first = store.allocate(self._series)
        self._slots = {
            series.labels["category"]: self._first + i for i, series in enumerate(self._series)
        }
        self._other = self._slots[OTHER]
        self.missing = Series(missing, missing.name + "_total", labels)
        self.missing_slot = store.allocate([self.missing])

    def plan(self, values: Sequence[Any], increments: Increments) -> None:
        """A few values are canonicalised one by one. A batch first counts equal values (keyed
        by type too: ``1``, ``1.0`` and ``True`` differ) in one pass in C, then canonicalises
        each distinct value once, not once per row."""
        if len(values) <= SMALL_BATCH:
            for value in values:
                increments.add(COUNTER, self._slot(canonical_category(value)), 1)
            return
        if isinstance(values, np.ndarray):
            values = values.tolist()
        try:
            distinct = Counter(zip(map(type, values), values))
        except TypeError:  # unhashable values (lists, objects): they are missing anyway
            distinct = Counter((type(v), v if _hashable(v) else None) for v in values)
        for (_, value), count in distinct.items():
            increments.add(COUNTER, self._slot(canonical_category(value)), count)

    def _slot(self, category: str | None) -> int:
        if category is None:
            return self.missing_slot
        return self._slots.get(category, self._other)


LiveColumn = NumericColumn | CategoryColumn


class NumericColumns:
    """A recorder's numeric columns, tallied together: a request's values are binned as one
    columns × rows matrix through one `BucketTable`."""

    def __init__(self, columns: Sequence[NumericColumn]) -> None:
        self._table = BucketTable(
            [column.edge_list for column in columns], [column.first for column in columns]
        )
        self._every = [column.position for column in columns]

    def plan(
        self,
        pairs: Sequence[tuple[NumericColumn, Sequence[Any]]],
        rows: int,
        increments: Increments,
    ) -> None:
        """Add the increments of a request's numeric columns, each holding ``rows`` values.

        Up to `SMALL_BATCH` rows, one ``bisect`` per value: numpy's call overhead would
        dominate. Beyond, each step is one numpy call over the columns × rows matrix. Both
        paths count alike (a property test says so)."""
        if rows <= SMALL_BATCH:
            _plan_few(pairs, increments)
            return
        numbers = float_matrix([values for _, values in pairs], rows)
        positions = [column.position for column, _ in pairs]
        bins = self._table.lookup(numbers, None if positions == self._every else positions)
        with np.errstate(over="ignore", invalid="ignore"):
            sums = numbers.sum(axis=1).tolist()
            finite = all(map(math.isfinite, sums))  # then no value is NaN or ±inf either
            if not finite:  # sum the finite values only; NaN values are missing
                sums = np.where(np.isfinite(numbers), numbers, 0.0).sum(axis=1).tolist()
        if finite:
            increments.units[HISTOGRAM].append(bins.ravel())
        else:
            nan = np.isnan(numbers)
            increments.units[HISTOGRAM].append(bins[~nan])
            for (column, _), missing in zip(pairs, nan.sum(axis=1).tolist()):
                if missing:
                    increments.add(COUNTER, column.missing_slot, missing)
        for (column, _), total in zip(pairs, sums):
            if column.has_sum and total and math.isfinite(total):
                increments.add(HISTOGRAM, column.sum_slot, total)


def _plan_few(pairs: Sequence[tuple[NumericColumn, Sequence[Any]]], increments: Increments):
    """`NumericColumns.plan` for a few rows, value by value, by the rules of `as_float`."""
    slots, amounts = increments.slots[HISTOGRAM], increments.amounts[HISTOGRAM]
    for column, values in pairs:
        total = 0.0
        for value in values:
            number = value if type(value) is float else one_float(value)
            if number != number:
                increments.add(COUNTER, column.missing_slot, 1)
                continue
            slots.append(column.first + bisect_left(column.edge_list, number))
            amounts.append(1.0)
            if -math.inf < number < math.inf:
                total += number
        if column.has_sum and total and math.isfinite(total):
            slots.append(column.sum_slot)
            amounts.append(total)


RESERVED_LABELS = frozenset(
    {"model", "baseline", "feature", "output", "category", "le", "outcome", "reason"}
    | {"created", "version", "features", "outputs"}
)
"""Labels of our own families: constant labels may not take these names."""
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Constant labels as given, if Prometheus accepts their names and ours do not clash."""
    for name, value in labels.items():
        if not LABEL_NAME.fullmatch(name) or name.startswith("__"):
            raise ValueError(f"{name!r} is not a Prometheus label name")
        if name in RESERVED_LABELS:
            raise ValueError(f"the label {name!r} is boxkite-middleware's own; choose another")
        if not isinstance(value, str):
            raise ValueError(f"the value of label {name!r} must be a string, not {value!r}")
    return dict(labels)


class Recorder:
    """All live series of one (model, baseline, constant labels) in this process."""

    def __init__(
        self,
        model: str,
        baseline: Baseline | None,
        feature_names: Sequence[str],
        store: Store,
        *,
        expose_baseline: bool = True,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.model = model
        self.baseline = baseline
        self.expose_baseline = expose_baseline
        self.identity = baseline.identity if baseline else NO_BASELINE
        self._store = store
        self.labels = check_labels(labels or {})
        self._common = {"model": model, "baseline": self.identity, **self.labels}
        self.features: dict[str, LiveColumn] = {}
        self.outputs: dict[str, LiveColumn] = {}
        self._said_missing: set[int] = set()
        columns = (
            baseline.columns()
            if baseline
            else (("feature", name, _UNBINNED) for name in feature_names)
        )
        numeric: list[NumericColumn] = []
        for role, name, column in columns:
            target = self.features if role == "feature" else self.outputs
            live = target[name] = self._column(role, name, column, position=len(numeric))
            if isinstance(live, NumericColumn):
                numeric.append(live)
        self.numeric = NumericColumns(numeric)
        self.class_groups = class_groups(self.outputs)
        self._outcomes = [
            Series(
                families.REQUESTS,
                families.REQUESTS.name + "_total",
                {**self._common, "outcome": outcome, "reason": reason},
            )
            for outcome, reasons in OUTCOMES.items()
            for reason in reasons
        ]
        self.first_outcome = store.allocate(self._outcomes)
        self._outcome_slots = {
            (series.labels["outcome"], series.labels["reason"]): self.first_outcome + i
            for i, series in enumerate(self._outcomes)
        }
        self._extra = Series(
            families.EXTRA_COLUMNS, families.EXTRA_COLUMNS.name + "_total", self._common
        )
        self._extra_slot = store.allocate([self._extra])

    def _column(self, role: str, name: str, column: Column, position: int) -> LiveColumn:
        labels = {**self._common, families.COLUMN_LABEL[role]: name}
        value, missing = families.VALUE_FAMILY[role], families.MISSING_FAMILY[role]
        if isinstance(column, Histogram):
            return NumericColumn(column, value, missing, labels, self._store, position)
        categories = [category for category, _ in column.counts if category != OTHER]
        return CategoryColumn(
            categories, families.CATEGORY_FAMILY[role], missing, labels, self._store
        )

    def skip(self, reason: str) -> None:
        self._store.add(COUNTER, self._outcome_slots["skipped", reason], 1)

    def record(self, frame: Frame, predictions: Mapping[str, Sequence[Any]] | str) -> str:
        """Count one request (and its predictions, if decoded); return the outcome's reason.

        ``predictions`` is what the response decoded to, or why it did not decode."""
        if not self.features:
            self.skip(Reason.NO_BASELINE)
            return Reason.NO_BASELINE
        increments = Increments()
        planned = self._plan_features(frame, increments)
        if planned is None:
            self.skip(Reason.NO_FEATURES)
            return Reason.NO_FEATURES
        numeric, extra = planned  # numeric outputs join these: one matrix for the request
        return self._finish(increments, predictions, frame.rows, extra, numeric)

    def record_slices(
        self, frames: Iterable[Frame | str], predictions: Mapping[str, Sequence[Any]] | str
    ) -> str:
        """Count one request read in slices of rows (`payload.decode_large_request`); a slice
        that cannot be read ends it uncounted, with its reason. Between slices the planned
        increments are compacted to one amount per series, so memory stays per slice."""
        if not self.features:
            self.skip(Reason.NO_BASELINE)
            return Reason.NO_BASELINE
        increments = Increments()
        rows = extra = 0
        for frame in frames:
            if isinstance(frame, str):
                self.skip(frame)
                return frame
            planned = self._plan_features(frame, increments)
            if planned is None:
                self.skip(Reason.NO_FEATURES)
                return Reason.NO_FEATURES
            numeric, extra = planned
            if numeric:
                self.numeric.plan(numeric, frame.rows, increments)
            increments.compact()
            rows += frame.rows
        return self._finish(increments, predictions, rows, extra, [])

    def _plan_features(self, frame: Frame, increments: Increments) -> tuple[list, int] | None:
        """Plan a frame's categorical and missing features; return its numeric ones (to be
        tallied as one matrix) and the count of extra columns; None if no feature matched."""
        matched = self._match(frame)
        if matched is None:
            return None
        pairs, extra = matched
        numeric = []
        for column, values in pairs:
            if values is None:  # the request lacks this feature: every row is missing it
                increments.add(COUNTER, column.missing_slot, frame.rows)
            elif isinstance(column, NumericColumn):
                numeric.append((column, values))
            else:
                column.plan(values, increments)
        return numeric, extra

    def _finish(
        self,
        increments: Increments,
        predictions: Mapping[str, Sequence[Any]] | str,
        rows: int,
        extra: int,
        numeric: list,
    ) -> str:
        """Plan the predictions (numeric ones with a value per row join ``numeric``), the
        extra columns and the outcome, then apply the whole request at once."""
        matched: dict[LiveColumn, int] = {}  # output -> how many values it was given
        if isinstance(predictions, str):
            reason = predictions
        else:
            if self.class_groups:
                predictions = split_classes(predictions, self.class_groups)
            reason = Reason.NO_PREDICTIONS
            for name, column in self.outputs.items():
                if name in predictions:
                    values = predictions[name]
                    if isinstance(column, NumericColumn) and len(values) == rows:
                        numeric.append((column, values))
                    else:
                        self.plan(column, values, increments)
                    matched[column] = len(values)
                    reason = Reason.OK
        if numeric:
            self.numeric.plan(numeric, rows, increments)
        if matched and self._all_missing(matched, increments):
            reason = Reason.PREDICTIONS_MISSING
        if extra:
            increments.add(COUNTER, self._extra_slot, extra)
        increments.add(COUNTER, self._outcome_slots["recorded", reason], 1)
        self._store.apply(increments)
        return reason

    def _all_missing(self, matched: dict[LiveColumn, int], increments: Increments) -> bool:
        """Whether every value of every output read was missing (null, NaN, not a number);
        said once per output in a process, for it usually means that the response holds
        something else under that name than the baseline's output (see ``outputs=``)."""
        missing = dict.fromkeys((column.missing_slot for column in matched), 0.0)
        for slot, amount in zip(increments.slots[COUNTER], increments.amounts[COUNTER]):
            if slot in missing:
                missing[slot] += amount
        every = True
        for column, count in matched.items():
            if count and missing[column.missing_slot] >= count:
                if column.missing_slot not in self._said_missing:
                    self._said_missing.add(column.missing_slot)
                    name = next(n for n, c in self.outputs.items() if c is column)
                    logging.getLogger("boxkite_middleware").warning(
                        "boxkite-middleware: model %r: output %r was missing in every value of "
                        "a response; does the response hold the baseline's output there "
                        "(see outputs=)?",
                        self.model,
                        name,
                    )
            else:
                every = False
        return every

    def plan(self, column: LiveColumn, values: Sequence[Any], increments: Increments) -> None:
        """Add the increments of one column's ``values``, on their own."""
        if isinstance(column, NumericColumn):
            self.numeric.plan([(column, values)], len(values), increments)
        else:
            column.plan(values, increments)

    def _match(self, frame: Frame) -> tuple[list, int] | None:
        """Baseline features paired with request columns: by name, or by position if unnamed."""
        if frame.names is None:
            if len(frame.columns) != len(self.features):
                return None
            return list(zip(self.features.values(), frame.columns)), 0
        # Reversed, so that the first of duplicate names wins.
        by_name = dict(zip(reversed(frame.names), reversed(frame.columns)))
        pairs = [(column, by_name.get(name)) for name, column in self.features.items()]
        used = sum(values is not None for _, values in pairs)
        if not used:
            return None
        return pairs, len(frame.names) - used

    @functools.cached_property
    def baseline_metrics(self) -> list[Metric]:
        """The baseline's families with this recorder's labels: constant, so built once."""
        if self.baseline is None or not self.expose_baseline:
            return []
        return fileformat.metrics(self.baseline, self._common)

    def publish_baseline(self, path: str) -> None:
        """Put the baseline where any process scraping the directory finds it."""
        if self.baseline is not None and self.expose_baseline:
            multiprocess.write_baseline(
                path, {"labels": self._common, "file": fileformat.render(self.baseline)}
            )


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


_recorders: dict[tuple, Recorder] = {}
_recorders_lock = threading.Lock()


def class_groups(outputs: Iterable[str]) -> dict[str, list[str]]:
    """The outputs a baseline expanded from a probability matrix: ``{"proba": [classes]}``
    for outputs ``proba_{class}`` next to ``proba_max``, classes in column order."""
    names = list(outputs)
    groups = {}
    for top in names:
        prefix = top.removesuffix("_" + TOP_CLASS)
        if prefix != top:
            labels = [
                n[len(prefix) + 1 :] for n in names if n.startswith(prefix + "_") and n != top
            ]
            if labels:
                groups[prefix] = class_order(labels)
    return groups


def split_classes(
    predictions: Mapping[str, Sequence[Any]], groups: Mapping[str, list[str]]
) -> Mapping[str, Sequence[Any]]:
    """A probability matrix found under a group's name (``proba``) becomes its outputs:
    column i is class i in `class_order`, plus the row maximum. A matrix of another width, or
    not all numbers, is left as it is (the outputs then count as not found)."""
    if not any(name in predictions for name in groups):
        return predictions
    split: dict[str, Any] = dict(predictions)
    for name, labels in groups.items():
        if name not in split:
            continue
        try:
            matrix = np.asarray(split[name], dtype=np.float64)
        except (TypeError, ValueError):
            continue
        if matrix.size == 0:  # no rows
            matrix = matrix.reshape(0, len(labels))
        if matrix.ndim != 2 or matrix.shape[1] != len(labels):
            continue
        del split[name]
        for i, label in enumerate(labels):
            split[f"{name}_{label}"] = matrix[:, i]
        split[f"{name}_{TOP_CLASS}"] = (
            np.fmax.reduce(matrix, axis=1) if len(matrix) else matrix[:, 0]
        )
    return split


def recorder_for(
    model: str,
    baseline: Baseline | None,
    feature_names: Sequence[str] = (),
    *,
    expose_baseline: bool = True,
    labels: Mapping[str, str] | None = None,
) -> Recorder:
    """The process's one recorder for ``(model, baseline, labels)``: middleware built twice
    shares it. Two writers of one series would overwrite each other's entry and lose counts.
    """
    identity = baseline.identity if baseline else NO_BASELINE
    key = (model, identity, tuple(sorted((labels or {}).items())))
    with _recorders_lock:
        existing = _recorders.get(key)
        if existing is None:
            existing = _recorders[key] = Recorder(
                model,
                baseline,
                feature_names,
                store(),
                expose_baseline=expose_baseline,
                labels=labels,
            )
        elif baseline is None and list(existing.features) != list(feature_names):
            raise ValueError(
                f"model {model!r} already records features {list(existing.features)} without a "
                "baseline; give this middleware another model= name"
            )
        elif existing.expose_baseline != expose_baseline:
            raise ValueError(
                f"model {model!r} with this baseline is already recorded with "
                f"expose_baseline={existing.expose_baseline}; use one setting for both"
            )
    return existing


def recorders() -> list[Recorder]:
    with _recorders_lock:
        return list(_recorders.values())
