"""Drift rules: valid for promtool, and right — `promtool test rules` against values computed
here with numpy/scipy from the same counts (unseen categories, an idle window, a replica
restart, and two baselines side by side during a rolling deploy)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from boxkite_middleware.dashboard import dashboard, expressions
from boxkite_middleware.rules import RuleOptions, rule_file, to_yaml

pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool")

MINUTES = 10
WINDOW = "10m"
OPTIONS = RuleOptions(windows=(WINDOW,), min_live=10, duration="0m")


def _promtool(*arguments: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *arguments], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize(
    "options",
    [
        RuleOptions(),
        RuleOptions(windows=("5m", "1h", "1d"), sample_size="requests", group_by=("namespace",)),
    ],
)
def test_generated_rules_pass_promtool_check(tmp_path, options):
    path = tmp_path / "rules.yml"
    path.write_text(to_yaml(rule_file(options)))
    result = _promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_shipped_examples_are_current(tmp_path):
    from boxkite_middleware.cli import main

    main(["rules", "--window", "30m", "--window", "6h", "-o", str(tmp_path / "rules.yml")])
    main(["dashboard", "--window", "30m", "--window", "6h", "-o", str(tmp_path / "d.json")])
    from .helpers import ROOT_DIR

    examples = ROOT_DIR / "examples"
    assert (tmp_path / "rules.yml").read_text() == (examples / "rules.yml").read_text()
    assert (tmp_path / "d.json").read_text() == (examples / "grafana-dashboard.json").read_text()


def test_dashboard_queries_the_rules_it_is_built_on():
    document = dashboard(RuleOptions(windows=("30m",)))
    recorded = {
        rule.get("record")
        for group in rule_file(RuleOptions())["groups"]
        for rule in group["rules"]
    }
    for expr in expressions(document):
        for word in expr.replace("{", " ").replace("(", " ").split():
            if word.startswith("boxkite:"):
                assert word.replace("$window", "30m") in recorded, word
    assert json.loads(json.dumps(document)) == document


# ------------------------------------------------------------------------------------------
# The scenario: counters sampled every minute, evaluated at 10m over a 10m window.


def _cumulative_over_time(increments: np.ndarray, restart: int | None = None) -> np.ndarray:
    """Counter samples at minutes 0..10 from per-minute increments (row = minute)."""
    values = np.zeros((MINUTES + 1, increments.shape[1]))
    for minute in range(1, MINUTES + 1):
        start = 0 if minute == restart else values[minute - 1]
        values[minute] = start + increments[minute - 1]
    return values


def _increase(samples: np.ndarray) -> np.ndarray:
    """Prometheus' increase() without extrapolation (samples span the window exactly)."""
    previous, current = samples[:-1], samples[1:]
    return np.where(current >= previous, current - previous, current).sum(axis=0)


class Scenario:
    """Builds the promtool input series and, independently, the expected statistics."""

    def __init__(self) -> None:
        self.series: list[tuple[str, list[float]]] = []
        self.live: dict[tuple, np.ndarray] = {}

    def constant(self, name: str, labels: dict[str, str], value: float) -> None:
        self.series.append((_selector(name, labels), [value] * (MINUTES + 1)))

    def counter(self, name: str, labels: dict[str, str], samples: np.ndarray) -> None:
        self.series.append((_selector(name, labels), samples.tolist()))

    def histogram(self, labels, edges, per_minute, restart=None, baseline=None):
        """Live bucket counters (and the baseline served by this replica)."""
        les = [*edges, "+Inf"]
        samples = _cumulative_over_time(np.cumsum(per_minute, axis=1), restart)
        for i, le in enumerate(les):
            self.counter("boxkite_feature_value_bucket", {**labels, "le": le}, samples[:, i])
            if baseline is not None:
                self.constant(
                    "boxkite_feature_value_baseline_bucket",
                    {**labels, "le": le},
                    float(np.cumsum(baseline)[i]),
                )
        return np.diff(_increase(samples), prepend=0.0)  # per bucket, not cumulative

    def categories(self, family, labels, names, per_minute, restart=None, baseline=None):
        samples = _cumulative_over_time(per_minute, restart)
        for i, name in enumerate(names):
            self.counter(
                f"boxkite_{family}_category_total", {**labels, "category": name}, samples[:, i]
            )
            if baseline is not None:
                self.constant(
                    f"boxkite_{family}_category_baseline_total",
                    {**labels, "category": name},
                    float(baseline[i]),
                )
        return _increase(samples)


def _selector(name: str, labels: dict[str, str]) -> str:
    inner = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return f"{name}{{{inner}}}"


def _ks(live: np.ndarray, baseline: np.ndarray) -> float:
    return float(
        np.max(np.abs(np.cumsum(live) / live.sum() - np.cumsum(baseline) / baseline.sum()))
    )


def _smooth(counts: np.ndarray, smoothing: float = 0.01) -> np.ndarray:
    return (1 - smoothing) * counts / counts.sum() + smoothing / counts.size


def _psi(live: np.ndarray, baseline: np.ndarray) -> float:
    p, q = _smooth(live), _smooth(baseline)
    return float(np.sum(stats.entropy(p, q) + stats.entropy(q, p)))  # symmetric KL


def _js(live: np.ndarray, baseline: np.ndarray) -> float:
    return float(jensenshannon(_smooth(live), _smooth(baseline)) ** 2)


DISTRIBUTION_ALPHA = 0.04  # 80 % of α = 0.05 for the distribution tests
MISSING_ALPHA = 0.005  # 10 % for the missing rate (and 10 % for values out of range)


def _ks_threshold(n: float, m: float, columns: int) -> float:
    return np.sqrt(-np.log(DISTRIBUTION_ALPHA / columns / 2) / 2) * np.sqrt((n + m) / (n * m))


def _chi2(live: np.ndarray, baseline: np.ndarray) -> float:
    """scipy's Pearson χ² of the 2 × k table of the categories seen on either side."""
    seen = live + baseline > 0
    return float(stats.chi2_contingency(np.array([live, baseline])[:, seen], correction=False)[0])


def _chi2_threshold(k: int, columns: int) -> float:
    return stats.chi2.ppf(1 - DISTRIBUTION_ALPHA / columns, k - 1)


def _missing_threshold(missing: float, rows: float, base: float, base_rows: float, columns):
    """The two-proportion z-test's critical difference at 0.1·α/F, two-sided."""
    pooled = (missing + base) / (rows + base_rows)
    spread = np.sqrt(pooled * (1 - pooled) * (1 / rows + 1 / base_rows))
    return stats.norm.ppf(1 - MISSING_ALPHA / columns / 2) * spread


def test_rules_compute_what_numpy_and_scipy_compute(tmp_path):
    scenario = Scenario()
    b1 = {"model": "m", "baseline": "b1"}
    edges = ["1.0", "2.0"]
    base_x = np.array([10.0, 20.0, 10.0])
    rng = np.random.default_rng(7)
    # Two replicas of baseline b1; replica 2 restarts at minute 6.
    live_x = sum(
        scenario.histogram(
            {**b1, "instance": instance, "feature": "x"},
            edges,
            rng.integers(0, 4, (MINUTES, 3)),
            restart=restart,
            baseline=base_x,
        )
        for instance, restart in (("r1", None), ("r2", 6))
    )
    base_missing, live_missing = 4.0, 0.0
    for instance in ("r1", "r2"):
        per_minute = rng.integers(0, 2, (MINUTES, 1))
        live_missing += float(_increase(_cumulative_over_time(per_minute))[0])
        scenario.counter(
            "boxkite_feature_missing_total",
            {**b1, "instance": instance, "feature": "x"},
            _cumulative_over_time(per_minute)[:, 0],
        )
        scenario.constant(
            "boxkite_feature_missing_baseline_total",
            {**b1, "instance": instance, "feature": "x"},
            base_missing,
        )
    # A categorical feature; replica 2 sees only categories the baseline does not know.
    names = ["red", "blue", "__other__"]
    base_colour = np.array([50.0, 30.0, 0.0])
    live_colour = scenario.categories(
        "feature",
        {**b1, "instance": "r1", "feature": "colour"},
        names,
        np.tile([4, 1, 0], (MINUTES, 1)),
        baseline=base_colour,
    ) + scenario.categories(
        "feature",
        {**b1, "instance": "r2", "feature": "colour"},
        names,
        np.tile([0, 0, 2], (MINUTES, 1)),
        baseline=base_colour,
    )
    # Predictions, labels.
    base_label = np.array([60.0, 40.0, 0.0])
    live_label = scenario.categories(
        "inference",
        {**b1, "instance": "r1", "output": "0"},
        ["cat", "dog", "__other__"],
        np.tile([3, 3, 0], (MINUTES, 1)),
        baseline=base_label,
    )
    # Rolling deploy: replica 3 runs baseline b2 (other edges); its traffic matches it.
    b2 = {"model": "m", "baseline": "b2"}
    base_b2 = np.array([5.0, 15.0])
    live_b2 = scenario.histogram(
        {**b2, "instance": "r3", "feature": "x"},
        ["1.5"],
        np.tile([1, 3], (MINUTES, 1)),
        baseline=base_b2,
    )
    # An idle model: a baseline, no traffic.
    scenario.histogram(
        {"model": "idle", "baseline": "b3", "instance": "r4", "feature": "x"},
        edges,
        np.zeros((MINUTES, 3)),
        baseline=base_x,
    )

    n_x, m_x = live_x.sum(), base_x.sum()
    columns = 3  # α is split over b1's columns: features x and colour, and the output
    checks = [  # (rule, labels, expected, tolerance)
        ("boxkite:columns", b1, columns, 1e-9),
        ("boxkite:columns", b2, 1, 1e-9),
        ("boxkite:feature_live_rows:10m", {**b1, "feature": "x"}, n_x + live_missing, 1e-9),
        ("boxkite:feature_live_count:10m", {**b1, "feature": "x"}, n_x, 1e-9),
        ("boxkite:feature_baseline_count", {**b1, "feature": "x"}, m_x, 1e-9),
        ("boxkite:feature_ks:10m", {**b1, "feature": "x"}, _ks(live_x, base_x), 1e-12),
        ("boxkite:feature_ks:10m", {**b2, "feature": "x"}, 0.0, 1e-12),
        *(
            (
                f"boxkite:feature_{name}:10m",
                {**b1, "feature": "colour"},
                of(live_colour, base_colour),
                1e-9,
            )
            for name, of in (("psi", _psi), ("js", _js), ("chi2", _chi2))
        ),
        # the label's __other__ is 0 on both sides: χ² over k = 2 categories
        *(
            (
                f"boxkite:inference_{name}:10m",
                {**b1, "output": "0"},
                of(live_label, base_label),
                1e-9,
            )
            for name, of in (("psi", _psi), ("chi2", _chi2))
        ),
        (
            "boxkite:feature_missing_rate_change:10m",
            {**b1, "feature": "x"},
            live_missing / (live_missing + n_x) - base_missing / (base_missing + m_x),
            1e-12,
        ),
        (
            "boxkite:feature_ks_threshold:10m",
            {**b1, "feature": "x"},
            _ks_threshold(n_x, m_x, columns),
            1e-9,
        ),
        (
            "boxkite:feature_ks_threshold:10m",
            {**b2, "feature": "x"},
            _ks_threshold(live_b2.sum(), base_b2.sum(), 1),
            1e-9,
        ),
    ]
    relative = [  # approximations in PromQL (Wilson–Hilferty, Abramowitz–Stegun): 2 %
        (
            "boxkite:feature_chi2_threshold:10m",
            {**b1, "feature": "colour"},
            _chi2_threshold(3, columns),
        ),
        (
            "boxkite:feature_missing_threshold:10m",
            {**b1, "feature": "x"},
            _missing_threshold(
                live_missing, live_missing + n_x, base_missing, base_missing + m_x, columns
            ),
        ),
    ]
    tests = (
        [
            {
                "expr": f"abs({_selector(rule, labels)} - {float(expected)!r})"
                f" < bool {tolerance!r}",
                "eval_time": f"{MINUTES}m",
                "exp_samples": [{"labels": _labels(labels), "value": 1}],
            }
            for rule, labels, expected, tolerance in checks
        ]
        + [
            {
                "expr": f"abs({_selector(rule, labels)} / {float(expected)!r} - 1) < bool 0.02",
                "eval_time": f"{MINUTES}m",
                "exp_samples": [{"labels": _labels(labels), "value": 1}],
            }
            for rule, labels, expected in relative
        ]
        + [
            {
                "expr": 'absent(boxkite:feature_ks:10m{model="idle"})',
                "eval_time": f"{MINUTES}m",
                "exp_samples": [{"labels": '{model="idle"}', "value": 1}],
            },
            {
                "expr": 'count(boxkite:feature_ks:10m{model="m"})',
                "eval_time": f"{MINUTES}m",
                "exp_samples": [{"labels": "{}", "value": 2}],
            },  # b1 and b2 apart, never mixed
        ]
    )
    _promtool_test(tmp_path, scenario, promql_expr_test=tests)
    # The scenario does show drift, so the zeros above are not vacuous.
    assert _ks(live_x, base_x) > 0.05 and _psi(live_colour, base_colour) > 0.3


def _promtool_test(tmp_path, scenario: Scenario, baselines=(), **cases) -> None:
    """``promtool test rules`` of the generated rules on the scenario's series."""
    (tmp_path / "rules.yml").write_text(to_yaml(rule_file(OPTIONS, baselines)))
    series = [
        {"series": selector, "values": " ".join(repr(float(v)) for v in values)}
        for selector, values in scenario.series
    ]
    test_file = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, **cases}],
    }
    (tmp_path / "test.yml").write_text(to_yaml(test_file))
    result = _promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _labels(labels: dict[str, str]) -> str:
    return "{" + ", ".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def test_missing_rate_alerts_know_the_sample_size(tmp_path):
    """A column that stops arriving alerts (judged on every row, though it has no values);
    a column missing 30 % of the time in training and in a 100-row window does not, nor one
    that merely wobbles by chance; the distribution alert waits for values."""
    scenario = Scenario()
    model = {"model": "v", "baseline": "b"}
    eight_of_ten = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=float)
    for feature, base_missing, live_missing in (
        ("pH", 0.0, np.full(MINUTES, 10.0)),  # stops arriving: 100 rows, all missing
        ("sugar", 300.0, np.full(MINUTES, 3.0)),  # 30 % in training, 30 % live
        ("acid", 50.0, eight_of_ten),  # 5 % in training, 8 % live: chance, for 100 rows
    ):
        labels = {**model, "feature": feature}
        present = np.zeros((MINUTES, 2))
        present[:, 1] = 10 - live_missing  # every value above 1.0, as in training
        baseline = np.array([0.0, 1000.0 - base_missing])
        scenario.histogram(labels, ["1.0"], present, baseline=baseline)
        counts = _cumulative_over_time(live_missing[:, None])[:, 0]
        scenario.counter("boxkite_feature_missing_total", labels, counts)
        scenario.constant("boxkite_feature_missing_baseline_total", labels, base_missing)
    missing_alert = {
        "alertname": "BoxkiteFeatureMissingRate",
        "severity": "warning",
        **model,
        "feature": "pH",
    }
    _promtool_test(
        tmp_path,
        scenario,
        alert_rule_test=[
            {
                "eval_time": f"{MINUTES}m",
                "alertname": "BoxkiteFeatureMissingRate",
                "exp_alerts": [
                    {
                        "exp_labels": missing_alert,
                        "exp_annotations": {
                            "summary": "Missing values changed: v feature pH",
                            "description": next(
                                rule["annotations"]["description"]
                                for group in rule_file(OPTIONS)["groups"]
                                for rule in group["rules"]
                                if rule.get("alert") == "BoxkiteFeatureMissingRate"
                            ).replace("{{ $value | humanizePercentage }}", "100%"),
                        },
                    }
                ],
            },
            {
                "eval_time": f"{MINUTES}m",
                "alertname": "BoxkiteFeatureDrift",
                "exp_alerts": [],
            },
        ],
    )


def test_the_baseline_in_the_rule_file_replaces_every_replicas_copy(tmp_path):
    """Replicas that export no baseline (``expose_baseline=False``): the rule file carries it,
    once, and the statistics are those of the baseline scraped from replicas."""
    from boxkite_middleware import Baseline

    rng = np.random.default_rng(3)
    training = {"x": rng.normal(0, 1, 400).round(2), "colour": rng.choice(["a", "b"], 400)}
    baseline = Baseline.from_data(training)
    x = baseline.features["x"]
    labels = {"model": "quiet", "baseline": baseline.identity}
    scenario = Scenario()
    per_minute = np.zeros((MINUTES, len(x.edges) + 1))
    per_minute[:, : len(x.edges) // 2] = 1  # live values in the lower buckets only
    live = sum(
        scenario.histogram(
            {**labels, "instance": instance, "feature": "x"},
            [str(e) for e in x.edges],
            per_minute,
        )
        for instance in ("r1", "r2")
    )
    expected = _ks(live, np.array(x.counts, dtype=float))
    selector = _selector("boxkite:feature_ks:10m", {**labels, "feature": "x"})
    tests = [
        {
            "expr": f"abs({selector} - {expected!r}) < bool 1e-9",
            "eval_time": f"{MINUTES}m",
            "exp_samples": [{"labels": _labels({**labels, "feature": "x"}), "value": 1}],
        },
        {
            "expr": 'count(boxkite_feature_category_baseline_total{model="quiet"})',
            "eval_time": f"{MINUTES}m",
            "exp_samples": [{"labels": "{}", "value": 3}],  # a, b and __other__, once
        },
    ]
    _promtool_test(tmp_path, scenario, baselines=[(baseline, "quiet", {})], promql_expr_test=tests)
    assert expected > 0.3  # the scenario does drift


def test_values_outside_the_training_range_alert(tmp_path):
    """A unit error: 3 % of values far above the training maximum, in the +Inf bucket that
    the baseline left empty. The share is recorded and alerts; unchanged traffic does not."""
    scenario = Scenario()
    baseline = np.array([0.0, 300.0, 700.0, 0.0])  # below range, two bins, above range
    for feature, per_minute in (
        ("unit_error", np.tile([0, 29, 68, 3], (MINUTES, 1))),  # 3 of 100 a minute above
        ("unchanged", np.tile([0, 30, 70, 0], (MINUTES, 1))),
    ):
        labels = {"model": "u", "baseline": "b", "feature": feature}
        scenario.histogram(labels, ["1.0", "2.0", "3.0"], per_minute, baseline=baseline)
    from boxkite_middleware.drift import out_of_range_threshold

    unit_error = {"model": "u", "baseline": "b", "feature": "unit_error"}
    share = _selector("boxkite:feature_out_of_range:10m", unit_error)
    threshold = _selector("boxkite:feature_out_of_range_threshold:10m", unit_error)
    limit = out_of_range_threshold(1000, 1000, columns=2)
    assert limit < 0.03  # the scenario is past it
    alert = {"alertname": "BoxkiteFeatureOutOfRange", "severity": "warning"}
    _promtool_test(
        tmp_path,
        scenario,
        promql_expr_test=[
            {
                "expr": f"abs({share} - 0.03) < bool 1e-9",
                "eval_time": f"{MINUTES}m",
                "exp_samples": [{"labels": _labels(unit_error), "value": 1}],
            },
            {  # the same threshold as the CLI's, within the normal quantile's approximation
                "expr": f"abs({threshold} / {limit!r} - 1) < bool 0.01",
                "eval_time": f"{MINUTES}m",
                "exp_samples": [{"labels": _labels(unit_error), "value": 1}],
            },
        ],
        alert_rule_test=[
            {
                "eval_time": f"{MINUTES}m",
                "alertname": "BoxkiteFeatureOutOfRange",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            **alert,
                            "model": "u",
                            "baseline": "b",
                            "feature": "unit_error",
                        },
                        "exp_annotations": {
                            "summary": "Values outside the training range: u feature unit_error",
                            "description": "3% of the values over 10m lie outside the range "
                            "the model was trained on.",
                        },
                    }
                ],
            }
        ],
    )


def _binned_wasserstein(live: np.ndarray, training: np.ndarray, edges: np.ndarray) -> float:
    """The recorded rule's W1, by scipy: each value moved to its bucket's upper edge (those
    beyond the last edge to it), or the change of the mean where larger, over the training
    standard deviation."""

    def upper_edges(values: np.ndarray) -> np.ndarray:
        return edges[np.minimum(np.searchsorted(edges, values), edges.size - 1)]

    inside = stats.wasserstein_distance(upper_edges(live), upper_edges(training))
    return float(max(inside, abs(live.mean() - training.mean())) / training.std())


def test_wasserstein_distance_in_baseline_standard_deviations(tmp_path):
    """W1 sees how far values moved, which K-S does not: a shift of half a standard deviation,
    and a unit error that multiplies 3 % of the values by ten (far beyond the range, where only
    the mean sees them). The baseline series come from the rule file."""
    from boxkite_middleware import Baseline
    from boxkite_middleware.binning import bucket_counts

    rng = np.random.default_rng(7)
    training = rng.gamma(9.0, 1.2, 2000)
    baseline = Baseline.from_data({"shift": training, "unit": training, "same": training})
    edges = np.array(baseline.features["shift"].edges)
    live = {
        "shift": rng.gamma(9.0, 1.2, 1000) + 0.5 * training.std(),
        "unit": np.where(np.arange(1000) % 33 == 0, 10, 1) * rng.gamma(9.0, 1.2, 1000),
        "same": rng.gamma(9.0, 1.2, 1000),
    }
    scenario = Scenario()
    tests = []
    for feature, values in live.items():
        labels = {"model": "w", "baseline": baseline.identity, "feature": feature}
        minutes = np.array_split(values, MINUTES)
        scenario.histogram(
            labels, [repr(float(e)) for e in edges], [bucket_counts(v, edges) for v in minutes]
        )
        sums = _cumulative_over_time(np.array([[v.sum()] for v in minutes]))[:, 0]
        scenario.counter("boxkite_feature_value_sum", labels, sums)
        expected = _binned_wasserstein(values, training, edges)
        tests.append(
            {
                "expr": f"abs({_selector('boxkite:feature_wasserstein:10m', labels)}"
                f" / {expected!r} - 1) < bool 1e-6",
                "eval_time": f"{MINUTES}m",
                "exp_samples": [{"labels": _labels(labels), "value": 1}],
            }
        )
    assert _binned_wasserstein(live["unit"], training, edges) > 0.5  # K-S: about 0.03
    assert (
        _binned_wasserstein(live["same"], training, edges)
        < 0.15
        < 0.4
        < _binned_wasserstein(live["shift"], training, edges)
    )
    _promtool_test(tmp_path, scenario, baselines=[(baseline, "w", {})], promql_expr_test=tests)
