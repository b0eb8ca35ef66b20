"""`Baseline`: the shape of the training data, built once and saved as a Prometheus text file."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import binning
from .binning import OTHER

DEFAULT_MAX_BINS = 30
DEFAULT_MAX_CATEGORIES = 50


@dataclass(frozen=True)
class Histogram:
    """A numeric column: finite ``le`` edges and non-cumulative counts (the last is ``+Inf``)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    missing: int | None  # None: unknown (legacy boxkite files counted NaN into +Inf)
    # Sum of the finite values, for the histogram's _sum (only kept when it may be exported).
    total: float = field(default=0.0, compare=False)
    # Standard deviation of the finite values; None in files written before version 0.1.0.
    stddev: float | None = field(default=None, compare=False)

    kind = "numeric"

    @property
    def has_sum(self) -> bool:
        """OpenMetrics forbids ``_sum`` on histograms with negative buckets."""
        return self.edges[0] >= 0

    @property
    def scale(self) -> float:
        """The unit of the Wasserstein distance: the training values' standard deviation, or
        for older files one estimated from the buckets (each value at its bucket's middle,
        the outer buckets' at their one edge)."""
        if self.stddev is not None:
            return self.stddev
        edges = np.array(self.edges)
        counts = np.array(self.counts, dtype=np.float64)
        if counts.sum() == 0:
            return 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            middles = np.concatenate(([edges[0]], edges[1:] / 2 + edges[:-1] / 2, [edges[-1]]))
            mean = np.average(middles, weights=counts)
            return float(np.sqrt(np.average((middles - mean) ** 2, weights=counts)))


@dataclass(frozen=True)
class Categories:
    """A categorical column: counts per canonical category, ``__other__`` always included."""

    counts: tuple[tuple[str, int], ...]
    missing: int | None

    kind = "categorical"


Column = Histogram | Categories


class BaselineError(ValueError):
    """A baseline file that cannot be read; the message names the file and line."""


class Baseline:
    """Per-column histograms of the training features and of the model's output.

    Live traffic is counted into the same buckets and categories, so PromQL can compare the
    two distributions directly.
    """

    def __init__(
        self,
        features: Mapping[str, Column],
        inference: Mapping[str, Column] | None = None,
        *,
        created: float | None = None,
        version: str | None = None,
    ) -> None:
        if not features:
            raise ValueError("a baseline needs at least one feature")
        self.features: dict[str, Column] = dict(features)
        self.inference: dict[str, Column] = dict(inference or {})
        self.created = time.time() if created is None else created
        self.version = version or _library_version()
        self.identity = _identity(self)

    def __repr__(self) -> str:
        return (
            f"<Baseline {self.identity}: {len(self.features)} features, "
            f"{len(self.inference)} outputs>"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Baseline) and (
            (self.features, self.inference) == (other.features, other.inference)
        )

    def __hash__(self) -> int:
        return hash(self.identity)

    def columns(self) -> Iterable[tuple[str, str, Column]]:
        """``(role, name, column)`` for every feature, then every output."""
        for name, column in self.features.items():
            yield "feature", name, column
        for name, column in self.inference.items():
            yield "inference", name, column

    @classmethod
    def from_data(
        cls,
        features: Any,
        inference: Any = None,
        *,
        columns: Sequence[str] | None = None,
        categorical: Iterable[str] = (),
        continuous: Iterable[str] = (),
        max_bins: int = DEFAULT_MAX_BINS,
        max_categories: int = DEFAULT_MAX_CATEGORIES,
        max_samples: int | None = None,
        seed: int = 0,
        bins: Mapping[str, Sequence[float]] | None = None,
        classes: Sequence[Any] | None = None,
    ) -> Baseline:
        """Build a baseline from training features and (optionally) the model's predictions.

        ``features``: a mapping ``name -> 1-D values``, a pandas DataFrame, an iterable of
        ``(name, values)`` pairs, or a 2-D numpy array with ``columns=``. ``inference``: a 1-D
        array (regression or class labels), a 2-D array (one output per column) or a mapping.
        Every row is counted unless ``max_samples`` is given. ``bins`` gives fixed edges to
        the columns whose names match its keys (exact names or ``fnmatch`` patterns such as
        ``"proba_*"``), e.g. tenths for probabilities however small the holdout.

        A 2-D value in an ``inference`` mapping is a classifier's probabilities: ``{"proba":
        model.predict_proba(X)}`` becomes one numeric output per class, ``proba_{class}``
        (``classes=model.classes_``; by default the column numbers), and ``proba_max``, the
        top class's probability. The middleware splits a response's probability matrix the
        same way (see ``outputs=``).
        """
        builder = _ColumnBuilder(
            set(categorical), set(continuous), max_bins, max_categories, max_samples, seed
        )
        builder.bins = {
            pattern: _fixed_edges(pattern, edges) for pattern, edges in (bins or {}).items()
        }
        feature_columns = builder.build_all(_named_columns(features, columns), "feature")
        output_columns = {}
        if inference is not None:
            output_columns = builder.build_all(_output_columns(inference, classes), "output")
        return cls(feature_columns, output_columns)

    def save(self, path: str | Path) -> None:
        """Write the baseline families in Prometheus text format (see `load`)."""
        from .fileformat import render

        Path(path).write_text(render(self), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        """Read a file written by `save`, or one written by the original boxkite library."""
        from .fileformat import parse

        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise BaselineError(f"{path}: cannot read baseline: {error}") from error
        return parse(text, str(path))


def _library_version() -> str:
    from . import __version__

    return __version__


def _identity(baseline: Baseline) -> str:
    """First 12 hex digits of a SHA-256 of the content that decides bins and counts."""
    content = [
        [role, name, column.kind, _column_content(column), column.missing]
        for role, name, column in baseline.columns()
    ]
    digest = hashlib.sha256(json.dumps(content, separators=(",", ":")).encode())
    return digest.hexdigest()[:12]


def _column_content(column: Column) -> list[Any]:
    if isinstance(column, Histogram):
        return [[float(edge).hex() for edge in column.edges], list(column.counts)]
    return [list(pair) for pair in column.counts]


def _named_columns(features: Any, columns: Sequence[str] | None) -> list[tuple[str, Any]]:
    """The accepted input shapes as ``(name, values)`` pairs, in order."""
    if isinstance(features, np.ndarray):
        if features.ndim != 2:
            raise ValueError(f"a feature array must be 2-D, not {features.ndim}-D")
        if columns is None or len(columns) != features.shape[1]:
            raise ValueError("a 2-D feature array needs columns=[...] naming each column")
        return [(str(name), features[:, i]) for i, name in enumerate(columns)]
    if _is_dataframe(features):
        return [(str(name), series.to_numpy()) for name, series in features.items()]
    if isinstance(features, Mapping):
        return [(str(name), values) for name, values in features.items()]
    if isinstance(features, (str, bytes)) or not isinstance(features, Iterable):
        raise TypeError(f"cannot read features from {type(features).__name__}")
    pairs = list(features)
    if not all(isinstance(pair, (tuple, list)) and len(pair) == 2 for pair in pairs):
        raise TypeError("features must be a mapping, a DataFrame, (name, values) pairs or 2-D")
    return [(str(name), values) for name, values in pairs]


def _output_columns(inference: Any, classes: Sequence[Any] | None) -> list[tuple[str, Any]]:
    if isinstance(inference, Mapping):
        return [
            pair
            for name, values in inference.items()
            for pair in _class_columns(str(name), values, classes)
        ]
    if _is_dataframe(inference):
        return _named_columns(inference, None)
    array = np.asarray(inference, dtype=object if _has_text(inference) else None)
    if array.ndim == 1:
        return [("0", array)]
    if array.ndim == 2:
        return [(str(i), array[:, i]) for i in range(array.shape[1])]
    raise ValueError(f"inference must be 1-D or 2-D, not {array.ndim}-D")


def _class_columns(name: str, values: Any, classes: Sequence[Any] | None) -> list[tuple[str, Any]]:
    """One output as is, or a matrix of class probabilities as ``{name}_{class}`` per column
    plus ``{name}_max``, the top class's probability (the model's confidence)."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        matrix = values
    elif isinstance(values, (list, tuple)) and values and isinstance(values[0], (list, tuple)):
        matrix = np.asarray(values, dtype=np.float64)
    else:
        return [(name, values)]
    labels = [str(label) for label in (range(matrix.shape[1]) if classes is None else classes)]
    if len(labels) != matrix.shape[1]:
        raise ValueError(f"{name}: {matrix.shape[1]} columns, but {len(labels)} classes given")
    if labels != class_order(labels):
        raise ValueError(
            f"{name}: classes must be in sorted order, as scikit-learn's classes_ are "
            f"(the columns of a response are matched to them in that order): {labels}"
        )
    columns = [(f"{name}_{label}", matrix[:, i]) for i, label in enumerate(labels)]
    return [*columns, (f"{name}_{TOP_CLASS}", matrix.max(axis=1))]


TOP_CLASS = "max"
"""``{output}_max`` is the top class's probability of an expanded probability matrix."""


def class_order(labels: Iterable[str]) -> list[str]:
    """Class labels in the order of a classifier's probability columns: numbers by value,
    otherwise text by code point (``numpy.unique``, so scikit-learn's ``classes_``)."""
    labels = list(labels)
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


def _is_dataframe(value: Any) -> bool:
    return hasattr(value, "columns") and hasattr(value, "dtypes") and hasattr(value, "items")


def _has_text(values: Any) -> bool:
    if isinstance(values, np.ndarray):
        return values.dtype.kind in "OUSb"
    return any(isinstance(v, (str, bool)) for v in np.ravel(np.asarray(values, dtype=object)))


def _fixed_edges(pattern: str, edges: Sequence[float]) -> np.ndarray:
    fixed = np.asarray(edges, dtype=np.float64)
    if fixed.ndim != 1 or fixed.size == 0 or not np.all(np.isfinite(fixed)):
        raise ValueError(f"bins[{pattern!r}]: give one or more finite edges")
    if np.any(np.diff(fixed) <= 0):
        raise ValueError(f"bins[{pattern!r}]: edges must increase")
    return fixed


class _ColumnBuilder:
    """Turns raw columns into `Histogram`/`Categories`, with the options of `from_data`."""

    def __init__(self, categorical, continuous, max_bins, max_categories, max_samples, seed):
        both = categorical & continuous
        if both:
            raise ValueError(f"columns both categorical and continuous: {sorted(both)}")
        if max_categories < 1:
            raise ValueError("max_categories must be at least 1")
        self.categorical = categorical
        self.continuous = continuous
        self.max_bins = max_bins
        self.max_categories = max_categories
        self.max_samples = max_samples
        self.seed = seed
        self.bins: dict[str, np.ndarray] = {}

    def build_all(self, named: list[tuple[str, Any]], role: str) -> dict[str, Column]:
        if not named:
            raise ValueError(f"no {role} columns given")
        names = [name for name, _ in named]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate {role} names: {duplicates}")
        arrays = [(name, _one_dimensional(name, values)) for name, values in named]
        lengths = {name: len(values) for name, values in arrays}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{role} columns have different lengths: {lengths}")
        rows = _sample_rows(next(iter(lengths.values())), self.max_samples, self.seed)
        if rows is not None:
            arrays = [(name, values[rows]) for name, values in arrays]
        return {name: self.build(name, values) for name, values in arrays}

    def build(self, name: str, values: np.ndarray) -> Column:
        if values.size == 0:
            raise ValueError(f"column {name!r} is empty")
        fixed = next((e for p, e in self.bins.items() if fnmatch.fnmatchcase(name, p)), None)
        if fixed is None and (
            name in self.categorical or (name not in self.continuous and _is_text(values))
        ):
            return self._categories(name, values)
        numbers = binning.as_float(values)
        nan = np.isnan(numbers)
        present = numbers[~nan] if nan.any() else numbers
        if present.size == 0:
            raise ValueError(f"column {name!r} has no numeric values (all missing)")
        missing = numbers.size - present.size
        if fixed is not None:
            ordered = np.sort(present)
            counts = binning.sorted_bucket_counts(ordered, fixed)
            finite = ordered[np.isfinite(ordered)]
            return _histogram(fixed, counts, missing, finite)
        if name not in self.continuous and binning.is_discrete(present, self.max_categories):
            distinct, counts = np.unique(present, return_counts=True)
            categories = map(binning.canonical_category, distinct)
            pairs = {category: int(c) for category, c in zip(categories, counts) if category}
            return self._fold(pairs, missing)
        ordered = np.sort(present)
        finite = ordered[
            np.searchsorted(ordered, -np.inf, "right") : np.searchsorted(ordered, np.inf, "left")
        ]
        if finite.size == 0:
            raise ValueError(f"column {name!r} has no finite values to place bins by")
        edges = binning.continuous_edges(finite, self.max_bins)
        counts = binning.sorted_bucket_counts(ordered, edges)
        return _histogram(edges, counts, missing, finite)

    def _categories(self, name: str, values: np.ndarray) -> Categories:
        counts, missing = binning.category_counts(values.tolist())
        if not counts:
            raise ValueError(f"column {name!r} has no values (all missing)")
        return self._fold(counts, missing)

    def _fold(self, counts: dict[str, int], missing: int) -> Categories:
        """Keep the ``max_categories`` most frequent categories; the rest go to ``__other__``."""
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        kept = [pair for pair in ranked[: self.max_categories] if pair[0] != OTHER]
        folded = sum(count for _, count in ranked) - sum(count for _, count in kept)
        return Categories((*kept, (OTHER, folded)), missing)


def _one_dimensional(name: str, values: Any) -> np.ndarray:
    array = values if isinstance(values, np.ndarray) else None
    if array is None:
        values = list(values)
        kind = object if any(isinstance(v, (str, bool)) for v in values) else None
        try:
            array = np.asarray(values, dtype=kind)
        except (TypeError, ValueError):
            array = np.empty(len(values), dtype=object)
            array[:] = values
    if array.ndim != 1:
        raise ValueError(f"column {name!r} must be 1-D, not {array.ndim}-D")
    return array


def _is_text(values: np.ndarray) -> bool:
    """Strings and booleans are categorical whatever they look like."""
    if values.dtype.kind in "USb":
        return True
    if values.dtype.kind != "O":
        return False
    return any(isinstance(v, (str, bool, np.bool_)) for v in values.tolist())


def _sample_rows(length: int, max_samples: int | None, seed: int) -> np.ndarray | None:
    """Sorted row indices of a reproducible sample, or None to count every row."""
    if max_samples is None or length <= max_samples:
        return None
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(length, size=max_samples, replace=False, shuffle=False))


def _histogram(edges: np.ndarray, counts: np.ndarray, missing: int, finite: np.ndarray):
    """A `Histogram` with the sum and standard deviation of its finite values."""
    with np.errstate(over="ignore", invalid="ignore"):
        total, stddev = float(np.sum(finite)), float(np.std(finite)) if finite.size else 0.0
    return Histogram(
        tuple(edges.tolist()),
        tuple(counts.tolist()),
        missing,
        total,
        stddev if math.isfinite(stddev) else None,
    )
