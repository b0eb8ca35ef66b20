"""Metrics off the model's port: a separate listener, and no training histograms at all."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from werkzeug.test import Client

from boxkite_middleware import BoxkiteMiddleware

from .helpers import ROOT_DIR, Scrape, free_port, mixed_baseline, post, split_body, wait_for
from .test_gunicorn import Gunicorn, assert_exact


def _app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"predictions": ["cat"]}']


def test_expose_baseline_false_serves_no_training_histograms():
    wrapped = BoxkiteMiddleware(
        _app, baseline=mixed_baseline(), model="secret", expose_baseline=False
    )
    assert post(wrapped, split_body({"x": [1.0]})) == 200
    scrape = Scrape(Client(wrapped).get("/metrics").get_data(as_text=True))
    assert scrape.value("boxkite_requests_total", model="secret", reason="ok") == 1
    assert scrape.find("boxkite_feature_value_bucket", model="secret", feature="x")
    assert not [s for s in scrape.find("boxkite_baseline_info") if s.labels["model"] == "secret"]
    assert not [
        s for s in scrape.samples if "_baseline" in s.name and s.labels.get("model") == "secret"
    ]


def test_one_model_cannot_be_both_exposed_and_hidden():
    BoxkiteMiddleware(_app, baseline=mixed_baseline(), model="both")
    with pytest.raises(ValueError, match="expose_baseline"):
        BoxkiteMiddleware(_app, baseline=mixed_baseline(), model="both", expose_baseline=False)


@pytest.mark.slow
def test_gunicorn_master_serves_metrics_on_their_own_port(tmp_path):
    """The master never loaded the app (no --preload): it serves every worker's counts and
    the baseline the workers published; the model's port answers no /metrics."""
    metrics_port = free_port()
    server = Gunicorn(tmp_path, "wsgi", environment={"BOXKITE_METRICS_PORT": str(metrics_port)})
    try:
        server.post(40)
        assert_exact(server, 40, scrapes=4)  # includes the baseline, served exactly once
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"{server.url}/metrics", timeout=10)
        assert answer.value.code == 404  # Flask's own answer: the route is the app's
        listener = subprocess.run(
            ["ss", "-ltnp", f"sport = :{metrics_port}"], capture_output=True, text=True
        ).stdout
        assert f"pid={server.process.pid}," in listener, listener  # the master holds it
        with urllib.request.urlopen(f"{server.metrics_url}/drift", timeout=10) as page:
            assert page.headers["Content-Type"].startswith("text/html")
            assert "e2e (baseline " in page.read().decode()  # its header names the models
    finally:
        server.stop()


@pytest.mark.slow
def test_uvicorn_workers_first_to_bind_serves_everyones_counts(tmp_path):
    metrics_port = free_port()
    server = UvicornWorkers(
        tmp_path, BOXKITE_METRICS_PORT=str(metrics_port), BOXKITE_METRICS_HOST="127.0.0.1"
    )
    try:
        server.post(30)
        deadline = time.monotonic() + 5
        while True:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read()
            scrape = Scrape(text.decode())
            if scrape.value("boxkite_requests_total", model="e2e", reason="ok") == 30:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert scrape.value("e2e_answered_total") == 30  # the app's own, from both workers
        assert scrape.find("boxkite_feature_value_baseline_bucket", model="e2e", feature="x")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{server.url}/metrics", timeout=10)
    finally:
        server.stop()


@pytest.mark.slow
def test_uvicorn_workers_fold_the_files_of_workers_that_died(tmp_path):
    """uvicorn has no master hooks: each worker folds, as it starts, the files of processes
    that have ended, so killed workers' files do not pile up and nothing is lost."""
    server = UvicornWorkers(tmp_path)

    def counted() -> float:
        text = urllib.request.urlopen(f"{server.url}/metrics", timeout=10).read().decode()
        return Scrape(text).value("boxkite_requests_total", model="e2e", reason="ok")

    try:
        for kill in range(1, 7):
            server.post(10)
            deadline = time.monotonic() + 5
            while counted() < 10 * kill:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            victim = server.workers()[0]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while victim in server.workers() or len(server.workers()) < 2:
                assert time.monotonic() < deadline, "uvicorn did not replace its worker"
                time.sleep(0.1)
            wait_for(f"{server.url}/docs")
        server.post(1)  # the last replacement has started and folded
        for _ in range(4):
            assert counted() == 61
        ours = sorted(p.name for p in server.directory.glob("*_boxkite_*.db"))
        assert len(ours) <= 2 * 2, ours  # two live workers' files; six dead ones folded
        assert len(list(server.directory.glob("counter_*.db"))) <= 2 * 2 + 1
    finally:
        server.stop()


class UvicornWorkers:
    """``uvicorn --workers 2`` on the e2e ASGI app with an exported directory."""

    def __init__(self, tmp_path, **environment: str) -> None:
        self.directory = tmp_path / "metrics"
        self.directory.mkdir(mode=0o700)
        baseline = tmp_path / "histogram.prom"
        mixed_baseline().save(baseline)
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(self.directory),
            "BOXKITE_TEST_BASELINE": str(baseline),
            **environment,
        }
        command = ["uvicorn", "--workers", "2", "--port", self.url.rsplit(":", 1)[1]]
        self.process = subprocess.Popen(
            [sys.executable, "-m", *command, "--host", "127.0.0.1", "tests.e2e_app:asgi"],
            cwd=ROOT_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(f"{self.url}/docs")

    def workers(self) -> list[int]:
        """The spawned workers (not multiprocessing's resource tracker)."""
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid), "-f", "spawn_main"],
            capture_output=True,
            text=True,
        )
        return [int(pid) for pid in found.stdout.split()]

    def post(self, count: int) -> None:
        body = split_body({"x": [1.0, 2.0], "colour": ["red", "blue"]})
        for _ in range(count):
            request = urllib.request.Request(
                f"{self.url}/invocations", data=body, headers={"Content-Type": "application/json"}
            )
            urllib.request.urlopen(request, timeout=10).read()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=30)


def test_the_separate_listener_speaks_tls_with_a_certificate(tmp_path):
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    names = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*request, *names, "-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
    )
    port = free_port()
    wrapped = BoxkiteMiddleware(
        _app,
        baseline=mixed_baseline(),
        model="tls",
        metrics_port=port,
        metrics_host="127.0.0.1",
        metrics_certfile=str(certificate),
        metrics_keyfile=str(key),
    )
    assert post(wrapped, split_body({"x": [1.0]})) == 200
    context = ssl.create_default_context(cafile=str(certificate))
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=context) as answer:
        scrape = Scrape(answer.read().decode())
    assert scrape.value("boxkite_requests_total", model="tls", reason="ok") == 1
    with pytest.raises(OSError):  # no plain HTTP on that port
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    assert Client(wrapped).get("/metrics").data == b'{"predictions": ["cat"]}'  # the app's
