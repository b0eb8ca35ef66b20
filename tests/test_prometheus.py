"""End to end: a real Prometheus scrapes two gunicorn replicas every second and evaluates the
generated rules; every drift statistic is checked against numpy/scipy on the same binned data,
the training replay shows no drift, the drifted stream fires the alert, and every dashboard
query returns data."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from boxkite_middleware import Baseline, drift
from boxkite_middleware.cli import main
from boxkite_middleware.dashboard import dashboard, expressions
from boxkite_middleware.rules import RuleOptions, rule_file, to_yaml

from .helpers import ROOT_DIR, free_port, mixed_data
from .test_gunicorn import Gunicorn

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="no prometheus server"),
]
WINDOW = "5m"
OPTIONS = RuleOptions(windows=(WINDOW,), min_live=50, duration="0m")
SMOOTHING = OPTIONS.smoothing


def _scores(features: dict[str, list]) -> list[float]:
    return [round(0.5 + 0.05 * x, 3) for x in features["x"]]


def _drifted(rows: int) -> tuple[dict[str, list], list]:
    features, labels = mixed_data(rows, seed=99)
    features["x"] = [value + 2.5 for value in features["x"]]
    features["size"] = [round(value * 1.6, 2) for value in features["size"]]
    features["colour"] = ["purple" if i % 3 == 0 else c for i, c in enumerate(features["colour"])]
    features["grade"] = [None] * rows  # the client stopped sending it
    labels = ["dog" if i % 4 else label for i, label in enumerate(labels)]
    return features, labels


def _bodies(features: dict[str, list], labels: list, batch: int = 40) -> list[bytes]:
    """pandas-split batches; the app echoes the ``label`` and ``score`` columns back."""
    names = [*features, "label", "score"]
    scores = _scores(features)
    rows = [
        [*(features[name][i] for name in features), labels[i], scores[i]]
        for i in range(len(labels))
    ]
    return [
        json.dumps({"columns": names, "data": rows[i : i + batch]}).encode()
        for i in range(0, len(rows), batch)
    ]


def _post(url: str, body: bytes) -> None:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


class Prometheus:
    def __init__(self, folder: Path, targets: list[str], honor_labels: bool = False) -> None:
        (folder / "rules.yml").write_text(to_yaml(rule_file(OPTIONS)))
        job = {"job_name": "model", "static_configs": [{"targets": targets}]}
        if honor_labels:  # a Pushgateway: keep the pushed job label
            job["honor_labels"] = True
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(folder / "rules.yml")],
            "scrape_configs": [job],
        }
        (folder / "prometheus.yml").write_text(to_yaml(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.at: float | None = None
        """Evaluate queries at this Unix time (when set) instead of now."""
        self.process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(folder / "prometheus.log").open("w"),
        )
        self.wait(
            lambda: (
                self.query("up")
                and all(s["value"][1] == "1" for s in self.query("up"))
                and len(self.query("up")) == len(targets)
            ),
            "targets up",
        )

    def query(self, expr: str) -> list[dict]:
        parameters = {"query": expr} if self.at is None else {"query": expr, "time": self.at}
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode(parameters)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.loads(response.read())
        except OSError:
            return []
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def value(self, expr: str) -> float:
        found = self.query(expr)
        assert len(found) == 1, (expr, found)
        return float(found[0]["value"][1])

    def wait(self, condition, what: str, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Prometheus: no {what}")
            time.sleep(0.25)

    def wait_for_total(self, expr: str, total: float) -> None:
        """Until a scrape holds every request sent: ``expr`` (one sum) reaches ``total``."""
        self.wait(lambda: self.query(expr) and self.value(expr) == total, f"{expr} = {total}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def _binned(values: list, edges) -> np.ndarray:
    numbers = np.array([np.nan if v is None else v for v in values], dtype=float)
    present = numbers[~np.isnan(numbers)]
    return np.bincount(
        np.searchsorted(np.asarray(edges), present, side="left"), minlength=len(edges) + 1
    ).astype(float)


def _categorised(values: list, categories: list[str]) -> np.ndarray:
    known = {name: i for i, name in enumerate(categories)}
    counts = np.zeros(len(categories))
    for value in values:
        if value is None:
            continue
        counts[known.get(str(value), known["__other__"])] += 1
    return counts


def _ks(live, base) -> float:
    return float(np.max(np.abs(np.cumsum(live) / live.sum() - np.cumsum(base) / base.sum())))


def _smooth(counts) -> np.ndarray:
    return (1 - SMOOTHING) * counts / counts.sum() + SMOOTHING / counts.size


def _psi(live, base) -> float:
    p, q = _smooth(live), _smooth(base)
    return float(stats.entropy(p, q) + stats.entropy(q, p))


def test_prometheus_evaluates_drift_across_two_replicas(tmp_path):
    training, training_labels = mixed_data()
    baseline = Baseline.from_data(
        training, inference={"label": training_labels, "score": _scores(training)}
    )
    replicas = [
        Gunicorn(tmp_path / f"r{i}", "echo", workers=2, baseline=baseline) for i in range(2)
    ]
    prometheus = Prometheus(tmp_path, [r.url.removeprefix("http://") for r in replicas])
    try:
        drifted, drifted_labels = _drifted(600)
        sent = 0
        for replica in replicas:  # the same streams to both: replicas sum exactly
            for body in _bodies(training, training_labels):
                _post(f"{replica.url}/replay", body)
                sent += 1
            for body in _bodies(drifted, drifted_labels):
                _post(f"{replica.url}/drift", body)
                sent += 1
        prometheus.wait_for_total('sum(boxkite_requests_total{reason="ok"})', sent)
        prometheus.wait(
            lambda: (
                len(prometheus.query(f"boxkite:feature_ks:{WINDOW}")) == 4
                and prometheus.query('ALERTS{model="drift"}')
            ),
            "rules evaluated",
            seconds=30,
        )
        time.sleep(2)  # one more evaluation after the last scrape
        # Read everything below as of one finished evaluation: a threshold and the n it was
        # computed from, read a moment apart, could come from two evaluations (increase()
        # extrapolates differently at each).
        prometheus.at = time.time() - 1

        # The training replay: no drift at all.
        for sample in prometheus.query(f'boxkite:feature_ks:{WINDOW}{{model="replay"}}'):
            assert float(sample["value"][1]) < 1e-12, sample
        for name in ("psi", "js"):
            for sample in prometheus.query(f'boxkite:feature_{name}:{WINDOW}{{model="replay"}}'):
                assert abs(float(sample["value"][1])) < 1e-9, sample
        assert abs(prometheus.value(f'boxkite:inference_psi:{WINDOW}{{model="replay"}}')) < 1e-9
        assert prometheus.value(f'boxkite:inference_ks:{WINDOW}{{model="replay"}}') < 1e-12
        assert not prometheus.query('ALERTS{model="replay"}')

        # The drifted stream: every statistic as numpy/scipy compute it from the same bins.
        for name in ("x", "size"):
            edges = baseline.features[name].edges
            live = _binned(drifted[name], edges)
            base = np.array(baseline.features[name].counts, dtype=float)
            got = prometheus.value(
                f'boxkite:feature_ks:{WINDOW}{{model="drift", feature="{name}"}}'
            )
            assert got == pytest.approx(_ks(live, base), abs=1e-9)
        for name, values, family in (
            ("colour", drifted["colour"], "feature"),
            ("label", drifted_labels, "inference"),
        ):
            column = (baseline.features if family == "feature" else baseline.inference)[name]
            categories = [category for category, _ in column.counts]
            live = _categorised(values, categories)
            base = np.array([count for _, count in column.counts], dtype=float)
            label = "feature" if family == "feature" else "output"
            selector = f'{{model="drift", {label}="{name}"}}'
            assert prometheus.value(f"boxkite:{family}_psi:{WINDOW}{selector}") == pytest.approx(
                _psi(live, base), abs=1e-9
            )
            assert prometheus.value(f"boxkite:{family}_js:{WINDOW}{selector}") == pytest.approx(
                jensenshannon(_smooth(live), _smooth(base)) ** 2, abs=1e-9
            )
        # Missing rate, live minus baseline (colour has null values in both).
        colour = baseline.features["colour"]
        live_missing = sum(value is None for value in drifted["colour"])
        live_present = len(drifted["colour"]) - live_missing
        expected = live_missing / len(drifted["colour"]) - colour.missing / (
            colour.missing + sum(count for _, count in colour.counts)
        )
        got = prometheus.value(
            f'boxkite:feature_missing_rate_change:{WINDOW}{{model="drift", feature="colour"}}'
        )
        assert got == pytest.approx(expected, abs=1e-9) and live_present > 0
        # Thresholds: the formulas of docs/drift.md on the n and m Prometheus recorded.
        n = prometheus.value(f'boxkite:feature_sample_size:{WINDOW}{{model="drift", feature="x"}}')
        m = prometheus.value('boxkite:feature_baseline_count{model="drift", feature="x"}')
        columns = len(baseline.features) + len(baseline.inference)  # α over all of them
        assert prometheus.value('boxkite:columns{model="drift"}') == columns
        alpha = 0.04  # the distribution tests' 80 % of α = 0.05
        critical = np.sqrt(-np.log(alpha / columns / 2) / 2) * np.sqrt((n + m) / (n * m))
        assert prometheus.value(
            f'boxkite:feature_ks_threshold:{WINDOW}{{model="drift", feature="x"}}'
        ) == pytest.approx(critical, rel=1e-9)
        k = len(colour.counts)  # every category seen, in training or live
        assert prometheus.value(
            f'boxkite:feature_chi2_threshold:{WINDOW}{{model="drift", feature="colour"}}'
        ) == pytest.approx(stats.chi2.ppf(1 - alpha / columns, k - 1), rel=0.02)
        live_count = prometheus.value(
            f'boxkite:feature_live_count:{WINDOW}{{model="drift", feature="x"}}'
        )
        raw = prometheus.value(
            'sum(boxkite_feature_value_bucket{model="drift", feature="x", le="+Inf"})'
        )
        assert raw == 2 * 600  # both replicas, every worker
        # increase() extrapolates to the window's end by up to about one scrape interval: over
        # series a few seconds old that is a sizeable share (over a 30m window, negligible).
        assert raw <= live_count <= 2 * raw

        firing = prometheus.query('ALERTS{alertname="BoxkiteFeatureDrift", model="drift"}')
        assert {s["metric"]["feature"] for s in firing} >= {"x", "size", "colour"}
        assert prometheus.query('ALERTS{alertname="BoxkitePredictionDrift", model="drift"}')
        # A column that stopped arriving alerts on its missing rate (+100 %); colour, missing
        # as often live as in training, does not, in either stream.
        missing = prometheus.query('ALERTS{alertname="BoxkiteFeatureMissingRate"}')
        assert {(s["metric"]["model"], s["metric"]["feature"]) for s in missing} == {
            ("drift", "grade")
        }
        # x moved by +2.5 past the training maximum: values outside the training range alert,
        # at the share Python computes from the same buckets; the training replay has none.
        outside = prometheus.query('ALERTS{alertname="BoxkiteFeatureOutOfRange"}')
        assert ("drift", "x") in {(s["metric"]["model"], s["metric"]["feature"]) for s in outside}
        assert not [s for s in outside if s["metric"]["model"] == "replay"]
        x = baseline.features["x"]
        expected_share = drift.out_of_range_share(
            drift.Distribution(
                "drift",
                "feature",
                "x",
                "numeric",
                (*map(str, x.edges), "+Inf"),
                _binned(drifted["x"], x.edges),
                np.array(x.counts, dtype=float),
                0.0,
                0.0,
            )
        )
        got = prometheus.value(
            f'boxkite:feature_out_of_range:{WINDOW}{{model="drift", feature="x"}}'
        )
        assert got == pytest.approx(expected_share, abs=1e-9) and expected_share > 0.01
        # W1 in training standard deviations, from the bucket shares and widths (x has negative
        # values, hence no _sum: the part inside the training range alone); the replay moved
        # nothing.
        live_cdf = np.cumsum(_binned(drifted["x"], x.edges)) / len(drifted["x"])
        base_cdf = np.cumsum(x.counts) / sum(x.counts)
        inside = np.sum(np.abs(live_cdf - base_cdf)[:-2] * np.diff(x.edges)) / x.stddev
        got = prometheus.value(
            f'boxkite:feature_wasserstein:{WINDOW}{{model="drift", feature="x"}}'
        )
        assert got == pytest.approx(inside, rel=1e-6) and inside > 0.5
        for sample in prometheus.query(f'boxkite:feature_wasserstein:{WINDOW}{{model="replay"}}'):
            assert abs(float(sample["value"][1])) < 1e-9, sample

        # The report of the whole fleet, from Prometheus, and of one replica, from its /metrics:
        # the replicas got the same streams, so every statistic agrees (n is twice as large,
        # which χ² sees), up to increase() extrapolating each series from its own samples
        # (~1 % here). χ² far above its threshold sums squares of large differences, which
        # that moves by up to a quarter (measured: 11 %); the verdicts agree exactly.
        fleet = drift.judge(drift.distributions(drift.fleet_text(prometheus.url, WINDOW)))
        with urllib.request.urlopen(f"{replicas[0].url}/metrics") as response:
            one = drift.judge(drift.distributions(response.read().decode()))
        by_column = {(v.distribution.model, v.distribution.column): v for v in one}
        compared = 0
        for verdict in fleet:
            twin = by_column[verdict.distribution.model, verdict.distribution.column]
            assert verdict.drifted == twin.drifted, verdict
            assert verdict.missing_change == pytest.approx(twin.missing_change, abs=0.01)
            if verdict.out_of_range is not None:
                assert verdict.out_of_range == pytest.approx(twin.out_of_range, abs=0.005)
            if not np.isnan(verdict.value):
                expected, within = twin.value, 0.02
                if verdict.statistic == "χ²":
                    twice = 2 * twin.distribution.live
                    expected = drift.chi2_statistic(twice, twin.distribution.expected)
                    within = 0.02 if expected < 5 * verdict.threshold else 0.25
                assert verdict.value == pytest.approx(expected, rel=within, abs=0.005), verdict
                compared += 1
        assert compared >= 10
        # W1 from the fleet's counts and sums, in Python, is the recorded rule's
        (x_fleet,) = [
            v for v in fleet if (v.distribution.model, v.distribution.column) == ("drift", "x")
        ]
        w1 = f'boxkite:feature_wasserstein:{WINDOW}{{model="drift", feature="x"}}'
        assert x_fleet.wasserstein == pytest.approx(prometheus.value(w1), rel=0.02)
        report = tmp_path / "fleet.html"
        assert main(["report", prometheus.url, "--window", WINDOW, "-o", str(report)]) == 3
        assert "DRIFT (missing)" in report.read_text()  # grade, which stopped arriving

        # Every query of the dashboard returns data here.
        document = dashboard(OPTIONS)
        for expr in expressions(document):
            concrete = [
                expr.replace("$model", "drift")
                .replace("$window", WINDOW)
                .replace("$__rate_interval", "1m")
                .replace("$feature", feature)
                .replace("$baseline", ".*")
                for feature in ("x", "colour")
            ]
            if expr.startswith("label_values("):
                metric = expr.removeprefix("label_values(").rsplit(",", 1)[0]
                concrete = [metric.replace("$model", "drift")]
            assert any(prometheus.query(query) for query in concrete), expr
    finally:
        prometheus.stop()
        for replica in replicas:
            replica.stop()


def _wine_windows(seed: int = 10) -> tuple[Baseline, dict[str, dict[str, list]]]:
    """A baseline from a random half of the real Wine Quality data, with pH missing in 30 % of
    its rows, and one live window per model of the ``wine`` app from the other half.

    The seed's windows keep every column that should not alert at most 0.8 of its threshold
    even with n overstated by half (as ``increase()`` may extrapolate it over a short run), and
    the drifted ones far above: the test checks the wiring, the benchmark the rates."""
    table = np.loadtxt(
        ROOT_DIR / "benchmarks/data/winequality-white.csv", delimiter=";", skiprows=1
    )
    header = (ROOT_DIR / "benchmarks/data/winequality-white.csv").read_text().splitlines()[0]
    names = [name.strip('"') for name in header.split(";")]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(table))
    half = len(table) // 2

    def columns(rows: np.ndarray) -> dict[str, list]:
        found = {name: table[rows, i].tolist() for i, name in enumerate(names)}
        found["pH"] = [None if i % 10 < 3 else v for i, v in enumerate(found["pH"])]
        return found

    training = columns(order[:half])
    quality = training.pop("quality")
    baseline = Baseline.from_data(training, inference=quality)  # one output, "0"
    held_out = order[half:]

    def window(size: int) -> dict[str, list]:
        return columns(rng.choice(held_out, size, replace=False))

    unit_error, class_shift, vanished = window(1000), window(1000), window(200)
    unit_error["alcohol"] = [
        v * 10 if i % 33 == 0 else v for i, v in enumerate(unit_error["alcohol"])
    ]
    class_shift["quality"] = [
        q + 1 if i % 20 < 3 else q for i, q in enumerate(class_shift["quality"])
    ]
    vanished["sulphates"] = [None] * 200
    windows = {
        "steady": window(100),  # pH missing in 30 % of 100 rows, as in training
        "unchanged": window(1000),
        "unit_error": unit_error,  # 3 % of alcohol ×10
        "class_shift": class_shift,  # 15 % of predicted classes up one
        "vanished": vanished,  # sulphates no longer sent
    }
    return baseline, windows


def test_prometheus_alerts_on_what_matters_in_real_data(tmp_path):
    """Real Wine Quality rows through gunicorn and a real Prometheus: a 3 % unit error, a 15 %
    class shift at n = 1,000 and a vanished column each alert, and nothing else does — not
    unchanged traffic at n = 1,000, nor a feature missing in 30 % of rows in training and in a
    100-row window."""
    baseline, windows = _wine_windows()
    server = Gunicorn(tmp_path / "wine", "wine", workers=2, baseline=baseline)
    prometheus = Prometheus(tmp_path, [server.url.removeprefix("http://")])
    try:
        sent = 0
        for model, window in windows.items():
            names = list(window)
            rows = [list(row) for row in zip(*window.values())]
            for start in range(0, len(rows), 100):
                body = json.dumps({"columns": names, "data": rows[start : start + 100]})
                _post(f"{server.url}/{model}", body.encode())
                sent += 1
        prometheus.wait_for_total('sum(boxkite_requests_total{outcome="recorded"})', sent)
        expected = {
            ("BoxkiteFeatureOutOfRange", "unit_error", "alcohol"),
            ("BoxkitePredictionDrift", "class_shift", "0"),
            ("BoxkiteFeatureMissingRate", "vanished", "sulphates"),
        }

        def firing() -> set[tuple[str, str, str]]:
            return {
                (
                    s["metric"]["alertname"],
                    s["metric"]["model"],
                    s["metric"].get("feature") or s["metric"]["output"],
                )
                for s in prometheus.query('ALERTS{alertstate="firing"}')
            }

        prometheus.wait(lambda: expected <= firing(), f"alerts {expected}", seconds=60)
        time.sleep(3)  # more evaluations after the last scrape: nothing else fires
        # (but the unit error is also a real change of alcohol's distribution, which K-S may
        # see when increase() overstates n)
        assert firing() - {("BoxkiteFeatureDrift", "unit_error", "alcohol")} == expected
        # The steady window was judged, not skipped: 100 rows, pH missing as often as in training.
        steady = 'model="steady", feature="pH"'
        rows = prometheus.value(f"boxkite:feature_live_rows:{WINDOW}{{{steady}}}")
        assert OPTIONS.min_live <= rows < 150  # 100, as increase() extrapolates it
        assert (
            abs(prometheus.value(f"boxkite:feature_missing_rate_change:{WINDOW}{{{steady}}}"))
            < 0.01
        )
    finally:
        prometheus.stop()
        server.stop()
