"""The MLflow lifecycle of the original walkthrough, with every part real: a tracking server
on PostgreSQL (or SQLite), artifacts on disk, the example's training script logging and
registering the model with its baseline, ``boxkite-middleware serve`` running MLflow's scoring
app under gunicorn with two uvicorn workers, and MLflow's own client sending the data."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import mlflow
import pytest
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

from boxkite_middleware import BaselineError
from boxkite_middleware.mlflow import load_baseline

from .helpers import ROOT_DIR, Scrape, families_equal, free_port

sys.path.insert(0, str(ROOT_DIR / "examples" / "mlflow"))

import services
from train import HOLDOUT, wines

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def tracking(request, tmp_path_factory):
    """A tracking server with ``wine`` version 1 (and its baseline) and version 2 (none)."""
    if request.param == "postgresql":
        if services.postgres_binary("initdb") is None:
            pytest.skip("PostgreSQL is not installed (scripts/setup.sh installs it)")
        backend_context = services.postgres()
    else:
        database = tmp_path_factory.mktemp("sqlite") / "mlflow.db"
        backend_context = contextlib.nullcontext(f"sqlite:///{database}")
    with backend_context as backend, services.tracking_server(backend) as url:
        env = {**os.environ, "MLFLOW_TRACKING_URI": url}
        train = [sys.executable, str(ROOT_DIR / "examples" / "mlflow" / "train.py")]
        versions = [
            subprocess.run(
                command, env=env, check=True, capture_output=True, text=True
            ).stdout.splitlines()[-1]  # after MLflow's "View run" lines
            for command in (train, [*train, "--no-baseline"])
        ]
        assert versions == ["1", "2"]
        yield url


class Served:
    """``boxkite-middleware serve`` as a user runs it, stopped on exit."""

    def __init__(self, tracking: str, uri: str, log) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        command = [sys.executable, "-m", "boxkite_middleware", "serve", uri, "--workers", "2"]
        command += ["--port", str(self.port), "--metrics-port", str(self.metrics_port)]
        self.process = subprocess.Popen(
            command,
            env={**os.environ, "MLFLOW_TRACKING_URI": tracking},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        services.wait_for(f"{self.url}/ping", self.process)

    def scrape(self, model: str, requests: int) -> Scrape:
        """Once ``requests`` are counted (both workers have started by then)."""
        deadline = time.monotonic() + 10
        while True:
            url = f"http://127.0.0.1:{self.metrics_port}/metrics"
            result = Scrape(urllib.request.urlopen(url, timeout=10).read().decode())
            if result.total("boxkite_requests_total", model=model) >= requests:
                return result
            assert time.monotonic() < deadline, "requests not counted"
            time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        services.stop(self.process)


def test_served_from_the_registry_replays_its_baseline_exactly(tracking, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    baseline = load_baseline("models:/wine/1")
    holdout = wines()[0][HOLDOUT]
    with open(tmp_path / "serve.log", "wb") as log, Served(tracking, "models:/wine/1", log) as s:
        client = ScoringServerClient("127.0.0.1", s.port)
        parts = range(0, len(holdout), 125)
        for start in parts:
            assert len(client.invoke(holdout[start : start + 125])["predictions"]) == 125
        ping = urllib.request.urlopen(f"{s.url}/ping")
        version = urllib.request.urlopen(f"{s.url}/version").read().decode()
        with pytest.raises(urllib.error.HTTPError) as on_model_port:
            urllib.request.urlopen(f"{s.url}/metrics")
        result = s.scrape("wine", len(parts))
    assert ping.status == 200 and version == mlflow.__version__  # MLflow's own answers
    assert on_model_port.value.code == 404  # /metrics only on --metrics-port
    labels = {"model": "wine", "model_version": "1", "baseline": baseline.identity}
    assert result.value("boxkite_requests_total", reason="ok", **labels) == len(parts)
    for name in baseline.features:
        live, trained = "boxkite_feature_value_bucket", "boxkite_feature_value_baseline_bucket"
        assert families_equal(result, "wine", live, trained, feature=name) > 1, name
    live, trained = "boxkite_inference_value_bucket", "boxkite_inference_value_baseline_bucket"
    assert families_equal(result, "wine", live, trained, output="0") > 1


def test_a_version_without_baseline_serves_with_a_warning(tracking, tmp_path):
    """Version 2 was registered alone; served through an alias, it answers and counts
    outcomes, labelled with the version the alias points to."""
    mlflow.MlflowClient(tracking).set_registered_model_alias("wine", "candidate", "2")
    holdout = wines()[0][HOLDOUT]
    uri = "models:/wine@candidate"
    with open(tmp_path / "serve.log", "wb") as log, Served(tracking, uri, log) as served:
        client = ScoringServerClient("127.0.0.1", served.port)
        assert len(client.invoke(holdout[:10])["predictions"]) == 10
        result = served.scrape("wine", 1)
    output = (tmp_path / "serve.log").read_text()
    assert "has no baseline" in output
    skipped = {"outcome": "skipped", "reason": "no_baseline", "model_version": "2"}
    assert result.value("boxkite_requests_total", model="wine", **skipped) == 1


def test_a_baseline_logged_with_a_run_loads_from_its_uri(tracking, monkeypatch):
    from boxkite_middleware.mlflow import log_baseline

    from .helpers import mixed_baseline

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    with mlflow.start_run() as run:
        uri = log_baseline(mixed_baseline())
    assert uri == f"runs:/{run.info.run_id}/boxkite/histogram.prom"
    assert load_baseline(f"runs:/{run.info.run_id}").identity == mixed_baseline().identity
    with pytest.raises(BaselineError, match="models:/wine/2: no baseline"):
        load_baseline("models:/wine/2")


@pytest.mark.parametrize(
    ("uri", "labels"),
    [
        ("models:/wine/3", ("wine", "3")),
        ("models:/wine/3/", ("wine", "3")),
        ("models:/m-0123abcd", ("mlflow", None)),
        ("runs:/0123abcd/model", ("mlflow", None)),
    ],
)
def test_the_labels_a_model_uri_gives(uri, labels):
    from boxkite_middleware.mlflow import registered

    assert registered(uri) == labels
