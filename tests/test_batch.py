"""Batch jobs: recorded without HTTP, pushed to a real Pushgateway that a real Prometheus
scrapes, and judged by the generated drift rules unchanged."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from boxkite_middleware import Baseline, BatchRecorder

from .helpers import ROOT_DIR, free_port, mixed_baseline, mixed_data, scrape
from .test_prometheus import WINDOW, Prometheus


def test_a_table_counts_like_its_baseline():
    """Replaying the training table (a mapping, then a 2-D array) reproduces the baseline."""
    features, labels = mixed_data()
    baseline = mixed_baseline()
    batch = BatchRecorder(baseline, model="batch-replay")
    assert batch.record(features, labels) == "ok"
    result = scrape()
    from .helpers import assert_replay_equals_baseline

    assert_replay_equals_baseline(result, "batch-replay", list(features))
    rng = np.random.default_rng(5)
    numbers = {"a": rng.normal(0, 1, 40), "b": rng.normal(5, 2, 40)}
    matrix = BatchRecorder(Baseline.from_data(numbers), model="batch-matrix")
    table = np.column_stack([numbers["a"], numbers["b"]])
    assert matrix.record(table, columns=["a", "b"]) == "no_predictions"
    b = {"model": "batch-matrix", "feature": "b", "le": "+Inf"}
    assert scrape().value("boxkite_feature_value_bucket", **b) == 40


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("prometheus-pushgateway") is None,
    reason="needs Debian's prometheus and prometheus-pushgateway",
)
def test_a_nightly_job_pushes_and_the_drift_rules_judge_it(tmp_path):
    port = free_port()
    gateway = subprocess.Popen(
        ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prometheus = None
    try:
        prometheus = Prometheus(tmp_path, [f"127.0.0.1:{port}"], honor_labels=True)
        baseline = tmp_path / "histogram.prom"
        mixed_baseline().save(baseline)
        subprocess.run(
            [sys.executable, "-m", "tests.batch_job", str(baseline), f"127.0.0.1:{port}"],
            cwd=ROOT_DIR,
            check=True,
        )
        selector = '{model="batch", feature="x"}'
        live = f"boxkite:feature_live_count:{WINDOW}{selector}"
        prometheus.wait(lambda: prometheus.query(live), "pushed counts in the rules", 60)
        prometheus.wait(lambda: prometheus.value(live) > 300, "the job's rows counted", 30)
        prometheus.at = time.time()  # every check below reads one evaluation
        ks = prometheus.value(f"boxkite:feature_ks:{WINDOW}{selector}")
        threshold = prometheus.value(f"boxkite:feature_ks_threshold:{WINDOW}{selector}")
        assert ks > threshold  # x was shifted by 2.5 in the job's table
        grade = '{model="batch", feature="grade"}'
        assert prometheus.value(f"boxkite:feature_psi:{WINDOW}{grade}") < prometheus.value(
            f"boxkite:feature_psi_threshold:{WINDOW}{grade}"
        )  # grade was not
        pushed = prometheus.query('boxkite_requests_total{model="batch", reason="ok"}')
        assert [float(s["value"][1]) for s in pushed] == [2.0]
        assert pushed[0]["metric"]["job"] == "nightly"
    finally:
        if prometheus is not None:
            prometheus.stop()
        gateway.terminate()
        gateway.wait(30)
