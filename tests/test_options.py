"""Options a production team reaches for: sampling, 5xx features, logging, clear typos."""

from __future__ import annotations

import logging
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from boxkite_middleware import BoxkiteMiddleware

from .helpers import Scrape, mixed_baseline, mixed_data, post, scrape, split_body

BODY = split_body({"x": [-3.5, 1.25], "colour": ["red", "blue"]})


def _app(status: str = "200 OK"):
    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response(status, [("Content-Type", "application/json")])
        return [b'{"predictions": ["cat", "dog"]}']

    return app


def test_sampling_records_a_binomial_share_and_counts_the_rest():
    random.seed(11)
    wrapped = BoxkiteMiddleware(_app(), baseline=mixed_baseline(), model="sampled", sample=0.1)
    requests = 2000
    for _ in range(requests):
        assert post(wrapped, BODY) == 200  # every request answered alike
    result = scrape()
    recorded = result.value("boxkite_requests_total", model="sampled", reason="ok")
    sampled_out = result.value("boxkite_requests_total", model="sampled", reason="sampled_out")
    assert recorded + sampled_out == requests
    deviation = 4 * math.sqrt(requests * 0.1 * 0.9)  # 4 sigma: a false failure ~1 in 16,000
    assert abs(recorded - 200) < deviation, recorded
    # The drift rules read n from what was recorded: buckets hold the sampled rows only.
    total = result.value("boxkite_feature_value_bucket", model="sampled", feature="x", le="+Inf")
    assert total == 2 * recorded


@pytest.mark.parametrize("sample", [0, -0.5, 1.5])
def test_a_sample_outside_zero_to_one_is_refused(sample):
    with pytest.raises(ValueError, match="0 < sample <= 1"):
        BoxkiteMiddleware(_app(), baseline=mixed_baseline(), model="bad", sample=sample)


def test_server_errors_record_their_features_only_when_asked():
    broken = _app("500 Internal Server Error")
    default = BoxkiteMiddleware(broken, baseline=mixed_baseline(), model="5xx-default")
    recording = BoxkiteMiddleware(
        broken, baseline=mixed_baseline(), model="5xx-recorded", record_server_errors=True
    )
    rejecting = BoxkiteMiddleware(
        _app("400 Bad Request"),
        baseline=mixed_baseline(),
        model="4xx",
        record_server_errors=True,
    )
    for wrapped in (default, recording, rejecting):
        post(wrapped, BODY)
    result = scrape()

    def count(model: str, outcome: str) -> float:
        return result.value(
            "boxkite_requests_total", model=model, outcome=outcome, reason="error_status"
        )

    assert count("5xx-default", "skipped") == 1 and count("5xx-default", "recorded") == 0
    assert count("5xx-recorded", "recorded") == 1 and count("5xx-recorded", "skipped") == 0
    assert count("4xx", "skipped") == 1  # a client's mistake is not the model's traffic
    x = {"feature": "x", "le": "+Inf"}
    assert result.value("boxkite_feature_value_bucket", model="5xx-recorded", **x) == 2
    assert result.value("boxkite_feature_value_bucket", model="5xx-default", **x) == 0
    # No predictions were read from an error response.
    outputs = result.find("boxkite_inference_category_total", model="5xx-recorded")
    assert outputs and not any(sample.value for sample in outputs)


def test_start_up_says_what_is_recorded_and_each_request_why(caplog):
    caplog.set_level(logging.DEBUG, logger="boxkite_middleware")
    wrapped = BoxkiteMiddleware(_app(), baseline=mixed_baseline(), model="told")
    started = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(
        "'told'" in m and mixed_baseline().identity in m and "/metrics" in m and "in memory" in m
        for m in started
    ), started
    post(wrapped, BODY)
    post(wrapped, b"{not json", "application/json")
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("'told'" in m and ": ok " in m for m in debug), debug
    assert any("'told'" in m and ": undecodable " in m for m in debug), debug


def test_a_misspelt_option_names_the_middleware_and_the_likely_option():
    with pytest.raises(TypeError, match=r"WSGIMiddleware\(\).*'modle'.*did you mean 'model'"):
        BoxkiteMiddleware(_app(), baseline=mixed_baseline(), modle="typo")


def _post_to(wrapped, path: str) -> int:
    from werkzeug.test import Client

    response = Client(wrapped).post(path, data=BODY, content_type="application/json", buffered=True)
    return response.status_code


def test_path_templates_and_exclusions():
    templated = BoxkiteMiddleware(
        _app(), baseline=mixed_baseline(), model="routes", paths=["/models/{name}/predict"]
    )
    excluding = BoxkiteMiddleware(
        _app(),
        baseline=mixed_baseline(),
        model="routes-but",
        exclude_paths=["/admin/{action}", "/healthz"],
    )
    for path in ("/models/wine/predict", "/models/beer/predict", "/models/predict"):
        _post_to(templated, path)
    for path in ("/models/wine/v2/predict", "/models/wine/predicted", "/other"):
        _post_to(templated, path)
    for path in ("/invocations", "/admin/reload", "/healthz", "/admin/a/b"):
        _post_to(excluding, path)
    result = scrape()
    # {name} is one whole segment: two of the six paths match the template.
    assert result.total("boxkite_requests_total", model="routes") == 2
    # Everything but the excluded paths ("/admin/a/b" is not "/admin/{action}").
    assert result.total("boxkite_requests_total", model="routes-but") == 2


def test_two_models_on_two_routes_of_one_app():
    """One middleware per model, each with its routes; the outer one serves /metrics for both."""
    from werkzeug.test import Client

    inner = BoxkiteMiddleware(
        _app(), baseline=mixed_baseline(), model="red", paths=["/red"], metrics_path=None
    )
    both = BoxkiteMiddleware(inner, baseline=mixed_baseline(), model="blue", paths=["/blue"])
    for path in ("/red", "/red", "/blue"):
        _post_to(both, path)
    result = Scrape(Client(both).get("/metrics").get_data(as_text=True))
    assert result.value("boxkite_requests_total", model="red", reason="ok") == 2
    assert result.value("boxkite_requests_total", model="blue", reason="ok") == 1


def test_constant_labels_go_on_every_family_of_the_model():
    versions = [
        BoxkiteMiddleware(
            _app(), baseline=mixed_baseline(), model="labelled", labels={"model_version": v}
        )
        for v in ("3", "4")
    ]
    post(versions[0], BODY)
    post(versions[0], BODY)
    post(versions[1], BODY)
    result = scrape()
    samples = [s for s in result.samples if s.labels.get("model") == "labelled"]
    families = {s.name for s in samples}
    assert {"boxkite_requests_total", "boxkite_baseline_info"} <= families
    assert any(name.endswith("_baseline_bucket") for name in families)
    assert all(s.labels.get("model_version") in ("3", "4") for s in samples)
    for version, requests in (("3", 2), ("4", 1)):
        counted = result.value(
            "boxkite_requests_total", model="labelled", model_version=version, reason="ok"
        )
        assert counted == requests


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"model": "x"}, "boxkite-middleware's own"),
        ({"le": "1"}, "boxkite-middleware's own"),
        ({"bad-name": "x"}, "not a Prometheus label name"),
        ({"__private": "x"}, "not a Prometheus label name"),
        ({"version_number": 3}, "must be a string"),
    ],
)
def test_constant_labels_that_would_clash_are_refused(labels, message):
    with pytest.raises(ValueError, match=message):
        BoxkiteMiddleware(_app(), baseline=mixed_baseline(), model="clash", labels=labels)


class Row(BaseModel):
    x: float
    size: float
    colour: str | None
    grade: int
    label: str


class Batch(BaseModel):
    """A pydantic model wrapping a list: FastAPI's most common request shape."""

    records: list[Row]


def test_rows_and_outputs_where_a_fastapi_app_keeps_them():
    """The most common FastAPI shape, a pydantic model wrapping a list, answered with named
    lists: replaying the training rows through it reproduces the baseline exactly."""
    import json
    import urllib.request

    from fastapi import FastAPI

    from .helpers import assert_replay_equals_baseline, mixed_data
    from .servers import asgi_server, settled_metrics

    app = FastAPI()

    @app.post("/predict")
    def predict(batch: Batch) -> dict:
        return {"result": {"labels": [row.label for row in batch.records]}, "took_ms": 1}

    app.add_middleware(
        BoxkiteMiddleware,
        baseline=mixed_baseline(),
        model="located",
        rows="records",
        outputs={"0": "result.labels"},
    )
    features, labels = mixed_data()
    names = list(features)
    records = [
        {**{name: features[name][i] for name in names}, "label": labels[i]}
        for i in range(len(labels))
    ]
    with asgi_server(app) as url:
        for start in range(0, len(records), 50):
            request = urllib.request.Request(
                f"{url}/predict",
                data=json.dumps({"records": records[start : start + 50]}).encode(),
                headers={"Content-Type": "application/json"},
            )
            assert urllib.request.urlopen(request, timeout=10).status == 200
        body = settled_metrics(url, "located", len(records) // 50)[2]
    result = Scrape(body.decode())
    assert result.value("boxkite_requests_total", model="located", reason="ok") == 12
    assert result.value("boxkite_extra_columns_total", model="located") == 12  # "label"
    assert_replay_equals_baseline(result, "located", names)


def test_a_location_that_is_not_there_says_so():
    wrapped = BoxkiteMiddleware(
        _app(), baseline=mixed_baseline(), model="nowhere", rows="records", outputs={"0": "x.y"}
    )
    post(wrapped, BODY)  # a pandas-split body: no "records" in it
    located = split_body({"x": [1.0]}).replace(b'{"columns"', b'{"records": {"columns"', 1)
    post(wrapped, located + b"}")  # rows found; the response has no x.y
    result = scrape()
    unknown = {"outcome": "skipped", "reason": "unknown_format"}
    assert result.value("boxkite_requests_total", model="nowhere", **unknown) == 1
    reason = {"outcome": "recorded", "reason": "no_predictions"}
    assert result.value("boxkite_requests_total", model="nowhere", **reason) == 1


def test_a_response_whose_outputs_are_all_missing_is_not_ok(caplog):
    def answering(predictions: bytes):
        def app(environ, start_response):
            environ["wsgi.input"].read()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [predictions]

        return app

    model = "empty-answers"
    caplog.set_level(logging.WARNING, logger="boxkite_middleware")
    for answer in (b"[null, null]", b'["", null]', b'["cat", null]', b"[null, null]"):
        post(BoxkiteMiddleware(answering(answer), baseline=mixed_baseline(), model=model), BODY)
    result = scrape()
    missing = {"outcome": "recorded", "reason": "predictions_missing"}
    assert result.value("boxkite_requests_total", model=model, **missing) == 3
    assert result.value("boxkite_requests_total", model=model, reason="ok") == 1
    assert result.value("boxkite_inference_missing_total", model=model) == 7
    warned = [r.getMessage() for r in caplog.records if "missing in every value" in r.getMessage()]
    assert len(warned) == 1 and "'0'" in warned[0]  # once per output and process


def test_class_probabilities_feed_one_output_each():
    """A classifier answering labels and a probability row per request row: ``*`` in a path
    takes each row's class probability, and fixed tenths bin them whatever the holdout."""
    import json

    from boxkite_middleware import Baseline

    features, labels = mixed_data()
    proba = [round(0.05 + 0.9 * (x > -3), 2) for x in features["x"]]
    tenths = [round(0.1 * i, 1) for i in range(1, 10)]
    inference = {"label": labels, "proba_cat": proba, "proba_dog": [1 - p for p in proba]}
    baseline = Baseline.from_data(features, inference=inference, bins={"proba_*": tenths})

    def classifier(environ, start_response):
        document = json.loads(environ["wsgi.input"].read())
        rows = range(document["first"], document["first"] + len(document["data"]))
        answer = {
            "predictions": [labels[i] for i in rows],
            "probabilities": [[proba[i], 1 - proba[i]] for i in rows],
        }
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(answer).encode()]

    wrapped = BoxkiteMiddleware(
        classifier,
        baseline=baseline,
        model="classifier",
        outputs={
            "label": "predictions",
            "proba_cat": "probabilities.*.0",
            "proba_dog": "probabilities.*.1",
        },
    )
    names = list(features)
    for first in range(0, len(labels), 100):
        data = [[features[n][i] for n in names] for i in range(first, first + 100)]
        post(wrapped, json.dumps({"columns": names, "data": data, "first": first}).encode())
    result = scrape()
    for output in ("proba_cat", "proba_dog"):
        live, expected = (
            [s.value for s in result.find(name, model="classifier", output=output)]
            for name in (
                "boxkite_inference_value_bucket",
                "boxkite_inference_value_baseline_bucket",
            )
        )
        assert live == expected and len(live) == 10
    categories = result.find("boxkite_inference_category_total", model="classifier")
    assert sum(s.value for s in categories) == len(labels)


def test_functions_say_where_rows_and_outputs_are():
    """For shapes no path can name: the app's own functions get the parsed document."""
    import json

    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"results": [{"label": "cat"}, {"label": "dog"}]}).encode()]

    def rows(document):
        return {name: [row[name] for row in document["items"]] for name in ("x", "colour")}

    wrapped = BoxkiteMiddleware(
        app,
        baseline=mixed_baseline(),
        model="functions",
        rows=rows,
        outputs={"0": lambda document: [r["label"] for r in document["results"]]},
    )
    items = {"items": [{"x": -3.5, "colour": "red"}, {"x": 1.25, "colour": "blue"}]}
    post(wrapped, json.dumps(items).encode())
    post(wrapped, b'{"no items": true}')  # the function raises: counted, never raised
    result = scrape()
    assert result.value("boxkite_requests_total", model="functions", reason="ok") == 1
    skipped = {"outcome": "skipped", "reason": "unknown_format"}
    assert result.value("boxkite_requests_total", model="functions", **skipped) == 1
    x = {"feature": "x", "le": "+Inf"}
    assert result.value("boxkite_feature_value_bucket", model="functions", **x) == 2
    assert result.total("boxkite_inference_category_total", model="functions") == 2


def test_a_scikit_learn_classifier_probabilities_split_by_class():
    """A real classifier (string classes): the baseline gets ``proba_{class}`` per column of
    ``predict_proba`` and ``proba_max``; the FastAPI app answers the same matrix under
    ``probabilities``, and one ``outputs`` entry splits it back. Replay is exact."""
    import json
    import urllib.request

    import pandas as pd
    from fastapi import FastAPI
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from boxkite_middleware import Baseline

    from .servers import asgi_server, settled_metrics

    iris = load_iris(as_frame=True)
    features = iris.data.rename(columns=lambda name: name.removesuffix(" (cm)").replace(" ", "_"))
    target = iris.target_names[iris.target]
    model = LogisticRegression(max_iter=500).fit(features, target)
    tenths = [round(0.1 * i, 1) for i in range(1, 10)]
    baseline = Baseline.from_data(
        features,
        inference={"label": model.predict(features), "proba": model.predict_proba(features)},
        classes=model.classes_,
        bins={"proba_*": tenths},
    )
    assert sorted(baseline.inference) == [
        "label",
        "proba_max",
        "proba_setosa",
        "proba_versicolor",
        "proba_virginica",
    ]
    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict) -> dict:
        frame = pd.DataFrame(body["instances"], columns=features.columns)
        return {
            "labels": model.predict(frame).tolist(),
            "probabilities": model.predict_proba(frame).tolist(),
        }

    app.add_middleware(
        BoxkiteMiddleware,
        baseline=baseline,
        model="iris",
        rows="instances",
        outputs={"label": "labels", "proba": "probabilities"},
    )
    instances = features.values.tolist()
    with asgi_server(app) as url:
        for start in range(0, len(instances), 50):
            body = {"instances": instances[start : start + 50]}
            request = urllib.request.Request(
                f"{url}/predict",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            assert urllib.request.urlopen(request, timeout=10).status == 200
        result = Scrape(settled_metrics(url, "iris", 3)[2].decode())
    assert result.value("boxkite_requests_total", model="iris", reason="ok") == 3
    for output in ("proba_setosa", "proba_versicolor", "proba_virginica", "proba_max"):
        live = {
            s.labels["le"]: s.value
            for s in result.find("boxkite_inference_value_bucket", model="iris", output=output)
        }
        trained = {
            s.labels["le"]: s.value
            for s in result.find(
                "boxkite_inference_value_baseline_bucket", model="iris", output=output
            )
        }
        assert live == trained and live["+Inf"] == 150, output
    assert sum(s.value for s in result.find("boxkite_inference_missing_total", model="iris")) == 0


@given(
    st.lists(st.lists(st.floats(0, 1), min_size=3, max_size=3), min_size=0, max_size=20),
    st.permutations(["10", "2", "3"]),
)
def test_a_probability_matrix_splits_into_its_columns_and_row_maximum(rows, names):
    from boxkite_middleware.recorder import class_groups, split_classes

    outputs = ["label", *(f"proba_{name}" for name in names), "proba_max"]
    groups = class_groups(outputs)
    assert groups == {"proba": ["2", "3", "10"]}  # numbers by value, as classes_ are
    split = split_classes({"label": ["a"] * len(rows), "proba": rows}, groups)
    assert "proba" not in split and split["label"] == ["a"] * len(rows)
    for i, name in enumerate(["2", "3", "10"]):
        assert list(split[f"proba_{name}"]) == [row[i] for row in rows]
    assert list(split["proba_max"]) == [max(row) for row in rows]
    ragged = split_classes({"proba": [[0.5, 0.5]]}, groups)
    assert ragged == {"proba": [[0.5, 0.5]]}  # another width: left as it is, not guessed
