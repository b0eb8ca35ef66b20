"""Recording: replay equals baseline, both counting paths agree, sharing, threads, bounds."""

from __future__ import annotations

import json
import math
import threading
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from boxkite_middleware import Baseline, BoxkiteMiddleware
from boxkite_middleware.binning import as_float
from boxkite_middleware.payload import Frame
from boxkite_middleware.recorder import SMALL_BATCH, recorder_for
from boxkite_middleware.store import COUNTER, HISTOGRAM, Increments

from .helpers import (
    assert_replay_equals_baseline,
    mixed_baseline,
    mixed_data,
    post,
    scrape,
    split_body,
)


def _model() -> str:
    return "test-" + uuid.uuid4().hex[:8]


def predicting_app(predictions):
    """A WSGI app answering every POST with ``{"predictions": [...]}`` for its rows."""

    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        document = json.loads(body) if body else {}
        rows = document.get("data") or document.get("instances") or []
        answer = predictions(rows)
        payload = json.dumps({"predictions": answer}).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return [payload]

    return app


def test_replaying_training_data_reproduces_the_baseline_exactly():
    features, labels = mixed_data()
    baseline = Baseline.from_data(features, inference=labels)
    model = _model()
    label_of_row = {}

    def predictions(rows):
        return [label_of_row[json.dumps(row)] for row in rows]

    for i in range(len(labels)):
        label_of_row[json.dumps([features[name][i] for name in features])] = labels[i]
    client = Client(BoxkiteMiddleware(predicting_app(predictions), baseline=baseline, model=model))
    for start in range(0, len(labels), 50):  # batches of 50 and single rows both
        rows = slice(start, start + 50) if start < 300 else None
        bodies = (
            [split_body(features, rows)]
            if rows
            else [split_body(features, slice(i, i + 1)) for i in range(start, min(start + 50, 600))]
        )
        for body in bodies:
            response = client.post(
                "/invocations", data=body, content_type="application/json", buffered=True
            )
            assert response.status_code == 200
    result = scrape()
    assert (
        result.value("boxkite_requests_total", model=model, outcome="recorded", reason="ok")
        == 6 + 300
    )
    assert_replay_equals_baseline(result, model, features)
    assert result.value("boxkite_feature_missing_total", model=model, feature="colour") == 36


def _split(values, index):
    return values if index is None else values[:index]


cells = st.one_of(
    st.floats(width=64),
    st.integers(-(10**20), 10**20),
    st.none(),
    st.sampled_from(["", "abc", "1.5", "-2", "nan", "inf", True, False]),
)
values_strategy = st.lists(cells, min_size=1, max_size=SMALL_BATCH)


def _totals(increments: Increments) -> dict[tuple[int, int], float]:
    """Planned increments totalled per (block, slot)."""
    totals: dict[tuple[int, int], float] = {}
    for block in (COUNTER, HISTOGRAM):
        units = [slot for array in increments.units[block] for slot in array.tolist()]
        pairs = [*zip(increments.slots[block], increments.amounts[block]), *((u, 1) for u in units)]
        for slot, amount in pairs:
            totals[block, slot] = totals.get((block, slot), 0) + amount
    return totals


def _planned(recorder, column, values) -> dict[tuple[int, int], float]:
    increments = Increments()
    recorder.plan(column, values, increments)
    return _totals(increments)


def _assert_same_counts(expected: dict, got: dict, sums: set, magnitude: float) -> None:
    """Equal counts; sums equal up to rounding (they are added in another order)."""
    assert {k: v for k, v in expected.items() if k not in sums} == {
        k: v for k, v in got.items() if k not in sums
    }
    if math.isfinite(magnitude):
        for key in sums & expected.keys():
            assert expected[key] == pytest.approx(got.get(key, 0), abs=1e-12 * magnitude)


def _magnitude(values) -> float:
    with np.errstate(over="ignore"):
        return float(sum(abs(v) for v in as_float(values) if math.isfinite(v)))


@given(values_strategy)
@settings(max_examples=300, deadline=None)
def test_scalar_and_vector_paths_count_identically(values):
    recorder = recorder_for("paths", mixed_baseline())
    for name in ("x", "size", "colour", "grade"):
        column = recorder.features[name]
        few = _planned(recorder, column, values)  # at most SMALL_BATCH: bisect path
        times = SMALL_BATCH + 1
        many = _planned(recorder, column, np.asarray(values * times, dtype=object))  # numpy path
        sums = {(HISTOGRAM, column.sum_slot)} if getattr(column, "has_sum", False) else set()
        repeated = {key: times * amount for key, amount in few.items()}
        _assert_same_counts(repeated, many, sums, times * _magnitude(values))


@given(
    st.integers(SMALL_BATCH + 1, 3 * SMALL_BATCH).flatmap(
        lambda rows: st.lists(st.lists(cells, min_size=rows, max_size=rows), min_size=2, max_size=2)
    )
)
@settings(max_examples=200, deadline=None)
def test_numeric_columns_tallied_together_count_as_each_alone(columns):
    """The matrix path (all numeric columns of a batch at once, falling back column by column
    when a cell is no number) counts like the bisect path on the same values."""
    recorder = recorder_for("paths", mixed_baseline())
    numeric = [recorder.features["x"], recorder.features["size"]]
    together = Increments()
    recorder.numeric.plan(list(zip(numeric, columns)), len(columns[0]), together)
    alone = Increments()
    for column, values in zip(numeric, columns):
        for start in range(0, len(values), SMALL_BATCH):
            recorder.plan(column, values[start : start + SMALL_BATCH], alone)  # lists: bisect path
    sums = {(HISTOGRAM, column.sum_slot) for column in numeric if column.has_sum}
    magnitude = max(_magnitude(values) for values in columns)
    _assert_same_counts(_totals(alone), _totals(together), sums, magnitude)


def test_middleware_built_twice_shares_series_and_others_coexist():
    baseline = mixed_baseline()
    model = _model()
    first = BoxkiteMiddleware(
        predicting_app(lambda rows: ["cat"] * len(rows)), baseline=baseline, model=model
    )
    second = BoxkiteMiddleware(
        predicting_app(lambda rows: ["dog"] * len(rows)), baseline=baseline, model=model
    )
    other = BoxkiteMiddleware(
        predicting_app(lambda rows: ["dog"] * len(rows)), baseline=baseline, model=model + "-b"
    )
    assert first.monitor.recorder is second.monitor.recorder
    features, _ = mixed_data(10)
    for app in (first, second, other):
        post(app, split_body(features))
    result = scrape()
    assert result.value("boxkite_inference_category_total", model=model, category="cat") == 10
    assert result.value("boxkite_inference_category_total", model=model, category="dog") == 10
    assert (
        result.value("boxkite_inference_category_total", model=model + "-b", category="dog") == 10
    )
    # One HELP line per family, however many middlewares and baselines.
    assert result.text.count("# HELP boxkite_feature_value ") == 1


def test_threads_lose_no_counts():
    recorder = recorder_for(_model(), mixed_baseline())
    frame = Frame(("x", "colour"), ((-3.0, -1.0), ("red", "purple")), 2)
    threads, per_thread = 8, 500

    def hammer():
        for _ in range(per_thread):
            recorder.record(frame, {"0": ["cat", "dog"]})

    workers = [threading.Thread(target=hammer) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    result = scrape()
    model = recorder.model
    total = threads * per_thread
    assert (
        result.value("boxkite_requests_total", model=model, outcome="recorded", reason="ok")
        == total
    )
    assert (
        result.value("boxkite_feature_value_bucket", model=model, feature="x", le="+Inf")
        == 2 * total
    )
    assert (
        result.value(
            "boxkite_feature_category_total", model=model, feature="colour", category="__other__"
        )
        == total
    )
    assert result.value("boxkite_feature_missing_total", model=model, feature="size") == 2 * total


def test_unseen_categories_add_no_series():
    model = _model()
    app = BoxkiteMiddleware(
        predicting_app(lambda rows: ["cat"] * len(rows)), baseline=mixed_baseline(), model=model
    )
    before = len(scrape().samples)
    for i in range(100):
        colours = [f"colour-{i}-{j}" for j in range(100)]  # 10,000 distinct unseen values
        body = json.dumps({"columns": ["colour"], "data": [[c] for c in colours]}).encode()
        post(app, body)
    result = scrape()
    assert len(result.samples) == before
    assert (
        result.value(
            "boxkite_feature_category_total", model=model, feature="colour", category="__other__"
        )
        == 10_000
    )


def test_missing_and_extra_columns_are_counted():
    model = _model()
    app = BoxkiteMiddleware(
        predicting_app(lambda rows: ["cat"] * len(rows)), baseline=mixed_baseline(), model=model
    )
    body = json.dumps(
        {"columns": ["x", "secret_1", "secret_2"], "data": [[1.0, 2, 3], [2.0, 4, 5]]}
    ).encode()
    post(app, body)
    result = scrape()
    assert result.value("boxkite_extra_columns_total", model=model) == 2
    assert "secret_1" not in result.text
    assert result.value("boxkite_feature_missing_total", model=model, feature="colour") == 2
    assert result.value("boxkite_feature_missing_total", model=model, feature="x") == 0


def test_no_matching_feature_is_skipped():
    model = _model()
    app = BoxkiteMiddleware(
        predicting_app(lambda rows: ["cat"] * len(rows)), baseline=mixed_baseline(), model=model
    )
    for body in (b'{"columns": ["nope"], "data": [[1]]}', b'{"instances": [[1, 2]]}'):
        post(app, body)
    assert (
        scrape().value(
            "boxkite_requests_total", model=model, outcome="skipped", reason="no_features"
        )
        == 2
    )


def test_without_baseline_only_outcomes_unless_features_named():
    model = _model()
    with pytest.warns(UserWarning, match="outcomes only"):
        app = BoxkiteMiddleware(predicting_app(lambda rows: [1.0] * len(rows)), model=model)
    post(app, b'{"columns": ["a"], "data": [[1]]}')
    result = scrape()
    assert result.value("boxkite_requests_total", model=model, reason="no_baseline") == 1
    assert not result.find("boxkite_feature_value_bucket", model=model)

    named = BoxkiteMiddleware(
        predicting_app(lambda rows: [1.0] * len(rows)), model=model + "-f", features=["a"]
    )
    post(named, b'{"columns": ["a"], "data": [[5], [50]]}')
    result = scrape()
    assert (
        result.value("boxkite_feature_value_bucket", model=model + "-f", feature="a", le="10.0")
        == 1
    )
    assert (
        result.value("boxkite_feature_value_bucket", model=model + "-f", feature="a", le="100.0")
        == 2
    )


def test_recorded_requests_say_why_their_predictions_were_not():
    model = _model()
    answers = {
        "/ok": ("application/json", b'{"predictions": ["cat"]}', ""),
        "/brotli": ("application/json", b"\x1b\x00\x00", "br"),
        "/broken": ("application/json", b'{"predictions": [', ""),
        "/text": ("text/plain", b"cat", ""),
        "/big": ("application/json", b'{"predictions": ["cat"]}' + b" " * 5000, ""),
    }

    def app(environ, start_response):
        environ["wsgi.input"].read()
        media, body, encoding = answers[environ["PATH_INFO"]]
        headers = [("Content-Type", media)] + ([("Content-Encoding", encoding)] if encoding else [])
        start_response("200 OK", headers)
        return [body]

    wrapped = BoxkiteMiddleware(app, baseline=mixed_baseline(), model=model, max_body_bytes=4096)
    for path in answers:
        response = Client(wrapped).post(
            path,
            data=b'{"columns": ["x"], "data": [[1.5]]}',
            content_type="application/json",
            buffered=True,
        )
        assert response.get_data() == answers[path][1]
    result = scrape()
    reasons = {
        s.labels["reason"]: s.value
        for s in result.find("boxkite_requests_total", model=model, outcome="recorded")
    }
    assert {k: v for k, v in reasons.items() if v} == {
        "ok": 1,
        "compressed": 1,
        "undecodable": 1,
        "no_predictions": 1,
        "too_large": 1,
    }
    assert result.value("boxkite_feature_value_bucket", model=model, feature="x", le="+Inf") == 5


def test_other_posts_count_only_on_declared_prediction_paths():
    model = _model()

    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    anywhere = BoxkiteMiddleware(app, baseline=mixed_baseline(), model=model)
    declared = BoxkiteMiddleware(
        app, baseline=mixed_baseline(), model=model + "-p", paths=["/invocations"]
    )
    for wrapped in (anywhere, declared):
        Client(wrapped).post(
            "/invocations",
            data=b"a=1",
            buffered=True,
            content_type="application/x-www-form-urlencoded",
        )
    result = scrape()
    skipped = {"outcome": "skipped", "reason": "not_json"}
    assert result.value("boxkite_requests_total", model=model, **skipped) == 0
    assert result.value("boxkite_requests_total", model=model + "-p", **skipped) == 1
