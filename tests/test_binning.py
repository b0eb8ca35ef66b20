"""Invariants of the binning rules shared by baseline and live counting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from boxkite_middleware import binning

finite_floats = st.floats(
    allow_nan=False, allow_infinity=False, width=64, min_value=-1e12, max_value=1e12
)
columns = hnp.arrays(np.float64, st.integers(2, 400), elements=finite_floats)


@given(columns, st.integers(2, 60))
@settings(max_examples=300, deadline=None)
def test_edges_strictly_increasing_finite_and_between_distinct_values(values, max_bins):
    ordered = np.sort(values)
    assume(np.unique(ordered).size >= 2)
    try:
        edges = binning.continuous_edges(ordered, max_bins)
    except ValueError:
        # Only when no two distinct values are far enough apart for a float32-safe edge.
        distinct = np.unique(ordered)
        gaps = np.diff(distinct)
        ulp = np.spacing(distinct[1:].astype(np.float32)).astype(np.float64)
        assert np.all(gaps <= 2 * np.abs(ulp) * 1.0001)
        return
    assert np.all(np.isfinite(edges))
    assert np.all(np.diff(edges) > 0)
    assert 1 <= edges.size <= max_bins + 1  # the inner edges, and two around the range
    assert not np.isin(edges, ordered).any(), "an edge lies on a training value"
    counts = binning.sorted_bucket_counts(ordered, edges)
    assert counts.sum() == values.size
    # Every bucket between two edges holds at least one distinct training value...
    assert np.all(counts[1:-1] > 0)
    # ...but those below and above the training range, which hold none (none below a
    # minimum of 0: non-negative data keeps its first edge at 0 or more, and its _sum).
    assert counts[-1] == 0 and edges[-1] > ordered[-1]
    if ordered[0] < 0:
        assert counts[0] == 0 and edges[0] < ordered[0]
    else:  # a range edge only where it stays at 0 or more: non-negative data keeps its _sum
        assert edges[0] >= 0


@given(
    hnp.arrays(np.int64, st.integers(2, 2000), elements=st.integers(1, 10**6), unique=True),
    st.integers(2, 60),
)
@settings(max_examples=200, deadline=None)
def test_distinct_values_fill_the_bins_equally(values, max_bins):
    """Equal-mass bins: with no ties, every bin inside the range holds n/max_bins values
    (rounded down or up), so a drift test sees a change where the values are."""
    ordered = np.sort(values.astype(np.float64))
    edges = binning.continuous_edges(ordered, max_bins)
    inside = binning.sorted_bucket_counts(ordered, edges)[1:-1]
    n, bins = ordered.size, min(max_bins, ordered.size)
    assert inside.sum() == n and inside.size == bins
    assert inside.min() == n // bins and inside.max() == -(-n // bins)


@given(columns, st.integers(2, 60))
@settings(max_examples=200, deadline=None)
def test_float32_round_trip_keeps_the_bucket(values, max_bins):
    ordered = np.sort(values)
    assume(np.unique(ordered).size >= 2)
    try:
        edges = binning.continuous_edges(ordered, max_bins)
    except ValueError:
        return
    as_float32 = ordered.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(
        binning.bucket_indices(ordered, edges), binning.bucket_indices(as_float32, edges)
    )


@given(
    hnp.arrays(
        np.float64,
        st.integers(1, 300),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
    ),
    hnp.arrays(np.float64, st.integers(1, 20), elements=finite_floats, unique=True),
)
@settings(max_examples=200, deadline=None)
def test_sorted_and_unsorted_counting_agree_with_le_semantics(values, edges):
    edges = np.sort(edges)
    present = values[~np.isnan(values)]
    unsorted = binning.bucket_counts(present, edges)
    np.testing.assert_array_equal(unsorted, binning.sorted_bucket_counts(np.sort(present), edges))
    assert unsorted.sum() == present.size
    cumulative = np.cumsum(unsorted)
    for edge, count in zip(edges, cumulative):
        assert count == np.count_nonzero(present <= edge)  # Prometheus `le`


def test_infinities_go_to_the_outer_buckets_and_nan_nowhere():
    edges = np.array([-1.0, 0.0, 1.0])
    indices = binning.bucket_indices(np.array([-math.inf, math.inf, -1.0, -0.5, 1.0]), edges)
    assert indices.tolist() == [0, 3, 0, 1, 2]


def test_grid_data_does_not_leave_every_other_bin_empty():
    rng = np.random.default_rng(1)
    values = np.round(rng.normal(10, 1, 5000), 1)  # recorded on a 0.1 grid
    ordered = np.sort(values)
    edges = binning.continuous_edges(ordered, 50)
    counts = binning.sorted_bucket_counts(ordered, edges)
    inner = counts[1:-1]
    assert np.all(inner > 0)
    # Bins hold whole grid steps where the data is dense; only in the sparse tails can an edge
    # sit in the middle of a gap wider than one step.
    widths = np.diff(edges[1:-1]) / 0.1  # the bins inside the training range
    whole = np.isclose(widths, np.round(widths), atol=1e-6)
    assert whole.mean() > 0.9
    assert whole[np.argmax(counts[1:-1]) - 2 : np.argmax(counts[1:-1]) + 2].all()


def test_one_outlier_does_not_squeeze_everything_into_one_bin():
    rng = np.random.default_rng(2)
    values = np.append(rng.normal(0, 1, 10_000), 1e9)
    ordered = np.sort(values)
    edges = binning.continuous_edges(ordered, 50)
    counts = binning.sorted_bucket_counts(ordered, edges)
    assert counts.max() < 0.1 * values.size
    assert edges.size == 49 + 2  # and the two around the training range


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, "1"),
        (1.0, "1"),
        (1e0, "1"),
        (np.int64(1), "1"),
        (np.float32(1.0), "1"),
        (-0.0, "0"),
        (0.5, "0.5"),
        (True, "true"),
        (False, "false"),
        (np.bool_(True), "true"),
        ("abc", "abc"),
        ("1.0", "1.0"),
        ("", None),
        (None, None),
        (math.nan, None),
        ([1], None),
        ("x" * 100, "x" * binning.MAX_CATEGORY_LENGTH),
        (math.inf, "inf"),
    ],
)
def test_canonical_categories(value, expected):
    assert binning.canonical_category(value) == expected


@given(
    st.one_of(
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=False, width=64),
        st.text(max_size=80),
        st.booleans(),
    )
)
def test_canonical_category_is_idempotent_and_bounded(value):
    category = binning.canonical_category(value)
    if category is None:
        assert value == "" or (isinstance(value, float) and math.isnan(value))
        return
    assert len(category) <= binning.MAX_CATEGORY_LENGTH
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        assert binning.canonical_category(float(category)) == category


def test_as_float_marks_non_numbers_missing():
    values = binning.as_float([1, "2.5", None, "", "abc", [1, 2], 10**400, -(10**400), True])
    expected = [1.0, 2.5, math.nan, math.nan, math.nan, math.nan, math.inf, -math.inf, 1.0]
    np.testing.assert_array_equal(values, expected)


def test_discrete_rule_ignores_row_count():
    few = np.array([1.0, 2.0, 3.0] * 3)
    many = np.tile(few, 100_000)
    assert binning.is_discrete(few, 50) and binning.is_discrete(many, 50)
    assert not binning.is_discrete(np.arange(21.0), 50)
    assert binning.is_discrete(np.arange(20.0), 50)
    assert not binning.is_discrete(np.arange(6.0), 5)
    assert not binning.is_discrete(np.array([1.0, 1.5]), 50)


def test_numeric_or_text():
    assert binning.numeric_or_text(["1", "", "2.5"]).tolist()[::2] == [1.0, 2.5]
    assert binning.numeric_or_text(["1", "red"]).tolist() == ["1", "red"]


@given(
    st.lists(
        st.one_of(
            st.text(max_size=12),
            st.floats(),
            st.integers(),
            st.booleans(),
            st.none(),
            st.binary(max_size=6),
        ),
        min_size=1,
        max_size=20,
    )
)
@settings(max_examples=400, deadline=None)
def test_batch_and_single_value_conversion_agree(values):
    """The recorder's numpy path (as_float) and its few-rows path (one_float) are one rule."""
    batch = binning.as_float(values)
    single = np.array([binning.one_float(value) for value in values])
    np.testing.assert_array_equal(batch, single)

    float_matrix = binning.float_matrix([values, values[::-1]], len(values))
    np.testing.assert_array_equal(float_matrix, np.stack([batch, batch[::-1]]))


any_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
edge_lists = st.one_of(
    st.lists(any_finite, min_size=1, max_size=40),  # any magnitudes, far apart or not
    st.lists(st.floats(-1.0, 1.0), min_size=1, max_size=200),  # many, crowded
    st.lists(st.floats(1e-9, 2e-9), min_size=1, max_size=20).map(lambda e: [*e, 1e9]),
).map(lambda edges: np.unique(np.array(edges, dtype=np.float64)))


@st.composite
def tables(draw):
    """Columns of edges and, per column, values on, beside and between its edges."""
    edges = draw(st.lists(edge_lists, min_size=1, max_size=4))
    rows = draw(st.integers(1, 30))
    matrix = np.empty((len(edges), rows))
    for j, column in enumerate(edges):
        with np.errstate(over="ignore"):
            beside = [np.nextafter(column, math.inf), np.nextafter(column, -math.inf)]
        near = np.concatenate([column, *beside])
        special = st.sampled_from([math.inf, -math.inf, 0.0, -0.0, 5e-324, 1.7e308, -1.7e308])
        values = st.one_of(st.sampled_from(near.tolist()), special, any_finite)
        matrix[j] = draw(st.lists(values, min_size=rows, max_size=rows))
    return edges, matrix


@given(tables(), st.data())
@settings(max_examples=400, deadline=None)
def test_bucket_table_finds_the_buckets_binary_search_finds(table, data):
    edges, matrix = table
    offsets = [1000 * j for j in range(len(edges))]
    expected = np.stack(
        [
            binning.bucket_indices(row, column) + offset
            for row, column, offset in zip(matrix, edges, offsets)
        ]
    )
    lookup = binning.BucketTable(edges, offsets)
    np.testing.assert_array_equal(lookup.lookup(matrix), expected)
    some = data.draw(
        st.permutations(range(len(edges))).flatmap(
            lambda order: st.integers(1, len(order)).map(lambda n: list(order[:n]))
        )
    )
    np.testing.assert_array_equal(lookup.lookup(matrix[some], some), expected[some])
