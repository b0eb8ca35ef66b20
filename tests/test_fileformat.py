"""The baseline file: exact round trip, Prometheus-valid, legacy files, clear errors."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from boxkite_middleware import Baseline, BaselineError
from boxkite_middleware.baseline import Categories, Histogram
from boxkite_middleware.binning import OTHER

from .conftest import LEGACY


def _mixed_baseline(seed: int = 0) -> Baseline:
    rng = np.random.default_rng(seed)
    x = rng.normal(-3, 2, 2000)
    x[::97] = np.nan
    return Baseline.from_data(
        {
            "x": x,
            "positive": rng.exponential(1, 2000),
            "colour": rng.choice(["red", "green", "blue", 'a "quoted"\nname'], 2000),
            "grade": rng.integers(1, 5, 2000),
        },
        inference=rng.dirichlet([1, 2], size=300),
    )


def test_round_trip_is_exact(tmp_path):
    baseline = _mixed_baseline()
    path = tmp_path / "histogram.prom"
    baseline.save(path)
    loaded = Baseline.load(path)
    assert loaded == baseline
    assert loaded.identity == baseline.identity
    assert list(loaded.features) == list(baseline.features)
    assert loaded.created == pytest.approx(baseline.created, abs=1)
    for name, column in baseline.features.items():
        if isinstance(column, Histogram):
            assert all(
                a.hex() == b.hex() for a, b in zip(column.edges, loaded.features[name].edges)
            )
            assert loaded.features[name].stddev == column.stddev > 0  # the W1 unit, exactly


@given(
    st.lists(
        st.floats(
            allow_nan=False, allow_infinity=False, width=64, min_value=-1e300, max_value=1e300
        ),
        min_size=3,
        max_size=200,
        unique=True,
    )
)
@settings(max_examples=100, deadline=None)
def test_any_histogram_round_trips_bit_for_bit(values):
    try:
        baseline = Baseline.from_data({"v": values}, continuous=["v"])
    except ValueError:
        return
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "b.prom"
        baseline.save(path)
        loaded = Baseline.load(path)
    assert loaded == baseline and loaded.identity == baseline.identity


def test_file_parses_and_uses_go_float_spelling(tmp_path):
    baseline = _mixed_baseline()
    path = tmp_path / "histogram.prom"
    baseline.save(path)
    text = path.read_text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    histogram = families["boxkite_feature_value_baseline"]
    edges = [
        s.labels["le"]
        for s in histogram.samples
        if s.name.endswith("_bucket") and s.labels["feature"] == "x"
    ]
    assert edges[:-1] == [floatToGoString(e) for e in baseline.features["x"].edges]
    assert edges[-1] == "+Inf"
    sums = [s for s in histogram.samples if s.name.endswith("_sum")]
    assert [s.labels["feature"] for s in sums] == ["positive"]  # x has negative edges
    missing = families["boxkite_feature_missing_baseline"]
    assert {s.labels["feature"]: s.value for s in missing.samples}["x"] == 21


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_file(tmp_path):
    path = tmp_path / "histogram.prom"
    _mixed_baseline().save(path)
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=path.read_bytes(), capture_output=True
    )
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()


def test_identity_ignores_layout_and_metadata(tmp_path):
    baseline = _mixed_baseline()
    path = tmp_path / "histogram.prom"
    baseline.save(path)
    text = path.read_text()
    relaid = "\n\n# a comment\n" + text.replace("# HELP", "# HELP ").replace("\n", "\n\n")
    relaid = relaid.replace('version="0.1.0"', 'version="9.9"')
    path.write_text(relaid)
    assert Baseline.load(path).identity == baseline.identity
    assert _mixed_baseline(seed=1).identity != baseline.identity


def test_reads_the_original_boxkite_file():
    legacy = Baseline.load(LEGACY)
    assert list(legacy.features) == ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    age = legacy.features["age"]
    assert isinstance(age, Histogram) and age.missing is None  # boxkite counted NaN in +Inf
    assert age.edges[0] == -0.107225631607358 and len(age.edges) == 11
    assert sum(age.counts) == 331 and age.counts[:2] == (2, 15)
    sex = legacy.features["sex"]
    assert isinstance(sex, Categories)
    assert dict(sex.counts) == {"-0.044641636506989": 174, "0.0506801187398187": 157, OTHER: 0}
    inference = legacy.inference["0"]
    assert sum(inference.counts) == 111 and inference.total == 17388.09959131427


def test_files_without_a_standard_deviation_estimate_it_from_their_buckets(tmp_path):
    """Older files have no ``…_baseline_stddev``: their buckets give one. The original boxkite
    file holds scikit-learn's diabetes features, each scaled to a standard deviation of
    1/sqrt(442); its equal-width buckets give that within 6 %. Resaved, the file carries the
    estimate and the widths of its edges."""
    legacy = Baseline.load(LEGACY)
    numeric = [c for c in legacy.features.values() if isinstance(c, Histogram)]
    assert len(numeric) == 9 and all(c.stddev is None for c in numeric)
    for column in numeric:
        assert column.scale == pytest.approx(1 / math.sqrt(442), rel=0.06)
    legacy.save(tmp_path / "resaved.prom")
    resaved = (tmp_path / "resaved.prom").read_text()
    age = legacy.features["age"]
    assert f'boxkite_feature_value_baseline_stddev{{feature="age"}} {age.scale!r}' in resaved
    widths = [line for line in resaved.splitlines() if '_width{edge="' in line and 'age"' in line]
    assert len(widths) == len(age.edges) - 1
    assert Baseline.load(tmp_path / "resaved.prom").features["age"].stddev == age.scale


def test_legacy_file_resaved_keeps_unknown_missing(tmp_path):
    legacy = Baseline.load(LEGACY)
    legacy.save(tmp_path / "new.prom")
    again = Baseline.load(tmp_path / "new.prom")
    assert again == legacy and again.features["age"].missing is None
    assert "boxkite_feature_missing_baseline" not in (tmp_path / "new.prom").read_text()


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda text: "", "holds no samples"),
        (lambda text: "hello world\n", ":1: not a Prometheus sample"),
        (lambda text: 'up{job="x"} 1\n', "not a baseline family"),
        (lambda text: text[: len(text) // 2], r"\.prom:\d+: not a Prometheus sample|truncated"),
        (lambda text: text.rsplit("\n", 40)[0] + "\n", "truncated"),
        (lambda text: text.replace("# EOF\n", "# EOF\nextra 1\n"), "after '# EOF'"),
        (lambda text: _swap_bucket_counts(text), r"\.prom:\d+: buckets are not cumulative"),
        (lambda text: _swap_edges(text), r"\.prom:\d+: bucket edges out of order"),
        (lambda text: text.replace('position="1"', 'position="7"'), "positions"),
    ],
)
def test_broken_files_name_file_and_line(tmp_path, mangle, message):
    path = tmp_path / "broken.prom"
    _mixed_baseline().save(path)
    path.write_text(mangle(path.read_text()))
    with pytest.raises(BaselineError, match=message) as caught:
        Baseline.load(path)
    assert str(path) in str(caught.value)


def _bucket_lines(text: str) -> list[int]:
    lines = text.split("\n")
    return [
        i
        for i, line in enumerate(lines)
        if line.startswith("boxkite_feature_value_baseline_bucket") and "+Inf" not in line
    ]


def _swap_bucket_counts(text: str) -> str:
    lines = text.split("\n")
    i = _bucket_lines(text)[5]
    head, value = lines[i].rsplit(" ", 1)
    lines[i] = f"{head} {float(value) + 1e6}"
    return "\n".join(lines)


def _swap_edges(text: str) -> str:
    lines = text.split("\n")
    i, j = _bucket_lines(text)[3:5]
    le_i = lines[i].split('le="')[1].split('"')[0]
    le_j = lines[j].split('le="')[1].split('"')[0]
    lines[i] = lines[i].replace(f'le="{le_i}"', f'le="{le_j}"')
    lines[j] = lines[j].replace(f'le="{le_j}"', f'le="{le_i}"')
    return "\n".join(lines)


def test_unreadable_file_is_one_clear_error(tmp_path):
    with pytest.raises(BaselineError, match="cannot read"):
        Baseline.load(tmp_path / "nope.prom")
    (tmp_path / "binary.prom").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BaselineError, match="binary.prom"):
        Baseline.load(tmp_path / "binary.prom")


def test_infinite_sum_is_not_written_as_a_number(tmp_path):
    baseline = Baseline.from_data({"v": [1e308, 1.5e308, 1.7e308, 2.0]})
    baseline.save(tmp_path / "b.prom")
    assert Baseline.load(tmp_path / "b.prom") == baseline
    assert math.isinf(baseline.features["v"].total)
