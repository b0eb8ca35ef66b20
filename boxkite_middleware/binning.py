"""Pure numpy binning shared by the training baseline and the live recorder.

Both sides call the same functions, so a value replayed in production lands in exactly the
bucket or category it was counted in at training time.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

OTHER = "__other__"
"""Category that unknown values and categories beyond ``max_categories`` fold into."""

MAX_CATEGORY_LENGTH = 64
"""Longer category strings are cut, so a client cannot make label values of any size."""

MAX_DISCRETE_VALUES = 20
"""A column of integers with at most this many distinct values is categorical."""

EXACT_INTEGERS = 2**53
"""Integers beyond this are written as floats (``1e+64``), the same whether sent as int or float."""


def as_float(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Numbers (and numeric strings) as float64; anything else becomes NaN, i.e. *missing*.

    Integers too large for a float become ±inf rather than missing: they are numbers.
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "fiu":
            return values.astype(np.float64, copy=False).ravel()
        values = values.tolist()
    try:  # numpy converts str, bool and None with Python's own float() rules, in C
        array = np.asarray(values, dtype=np.float64)
        if array.ndim == 1:
            return array
    except (TypeError, ValueError, OverflowError):
        pass  # a non-number somewhere: one value at a time
    return np.fromiter(map(one_float, values), dtype=np.float64, count=len(values))


def one_float(value: Any) -> float:
    """`as_float` of one value (the recorder's path for a few rows): exactly the same rules."""
    if type(value) is float:
        return value
    if isinstance(value, (list, tuple, dict)) or value is None:
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
    except (TypeError, ValueError):
        return math.nan


def canonical_category(value: Any) -> str | None:
    """The category string of a value, or None when the value is missing.

    Integral numbers are written as integers (``1``, ``1.0`` and ``1e0`` are all ``"1"``), other
    floats by ``repr``, booleans as ``"true"``/``"false"``, strings verbatim (cut to
    ``MAX_CATEGORY_LENGTH``). Empty strings, None, NaN and containers are missing.
    """
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, str):
        return value[:MAX_CATEGORY_LENGTH] or None
    if isinstance(value, (int, np.integer)):
        value = one_float(value) if abs(int(value)) >= EXACT_INTEGERS else int(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isnan(number):
            return None
        if number.is_integer() and abs(number) < EXACT_INTEGERS:
            return str(int(number))
        return repr(number)
    return None


def is_discrete(values: np.ndarray, max_categories: int) -> bool:
    """A numeric column (no NaN) is categorical iff all values are integers, few distinct ones.

    The rule depends neither on the number of rows nor on a sample: a column of real
    measurements stays continuous however much data there is.
    """
    limit = min(max_categories, MAX_DISCRETE_VALUES)
    if values.size == 0:
        return False
    low, high = values.min(), values.max()
    if not (np.isfinite(low) and np.isfinite(high)) or high - low >= 2**20:
        return False  # infinite, or too far apart for at most 20 distinct integers
    if not np.all(values == np.floor(values)):
        return False
    present = np.bincount((values - low).astype(np.int64))
    return int(np.count_nonzero(present)) <= limit


def continuous_edges(ordered: np.ndarray, max_bins: int) -> np.ndarray:
    """Finite bucket edges (``le`` values) for sorted finite training values.

    Equal-mass bins: an edge after every ``1/max_bins`` quantile, so the bins are finest where
    the values are. A drift test on bucket counts can only see a change at an edge, and equal
    widths (Freedman–Diaconis, before) put most of a skewed column into a few bins: on the
    Wine Quality data, a 0.1 SD shift of alcohol was caught in 46 % of 1,000-row windows with
    those, 96 % with these, 98 % by K-S on the raw values (BENCHMARKS.md). Tied values share
    an edge, so data on a coarse grid gets fewer bins. Every edge lies in the middle of the
    gap between two distinct training values, far enough from both that a float32 round trip
    of a value does not change its bucket; one outlier moves one edge, not all of them.

    Two more edges lie just outside the training range, half a resolution step below the
    minimum and above the maximum: "below the training range" and "above it" are buckets of
    their own, empty in the baseline, so a value the model never saw (a unit error, a new
    sensor) shows as such instead of joining the outermost training bin.
    """
    if max_bins < 2:
        raise ValueError(f"max_bins must be at least 2, not {max_bins}")
    distinct = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
    if distinct.size < 2:
        only = float(distinct[0])
        half = max(abs(only), 1.0) * 2.0**-10
        return np.array([only - half, only + half])
    n = ordered.size
    # The last value of each quantile bin; its edge goes in the gap just above it.
    quantiles = ordered[(np.arange(1, max_bins) * n + max_bins - 1) // max_bins - 1]
    # The typical gap between neighbouring distinct values, from at most ~10,000 evenly spaced
    # pairs: how far outside the training range its two edges go.
    pairs = np.arange(0, distinct.size - 1, max(1, distinct.size // 10_000))
    with np.errstate(over="ignore"):
        resolution = float(np.median(distinct[pairs + 1] - distinct[pairs]))
    inside = _between_values(quantiles, distinct)
    low, high = float(distinct[0]), float(distinct[-1])
    return np.concatenate((_outside(low, -1, resolution), inside, _outside(high, 1, resolution)))


def _outside(value: float, direction: int, resolution: float) -> np.ndarray:
    """An edge just past ``value`` (the training minimum or maximum) in ``direction``, about
    half a resolution step away and at least two float32 ulps; none where that overflows.

    Below a minimum of 0 or more, never below 0 (and none below a minimum of 0): a histogram
    whose first edge is negative cannot export ``_sum``, and non-negative data would lose it
    for a bucket it can rarely need."""
    with np.errstate(over="ignore"):
        ulp32 = abs(float(np.spacing(np.float32(value))))
        step = max(resolution if math.isfinite(resolution) else 0.0, 8 * ulp32)
        far = value + direction * step
    if direction < 0 and value >= 0:
        far = max(far, 0.0)
    if not (math.isfinite(step) and math.isfinite(far)) or abs(far - value) < 4 * ulp32:
        return np.empty(0)
    below, above = (far, value) if direction < 0 else (value, far)
    return _shortest_inside(np.array([below]), np.array([above]))


def _between_values(cuts: np.ndarray, distinct: np.ndarray) -> np.ndarray:
    """Move each cut to the middle of the gap of distinct values just above it (the gap it
    falls in); drop duplicates.

    A gap too narrow for a float32-safe edge gives no edge; if no cut finds a usable gap, the
    usable gap nearest the median is taken, so there are always at least two buckets.
    """
    gaps = np.clip(np.searchsorted(distinct, cuts, side="right") - 1, 0, distinct.size - 2)
    gaps = np.unique(gaps)
    chosen = gaps[_usable(distinct, gaps)]
    if chosen.size == 0:
        every = np.arange(distinct.size - 1)
        usable = every[_usable(distinct, every)]
        if usable.size == 0:
            raise ValueError("values are too close together to put bucket edges between them")
        chosen = usable[[np.argmin(np.abs(usable - every.size // 2))]]
    return _shortest_inside(distinct[chosen], distinct[chosen + 1])


def _shortest_inside(below: np.ndarray, above: np.ndarray) -> np.ndarray:
    """The number with the fewest decimals near the middle of each gap, so that ``le`` labels
    read ``8.65`` rather than ``8.649999999999999``; still float32-safe on both sides."""
    middles = below + (above - below) / 2
    margin = (above - below) / 4
    edges = middles.copy()
    pending = np.ones(middles.size, dtype=bool)
    for decimals in range(16):
        with np.errstate(over="ignore", invalid="ignore"):  # near 1e308 rounding overflows
            rounded = np.round(middles, decimals)
        inside = pending & (np.abs(rounded - middles) <= margin)
        edges[inside] = rounded[inside]
        pending &= ~inside
        if not pending.any():
            break
    return edges + 0.0  # no -0.0 edge: it would be spelled "-0.0"


def _usable(distinct: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    """Whether an edge in the middle of each gap is more than a float32 ulp from both sides."""
    below, above = distinct[gaps], distinct[gaps + 1]
    middles = below + (above - below) / 2
    with np.errstate(over="ignore", invalid="ignore"):
        ulp32 = np.maximum(
            np.spacing(below.astype(np.float32)).astype(np.float64),
            np.spacing(above.astype(np.float32)).astype(np.float64),
        )
    ulp32[~np.isfinite(ulp32)] = 0.0  # beyond float32's range a round trip is not defined
    return (above - below > 2 * np.abs(ulp32)) & (middles > below) & (middles < above)


def bucket_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Non-cumulative counts per bucket (the last is ``+Inf``) of non-NaN values.

    A value counts in the first bucket whose edge is >= it (Prometheus ``le``): -inf in the
    first, +inf in the last.
    """
    return np.bincount(bucket_indices(values, edges), minlength=edges.size + 1)


def bucket_indices(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bucket index of every value (NaN must be removed first)."""
    return edges.searchsorted(values, side="left")


MAX_CELLS = 4096
"""Cells per column of a `BucketTable`: enough for one edge per cell with hundreds of bins."""


class BucketTable:
    """`bucket_indices` of several columns at once by table lookup, not binary search.

    Why: in a model server's process, right after the model ran, each ``searchsorted`` call
    costs several µs and a batch needs one per column; the lookup is a few elementwise numpy
    operations over the whole columns × rows matrix, about twice as fast there (BENCHMARKS.md,
    "Where the cost goes").

    Each column's range is cut into cells by ``cell(v) = clip(v * scale + shift)``, computed
    alike for the edges here and for the values later. Rounding is monotone, so an edge in a
    lower cell than a value's is below the value and one in a higher cell is above it: the
    bucket is the number of edges in lower cells (a table) plus those in the value's own cell
    that the value exceeds (compared). Cells are fine enough for at most one edge each, unless
    edges are too close for `MAX_CELLS`; then several are compared, and the result is exact all
    the same.
    """

    def __init__(self, edges: Sequence[Sequence[float]], offsets: Sequence[int]) -> None:
        """One column per edge list (sorted, finite); ``offsets[j]`` is added to column j's
        bucket indices (the recorder's first slot)."""
        columns = [np.asarray(column, dtype=np.float64) for column in edges]
        plans = [_cell_plan(column) for column in columns]
        starts = np.cumsum([0] + [cells for _, cells in plans])
        scale = np.array([scale for scale, _ in plans])
        low, high = starts[:-1].astype(np.float64), starts[1:] - 1.0
        shift = low - np.array([column[0] if column.size else 0.0 for column in columns]) * scale
        self._params = tuple(array[:, np.newaxis] for array in (scale, shift, low, high))
        below = []  # per cell: how many of its column's edges lie in lower cells
        self._most = 0  # how many edges one cell holds at most: comparisons per value
        for j, column in enumerate(columns):
            with np.errstate(over="ignore", invalid="ignore"):
                edge_cells = _cells(column, *(param[j] for param in self._params))
            every = np.arange(starts[j], starts[j + 1])
            below.append(np.searchsorted(edge_cells, every, "left"))
            within = np.searchsorted(edge_cells, every, "right") - below[-1]
            self._most = max(self._most, int(within.max()))
        padded = [np.append(column, [math.inf] * self._most) for column in columns]
        first_edge = np.cumsum([0] + [column.size for column in padded])
        nothing = [np.zeros(1, dtype=np.intp)]
        self._slot_below = np.concatenate([b + o for b, o in zip(below, offsets)] or nothing)
        self._edge_at = np.concatenate([b + f for b, f in zip(below, first_edge)] or nothing)
        self._edges = np.concatenate(padded or [np.array([math.inf])])

    def lookup(self, numbers: np.ndarray, columns: Sequence[int] | None = None) -> np.ndarray:
        """Offset bucket index of each value of a 2-D array whose row i holds values of column
        ``columns[i]`` (all columns in order if None). A NaN gets some index of its column."""
        params = self._params if columns is None else (p[columns] for p in self._params)
        with np.errstate(over="ignore", invalid="ignore"):
            cells = _cells(numbers, *params)
        indices = self._slot_below.take(cells)
        at = self._edge_at.take(cells)
        for compared in range(self._most):
            if compared:
                at += 1
            indices += numbers > self._edges.take(at)
        return indices


def _cell_plan(edges: np.ndarray) -> tuple[float, int]:
    """``(scale, cells)`` for one column: the fewest cells (a power of two, at least two per
    edge) that give no cell two edges, or `MAX_CELLS`."""
    cells = 1 << max(0, 2 * edges.size - 1).bit_length()
    width = float(edges[-1]) - float(edges[0]) if edges.size > 1 else 0.0  # may be inf
    while True:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            scale = cells / width if width > 0 else 0.0
            if not 0 < scale < math.inf:
                return 0.0, 1  # one edge, or too wide a span: one cell, every edge compared
            local = _cells(edges, scale, -edges[0] * scale, 0.0, cells - 1.0)
        if cells >= MAX_CELLS or np.all(local[1:] != local[:-1]):
            return scale, cells
        cells *= 2


def _cells(values: np.ndarray, scale, shift, low, high) -> np.ndarray:
    """The cell of each value: the one monotone function behind `BucketTable` (NaN -> low)."""
    position = values * scale
    position += shift
    np.fmax(position, low, out=position)
    np.fmin(position, high, out=position)
    return position.astype(np.intp)


def float_matrix(columns: Sequence[Sequence[Any]], rows: int) -> np.ndarray:
    """Columns of ``rows`` values each as a columns × rows float64 array, by `as_float`'s rules.

    Columns of plain floats and ints (what JSON decodes to) are packed by `struct` in C, three
    times faster than numpy's conversion of Python objects; any other value (a string, None, an
    int beyond float range) sends its column through `as_float`."""
    packer = struct.Struct(f"{rows}d")
    packed = []
    for column in columns:
        try:
            packed.append(packer.pack(*column))
        except (struct.error, TypeError, OverflowError):
            packed.append(as_float(column).tobytes())
    return np.frombuffer(b"".join(packed), dtype=np.float64).reshape(len(columns), rows)


def sorted_bucket_counts(ordered: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`bucket_counts` for sorted values in O(buckets · log n) instead of O(n)."""
    cumulative = np.searchsorted(ordered, edges, side="right")
    return np.diff(cumulative, prepend=0, append=ordered.size)


def category_counts(values: Iterable[Any]) -> tuple[dict[str, int], int]:
    """Counts per canonical category, most frequent first, and the number of missing values."""
    counts: dict[str, int] = {}
    missing = 0
    for value in values:
        category = canonical_category(value)
        if category is None:
            missing += 1
        else:
            counts[category] = counts.get(category, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0]))), missing


def numeric_or_text(cells: list[str]) -> np.ndarray:
    """A column of text cells (CSV) as numbers when every non-empty cell is one, else as text.

    Empty cells are missing either way; numeric text becomes a number so that ``1.0`` in a
    CSV and ``1.0`` in JSON land in the same bucket or category.
    """
    numbers = as_float(cells)
    if all(cell.strip() == "" for cell in np.asarray(cells, dtype=object)[np.isnan(numbers)]):
        return numbers
    return np.asarray(cells, dtype=object)
