"""A seeded fuzz campaign through real gunicorn workers: wrapped and bare answer alike."""

from __future__ import annotations

import http.client
import json
import random
import time

import pytest

from .helpers import CURL_BODY, mixed_data
from .test_gunicorn import Gunicorn

pytestmark = pytest.mark.slow

CONTENT_TYPES = {  # content type -> is it a prediction candidate (JSON or CSV)?
    "application/json": True,
    "application/json; format=pandas-split": True,
    "APPLICATION/JSON;charset=utf-8": True,
    "application/vnd.model+json": True,
    "text/csv": True,
    "text/plain": False,
    "application/octet-stream": False,
    "multipart/form-data; boundary=x": False,
}
ANSWERS = ["json", "json", "json", "text", "error", "deflate", "chunks"]
REQUESTS = 4000


def _value(rng: random.Random, depth: int = 0) -> object:
    choice = rng.randrange(12 if depth < 3 else 8)
    if choice == 0:
        return rng.uniform(-1e6, 1e6)
    if choice == 1:
        return rng.choice([1e308, -1e308, 5e-324, 0.0, -0.0, 2**63, -(2**80)])
    if choice == 2:
        return None
    if choice == 3:
        return rng.choice(["red", "blue", "", "é" * 70, "\x00", "NaN", "1.5", "[", '"'])
    if choice == 4:
        return rng.choice([True, False])
    if choice in (5, 6, 7):
        return rng.randint(-5, 5)
    if choice in (8, 9):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["x", "colour", "a"]): _value(rng, depth + 1) for _ in range(2)}


def _body(rng: random.Random) -> bytes:
    """Real shapes with hostile values, broken JSON, CSV, and plain garbage."""
    features, _ = mixed_data(rows=20, seed=rng.randrange(1000))
    names = list(features)
    rows = rng.randrange(0, 12)
    data = [
        [_value(rng) if rng.random() < 0.2 else features[n][i] for n in names] for i in range(rows)
    ]
    kind = rng.randrange(9)
    if kind == 0:
        document: object = {"columns": names, "data": data}
    elif kind == 1:
        document = {"dataframe_split": {"columns": rng.sample(names, len(names)), "data": data}}
    elif kind == 2:
        document = {"dataframe_records": [dict(zip(names, row)) for row in data]}
    elif kind == 3:
        document = {"instances": data}
    elif kind == 4:
        document = {
            "inputs": [
                {"name": n, "shape": [rows], "datatype": "FP64", "data": [r[i] for r in data]}
                for i, n in enumerate(names)
            ]
        }
    elif kind == 5:
        document = _value(rng)
    elif kind == 6:
        text = "\n".join([",".join(names), *(",".join(map(str, row)) for row in data)])
        return text.encode()
    elif kind == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    else:
        return CURL_BODY[: rng.randrange(len(CURL_BODY) + 1)]
    text = json.dumps(document, allow_nan=True)
    if rng.random() < 0.1:
        text = text[: rng.randrange(len(text) + 1)]  # truncated
    return text.encode()


def _outcomes(server: Gunicorn) -> float:
    return server.scrape().total("boxkite_requests_total", model="fuzz")


def _send(port: int, path: str, body: bytes, content_type: str, answer: str) -> tuple:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST", path, body=body, headers={"Content-Type": content_type, "X-Answer": answer}
        )
        response = connection.getresponse()
        headers = sorted((k, v) for k, v in response.getheaders() if k.lower() not in ("date",))
        return response.status, headers, response.read()
    finally:
        connection.close()


def test_seeded_fuzz_campaign_wrapped_and_bare_answer_alike(tmp_path):
    server = Gunicorn(tmp_path, "tests.e2e_fuzz:app", workers=2)
    rng = random.Random(20261130)
    workers = set(server.workers())
    candidates = 0
    started = time.monotonic()
    try:
        for i in range(REQUESTS):
            body = _body(rng)
            content_type = rng.choice(list(CONTENT_TYPES))
            answer = rng.choice(ANSWERS)
            wrapped = _send(server.port, "/invocations", body, content_type, answer)
            bare = _send(server.port, "/bare/invocations", body, content_type, answer)
            assert wrapped == bare, (i, body[:200], content_type, answer)
            candidates += CONTENT_TYPES[content_type]
        elapsed = time.monotonic() - started
        assert set(server.workers()) == workers  # no worker crashed or was replaced
        deadline = time.monotonic() + 5
        while (
            counted := server.scrape().total("boxkite_requests_total", model="fuzz")
        ) < candidates:
            assert time.monotonic() < deadline, (counted, candidates)
            time.sleep(0.05)
        scrape = server.scrape()
        assert scrape.total("boxkite_requests_total", model="fuzz") == candidates
        assert scrape.total("boxkite_requests_total", model="fuzz", reason="internal_error") == 0
        assert elapsed < 120  # bounded: ~10 s here
    finally:
        server.stop()
