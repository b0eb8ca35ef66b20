"""Baseline.from_data: accepted shapes, kinds, counts, options and errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boxkite_middleware import Baseline
from boxkite_middleware.baseline import Categories, Histogram
from boxkite_middleware.binning import OTHER, as_float, bucket_counts


def test_import_does_not_import_prometheus_client():
    code = (
        "import sys, boxkite_middleware as b; b.Baseline; "
        "assert 'prometheus_client' not in sys.modules, 'imported'; "
        "assert 'pandas' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_real_wine_measurements_are_continuous_without_empty_bins(wine):
    features = {name: values for name, values in wine.items() if name != "quality"}
    baseline = Baseline.from_data(features, inference=wine["quality"])
    assert len(baseline.features) == 11
    for name, column in baseline.features.items():
        assert isinstance(column, Histogram), name
        counts = np.array(column.counts)
        assert counts.sum() == len(wine["quality"]) == 980 and column.missing == 0
        assert 10 <= len(counts) <= 52, name  # 50 bins and two outside the training range
        # No systematically empty bins: every bin holds training values but those outside
        # the training range.
        assert np.count_nonzero(counts[1:-1] == 0) == 0, name
        assert counts[-1] == 0 and (counts[0] == 0 or column.edges[0] >= 0), name
    quality = baseline.inference["0"]
    assert isinstance(quality, Categories)
    assert dict(quality.counts)["6"] == np.count_nonzero(wine["quality"] == 6) > 400
    assert dict(quality.counts)[OTHER] == 0


def _replay(column: Histogram, values) -> list[int]:
    numbers = as_float(values)
    return bucket_counts(numbers[~np.isnan(numbers)], np.array(column.edges)).tolist()


@given(
    st.lists(st.one_of(st.floats(width=64, allow_nan=True), st.none()), min_size=2, max_size=300)
)
@settings(max_examples=200, deadline=None)
def test_replaying_training_data_through_the_live_rule_reproduces_counts(values):
    numbers = as_float(values)
    finite = numbers[np.isfinite(numbers)]
    if np.unique(finite).size < 2 or np.all(finite == np.floor(finite)):
        return
    try:
        baseline = Baseline.from_data({"x": values}, continuous=["x"])
    except ValueError:
        return  # values too close together for float32-safe edges
    column = baseline.features["x"]
    assert list(column.counts) == _replay(column, values)
    assert sum(column.counts) + column.missing == len(values)
    assert column.missing == int(np.isnan(numbers).sum())


def test_accepted_shapes_give_the_same_baseline():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=500), rng.exponential(size=500)
    expected = Baseline.from_data({"a": a, "b": b})
    assert Baseline.from_data(pd.DataFrame({"a": a, "b": b})) == expected
    assert Baseline.from_data([("a", a), ("b", b)]) == expected
    assert Baseline.from_data(np.column_stack([a, b]), columns=["a", "b"]) == expected
    assert Baseline.from_data({"a": a.tolist(), "b": list(b)}) == expected
    assert Baseline.from_data(iter([("a", a), ("b", b)])) == expected


def test_kinds_missing_infinities_and_negative_values():
    baseline = Baseline.from_data(
        {
            "colour": ["red", "blue", None, "", "red", "green"],
            "flag": [True, False, True, True, False, True],
            "grade": [1, 2, 3, 1.0, 2, 3],
            "x": [-5.5, -4.5, 0.5, math.inf, -math.inf, math.nan],
        }
    )
    colour = baseline.features["colour"]
    assert isinstance(colour, Categories) and colour.missing == 2
    assert dict(colour.counts) == {"red": 2, "blue": 1, "green": 1, OTHER: 0}
    assert dict(baseline.features["flag"].counts) == {"true": 4, "false": 2, OTHER: 0}
    assert dict(baseline.features["grade"].counts) == {"1": 2, "2": 2, "3": 2, OTHER: 0}
    x = baseline.features["x"]
    assert isinstance(x, Histogram) and x.missing == 1
    assert x.counts[0] == 1 and x.counts[-1] == 1  # -inf below the training range, +inf above
    assert sum(x.counts) == 5
    assert x.edges[0] < 0 and not x.has_sum


def test_overrides_and_category_folding():
    values = [1, 2, 3, 4, 5, 6, 7, 8] * 4 + [1] * 10
    assert isinstance(Baseline.from_data({"v": values}).features["v"], Categories)
    forced = Baseline.from_data({"v": values}, continuous=["v"]).features["v"]
    assert isinstance(forced, Histogram)
    text = Baseline.from_data({"v": [1.5, 2.5, 1.5]}, categorical=["v"]).features["v"]
    assert dict(text.counts) == {"1.5": 2, "2.5": 1, OTHER: 0}
    folded = Baseline.from_data({"v": values}, categorical=["v"], max_categories=3).features["v"]
    counts = dict(folded.counts)
    assert counts["1"] == 14 and len(counts) == 4 and counts[OTHER] == 42 - 14 - 4 - 4


def test_discrete_rule_follows_the_design_not_the_row_count():
    big = np.tile(np.arange(21.0), 1000)
    assert isinstance(Baseline.from_data({"v": big}).features["v"], Histogram)
    small = np.arange(20.0)
    assert isinstance(Baseline.from_data({"v": small}).features["v"], Categories)
    assert isinstance(Baseline.from_data({"v": small}, max_categories=10).features["v"], Histogram)


def test_inference_shapes():
    x = {"x": np.linspace(0, 1, 100)}
    regression = Baseline.from_data(x, inference=np.linspace(5, 9, 40))
    assert list(regression.inference) == ["0"]
    assert isinstance(regression.inference["0"], Histogram)
    labels = Baseline.from_data(x, inference=["cat", "dog"] * 20)
    assert dict(labels.inference["0"].counts) == {"cat": 20, "dog": 20, OTHER: 0}
    probabilities = np.random.default_rng(0).dirichlet([1, 1, 1], size=200)
    multi = Baseline.from_data(x, inference=probabilities)
    assert list(multi.inference) == ["0", "1", "2"]
    named = Baseline.from_data(x, inference={"price": np.arange(50) / 3})
    assert list(named.inference) == ["price"]


def test_sampling_is_reproducible_and_bounded():
    values = {"v": np.random.default_rng(3).normal(size=100_000)}
    first = Baseline.from_data(values, max_samples=1000, seed=7)
    assert sum(first.features["v"].counts) == 1000
    assert first == Baseline.from_data(values, max_samples=1000, seed=7)
    assert first != Baseline.from_data(values, max_samples=1000, seed=8)
    exact = Baseline.from_data(values)
    assert sum(exact.features["v"].counts) == 100_000


@pytest.mark.parametrize(
    ("features", "kwargs", "message"),
    [
        ({}, {}, "no feature columns"),
        ({"a": []}, {}, "'a' is empty"),
        ({"a": [1.0, 2.0], "b": [1.0]}, {}, "different lengths"),
        ({"a": [None, math.nan, ""]}, {}, "'a'"),
        ([("a", [1.0, 2.0]), ("a", [3.0, 4.0])], {}, "duplicate"),
        (np.zeros((2, 2, 2)), {"columns": ["a", "b"]}, "3-D"),
        (np.zeros((4, 2)), {"columns": ["a"]}, "columns="),
        ({"a": [[1, 2], [3, 4]]}, {}, "'a' must be 1-D"),
        ({"a": [1.0, 2.0]}, {"categorical": ["a"], "continuous": ["a"]}, "both"),
    ],
)
def test_bad_input_names_the_problem(features, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Baseline.from_data(features, **kwargs)


def test_pandas_is_not_imported_for_plain_input():
    code = (
        "import sys; from boxkite_middleware import Baseline; "
        "Baseline.from_data({'a': [1.5, 2.5, 3.5]}); assert 'pandas' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fixed_bins_for_columns_matching_a_pattern():
    """Probabilities of a small holdout still get tenths; other columns keep their own bins."""
    rng = np.random.default_rng(3)
    proba = rng.uniform(0, 1, 45)
    tenths = [round(0.1 * i, 1) for i in range(1, 10)]
    baseline = Baseline.from_data(
        {"x": rng.normal(0, 1, 45)},
        inference={"proba_red": proba, "proba_blue": 1 - proba, "label": (proba > 0.5) * 1},
        bins={"proba_*": tenths},
    )
    for name in ("proba_red", "proba_blue"):
        column = baseline.inference[name]
        assert isinstance(column, Histogram) and list(column.edges) == tenths
        values = proba if name == "proba_red" else 1 - proba
        expected = np.bincount(np.searchsorted(tenths, values, "left"), minlength=10)
        assert list(column.counts) == expected.tolist()
    assert isinstance(baseline.inference["label"], Categories)  # not matched: detected as ever
    with pytest.raises(ValueError, match="edges must increase"):
        Baseline.from_data({"x": proba}, bins={"x": [0.5, 0.1]})
