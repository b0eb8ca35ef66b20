"""The shipped examples: trained here, served by gunicorn as their READMEs say, and the curl
of the original walkthrough works against the Flask one verbatim."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from .helpers import ROOT_DIR, Scrape, curl_walkthrough, free_port

pytestmark = pytest.mark.slow
EXAMPLES = ROOT_DIR / "examples"


def _serve(example: str) -> tuple[str, subprocess.Popen]:
    subprocess.run(
        [sys.executable, str(EXAMPLES / example / "train.py")], check=True, capture_output=True
    )
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-c",
            "gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "app:app",
        ],
        cwd=EXAMPLES / example,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=2):
                return url, process
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, example
            time.sleep(0.2)


def _metrics(url: str) -> Scrape:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        return Scrape(response.read().decode())


def _recorded(url: str, model: str) -> Scrape:
    """A scrape that starts once the request is counted: the middleware records after the
    response has been sent, and writes a request's outcome last (one scrape reads the files
    one after the other, so the one that first sees the outcome may miss the rest)."""
    deadline = time.monotonic() + 10
    while not _metrics(url).value("boxkite_requests_total", model=model, reason="ok"):
        assert time.monotonic() < deadline, "the request was never counted"
        time.sleep(0.05)
    return _metrics(url)


def test_flask_example_answers_the_original_curl():
    url, process = _serve("flask_app")
    try:
        answer = curl_walkthrough(url)
        assert len(answer["predictions"]) == 1 and 3 <= answer["predictions"][0] <= 9
        scrape = _recorded(url, "wine")
        assert scrape.value("boxkite_requests_total", model="wine", reason="ok") == 1
        assert scrape.total("boxkite_feature_value_bucket", model="wine", le="+Inf") == 11
        assert scrape.value("boxkite_inference_value_bucket", model="wine", le="+Inf") == 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_fastapi_example_records_a_string_feature_and_a_label():
    url, process = _serve("fastapi_app")
    try:
        columns = json.loads(
            (EXAMPLES / "fastapi_app" / "README.md").read_text().split("--data '")[1].split("'")[0]
        )
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps(columns).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            label = json.loads(response.read())["predictions"][0]
        assert label in ("good", "average", "poor")
        scrape = _recorded(url, "wine-grade")
        assert (
            scrape.value(
                "boxkite_feature_category_total",
                model="wine-grade",
                feature="region",
                category="minho",
            )
            == 1
        )
        assert (
            scrape.value("boxkite_inference_category_total", model="wine-grade", category=label)
            == 1
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
