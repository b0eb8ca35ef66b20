"""Batch jobs: recorded without HTTP; the example nightly job pushes to a real Pushgateway that
a real Prometheus scrapes, and the generated drift rules judge it unchanged."""

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
        trained = ROOT_DIR / "examples" / "flask_app"
        if not (trained / "model.pkl").exists():
            subprocess.run([sys.executable, str(trained / "train.py")], check=True)
        score = ROOT_DIR / "examples" / "batch_job" / "score.py"
        subprocess.run(
            [sys.executable, str(score), "--gateway", f"127.0.0.1:{port}", "--drift"],
            check=True,
        )
        # This job's baseline only: a Prometheus may hold another's (a rolling deploy, a
        # retrained model), and the rules keep them apart by this label.
        identity = Baseline.load(trained / "histogram.prom").identity
        model = f'model="wine-nightly", baseline="{identity}"'
        live = f'boxkite:feature_live_count:{WINDOW}{{{model}, feature="alcohol"}}'
        prometheus.wait(lambda: prometheus.query(live), "pushed counts in the rules", 60)
        prometheus.wait(lambda: prometheus.value(live) > 2500, "the job's rows counted", 30)

        def drifted(feature: str) -> bool:
            selector = f'{{{model}, feature="{feature}"}}'
            statistic = prometheus.query(f"boxkite:feature_ks:{WINDOW}{selector}")
            limit = prometheus.query(f"boxkite:feature_ks_threshold:{WINDOW}{selector}")
            return bool(statistic and limit) and float(statistic[0]["value"][1]) > float(
                limit[0]["value"][1]
            )

        # The statistics come from rule groups evaluated apart (the baseline's and the
        # window's) while the pushed counts arrive: wait for an evaluation that has them, then
        # read every verdict from that one evaluation.
        prometheus.wait(
            lambda: drifted("alcohol") and drifted("residual sugar"), "what --drift changed", 30
        )
        prometheus.at = time.time()
        assert drifted("alcohol") and drifted("residual sugar")  # what --drift changed
        assert not drifted("pH") and not drifted("citric acid")  # what it did not
        assert prometheus.query(f'boxkite:feature_ks:{WINDOW}{{{model}, feature="pH"}}')
        pushed = prometheus.query(f'boxkite_requests_total{{{model}, reason="ok"}}')
        assert [float(s["value"][1]) for s in pushed] == [5.0]  # five parts of 1,000 rows
        assert pushed[0]["metric"]["job"] == "wine-nightly"
    finally:
        if prometheus is not None:
            prometheus.stop()
        gateway.terminate()
        gateway.wait(30)
