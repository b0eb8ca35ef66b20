"""Test helpers: realistic baselines, the exact bytes real clients send, reading /metrics."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.test import Client

from boxkite_middleware import Baseline

# Step 8 of the original boxkite walkthrough, byte for byte (curl --data sends it verbatim).
ROOT_DIR = Path(__file__).resolve().parent.parent

CURL_CONTENT_TYPE = "application/json; format=pandas-split"
CURL_BODY = (
    b'{"columns":["alcohol", "chlorides", "citric acid", "density", "fixed acidity", '
    b'"free sulfur dioxide", "pH", "residual sugar", "sulphates", "total sulfur dioxide", '
    b'"volatile acidity"],"data":[[12.8, 0.029, 0.48, 0.98, 6.2, 29, 3.33, 1.2, 0.39, 75, 0.66]]}'
)
CURL_VALUES = dict(
    zip(json.loads(CURL_BODY)["columns"], json.loads(CURL_BODY)["data"][0], strict=True)
)

WINE_STATS = {  # mean, std of the white Wine Quality columns (Cortez et al., 2009)
    "fixed acidity": (6.855, 0.8439),
    "volatile acidity": (0.2782, 0.1008),
    "citric acid": (0.3342, 0.1210),
    "residual sugar": (6.391, 5.072),
    "chlorides": (0.04577, 0.02185),
    "free sulfur dioxide": (35.31, 17.01),
    "total sulfur dioxide": (138.4, 42.50),
    "density": (0.9940, 0.002991),
    "pH": (3.188, 0.1510),
    "sulphates": (0.4898, 0.1141),
    "alcohol": (10.51, 1.231),
}


def wine_like(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: np.round(np.abs(rng.normal(mean, std, rows)), 4)
        for name, (mean, std) in WINE_STATS.items()
    }


def wine_baseline(rows: int = 2000) -> Baseline:
    features = wine_like(rows)
    return Baseline.from_data(features, inference=np.round(features["alcohol"] / 2, 1))


def mixed_data(rows: int = 600, seed: int = 0) -> tuple[dict[str, list], list]:
    """Negative edges, positive edges, strings with missing values, small integers, labels."""
    rng = np.random.default_rng(seed)
    x = rng.normal(-3, 2, rows).round(3)
    size = rng.exponential(2, rows).round(2)
    colour = rng.choice(["red", "green", "blue"], rows).tolist()
    for i in range(0, rows, 17):
        colour[i] = None
    grade = rng.integers(1, 5, rows).tolist()
    labels = rng.choice(["cat", "dog"], rows).tolist()
    features = {"x": x.tolist(), "size": size.tolist(), "colour": colour, "grade": grade}
    return features, labels


def mixed_baseline() -> Baseline:
    features, labels = mixed_data()
    return Baseline.from_data(features, inference=labels)


def split_body(features: dict[str, list], rows: slice | None = None) -> bytes:
    """pandas ``to_json(orient="split")`` style body (MLflow 1.x clients)."""
    names = list(features)
    count = len(features[names[0]])
    selected = range(count)[rows] if rows else range(count)
    data = [[features[name][i] for name in names] for i in selected]
    return json.dumps({"columns": names, "index": list(selected), "data": data}).encode()


class Scrape:
    """A /metrics body, queried by sample name and a subset of labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

    def find(self, name: str, **labels: str) -> list:
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        found = self.find(name, **labels)
        assert len(found) == 1, f"{len(found)} samples of {name} {labels}"
        return found[0].value

    def total(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.find(name, **labels))


def scrape() -> Scrape:
    """This process's own ``/metrics``, rendered in-process."""
    from boxkite_middleware.exposition import render

    return Scrape(render()[0].decode())


def wait_for(url: str, timeout: float = 30) -> None:
    """Until ``url`` answers at all (a server starting up)."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def curl_walkthrough(url: str, *headers: str) -> object:
    """Step 8 of the original walkthrough, sent by curl itself (plus ``headers``); the answer."""
    command = ["curl", "-sS", "-X", "POST", "-H", f"Content-Type:{CURL_CONTENT_TYPE}"]
    for header in headers:
        command += ["-H", header]
    command += ["--data", CURL_BODY.decode(), f"{url}/invocations"]
    return json.loads(subprocess.run(command, capture_output=True, check=True).stdout)


def post(app, body: bytes, content_type: str = "application/json") -> int:
    """POST to a WSGI app in-process, consuming and closing the response like a server."""
    response = Client(app).post("/invocations", data=body, content_type=content_type, buffered=True)
    return response.status_code


def families_equal(result: Scrape, model: str, live: str, baseline: str, **labels) -> int:
    """Assert a live family equals its baseline twin for ``labels``; return how many series."""

    def by_labels(name: str) -> dict[tuple, float]:
        return {
            tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("model", "baseline"))): (
                s.value
            )
            for s in result.find(name, model=model, **labels)
        }

    live_samples = by_labels(live)
    assert live_samples == by_labels(baseline), (live, labels)
    return len(live_samples)


def assert_replay_equals_baseline(result: Scrape, model: str, features: Iterable[str]) -> None:
    """What replaying the training data must give: every live family equal to its baseline
    twin, each feature with some buckets or categories and one missing count, and the output's
    categories (two labels and ``__other__``)."""
    for name in features:
        values = families_equal(
            result,
            model,
            "boxkite_feature_value_bucket",
            "boxkite_feature_value_baseline_bucket",
            feature=name,
        )
        categories = families_equal(
            result,
            model,
            "boxkite_feature_category_total",
            "boxkite_feature_category_baseline_total",
            feature=name,
        )
        assert values + categories >= 3, name
        missing = families_equal(
            result,
            model,
            "boxkite_feature_missing_total",
            "boxkite_feature_missing_baseline_total",
            feature=name,
        )
        assert missing == 1, name
    outputs = families_equal(
        result,
        model,
        "boxkite_inference_category_total",
        "boxkite_inference_category_baseline_total",
    )
    assert outputs >= 3
