"""Drift statistics read off a scrape (the CLI's `drift` and the demo's table)."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from werkzeug.test import Client

from boxkite_middleware import BoxkiteMiddleware, drift
from boxkite_middleware.cli import DRIFT_FOUND, main

from .helpers import mixed_baseline, mixed_data, split_body


@given(st.integers(1, 200), st.floats(0.0001, 0.05))
@settings(max_examples=300, deadline=None)
def test_chi2_quantile_is_as_accurate_as_the_readme_says(degrees, tail):
    exact = stats.chi2.ppf(1 - tail, degrees)
    error = abs(drift.chi2_quantile(degrees, 1 - tail) / exact - 1)
    if tail >= 0.001:
        assert error <= (0.035 if degrees == 1 else 0.025)
    else:
        assert error <= (0.075 if degrees == 1 else 0.05)


@given(
    st.lists(st.integers(0, 1000), min_size=2, max_size=30).filter(lambda c: sum(c) > 0), st.data()
)
@settings(max_examples=200, deadline=None)
def test_statistics_match_their_definitions(live, data):
    live = np.array(live, dtype=float)
    expected = np.array(
        data.draw(
            st.lists(st.integers(0, 1000), min_size=len(live), max_size=len(live)).filter(
                lambda c: sum(c) > 0
            )
        ),
        dtype=float,
    )
    cdf_gap = np.abs(np.cumsum(live) / live.sum() - np.cumsum(expected) / expected.sum())
    assert drift.ks_statistic(live, expected) == pytest.approx(cdf_gap.max())
    p = 0.99 * live / live.sum() + 0.01 / live.size
    q = 0.99 * expected / expected.sum() + 0.01 / expected.size
    assert drift.psi(live, expected) == pytest.approx(stats.entropy(p, q) + stats.entropy(q, p))
    m = (p + q) / 2
    assert drift.jensen_shannon(live, expected) == pytest.approx(
        (stats.entropy(p, m) + stats.entropy(q, m)) / 2, abs=1e-12
    )
    assert drift.psi(expected, expected) == pytest.approx(0, abs=1e-12)


def _scrape(features, labels) -> str:
    model = "cli-" + uuid.uuid4().hex[:6]

    def app(environ, start_response):
        rows = json.loads(environ["wsgi.input"].read())["index"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"predictions": [labels[i] for i in rows]}).encode()]

    client = Client(BoxkiteMiddleware(app, baseline=mixed_baseline(), model=model))
    for start in range(0, len(labels), 50):
        client.post(
            "/invocations",
            data=split_body(features, slice(start, start + 50)),
            content_type="application/json",
            buffered=True,
        )
    return model, client.get("/metrics").get_data(as_text=True)


def test_cli_drift_flags_only_what_moved(tmp_path, capsys):
    features, labels = mixed_data(600, seed=8)  # fresh rows from the training distribution
    features["x"] = [value + 3 for value in features["x"]]  # only x moves
    model, text = _scrape(features, labels)
    path = tmp_path / "scrape.txt"
    path.write_text(text)
    assert main(["drift", str(path)]) == DRIFT_FOUND
    lines = {
        line.split()[1]: line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(model)
    }
    assert "DRIFT (distribution, out of range)" in lines["x"]  # +3 is past the maximum too
    for name in ("size", "colour", "grade"):
        assert lines[name].rstrip().endswith("ok"), lines[name]


def test_too_few_live_values_give_no_verdict():
    features, labels = mixed_data(20, seed=6)
    model, text = _scrape(features, labels)
    verdicts = [v for v in drift.judge(drift.distributions(text)) if v.distribution.model == model]
    assert verdicts and all(v.drifted is None for v in verdicts)


def test_cli_drift_json_and_exit_status(tmp_path, capsys):
    features, labels = mixed_data(600, seed=7)
    model, text = _scrape(features, labels)
    path = tmp_path / "scrape.txt"
    path.write_text(text)
    code = main(["drift", str(path), "--json"])  # fresh rows of the training distribution
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # the scrape holds this process's other models too: the status says whether any drifted
    assert code == (DRIFT_FOUND if any(r["drifted"] for r in records) else 0)
    ours = {r["column"]: r for r in records if r["model"] == model and r["role"] == "feature"}
    assert set(ours) == {"x", "size", "colour", "grade"}
    assert ours["x"]["statistic"] == "K-S" and ours["colour"]["statistic"] == "χ²"
    assert ours["x"]["live_n"] == 600 and ours["x"]["drifted"] is False
    assert 0 <= ours["x"]["value"] < ours["x"]["threshold"]


def test_cli_drift_over_an_interval_judges_only_what_came_in_it(capsys):
    """Drifted traffic first; during the interval, fresh rows of the training distribution:
    judged since the workers started x has drifted, over the interval it has not. The URL is
    given as users type it, without a scheme."""
    import threading
    import time

    from .servers import wsgi_server

    model = "interval-" + uuid.uuid4().hex[:8]
    features, labels = mixed_data(600, seed=8)

    def app(environ, start_response):
        rows = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))["index"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"predictions": [labels[i] for i in rows]}).encode()]

    wrapped = BoxkiteMiddleware(app, baseline=mixed_baseline(), model=model)
    drifted = {**features, "x": [value + 3 for value in features["x"]]}

    def send(table: dict) -> None:
        client = Client(wrapped)
        for start in range(0, 600, 100):
            body = split_body(table, slice(start, start + 100))
            client.post("/invocations", data=body, content_type="application/json", buffered=True)

    with wsgi_server(wrapped) as url:
        send(drifted)
        address = url.removeprefix("http://")
        assert main(["drift", address]) == DRIFT_FOUND
        capsys.readouterr()
        codes = []
        judged = threading.Thread(
            target=lambda: codes.append(main(["drift", address, "--interval", "2s", "--json"]))
        )
        judged.start()
        time.sleep(0.5)  # after the first scrape
        send(features)
        judged.join(30)
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    x = next(r for r in records if r["model"] == model and r["column"] == "x")
    assert x["live_n"] == 600 and x["drifted"] is False
    assert codes == [DRIFT_FOUND if any(r["drifted"] for r in records) else 0]


def test_a_column_that_stops_arriving_drifts_on_its_missing_rate():
    """Judged on every row: no values at all is no reason to say nothing."""
    features, labels = mixed_data(600, seed=9)
    features["size"] = [None] * 600  # the client stopped sending it
    model, text = _scrape(features, labels)
    verdicts = {
        v.distribution.column: v
        for v in drift.judge(drift.distributions(text))
        if v.distribution.model == model and v.distribution.role == "feature"
    }
    assert verdicts["size"].drifted is True and verdicts["size"].reasons == ("missing",)
    assert verdicts["size"].missing_change == 1.0
    for name in ("x", "colour", "grade"):  # colour: 1 in 17 missing in training and live
        assert verdicts[name].drifted is False, name


def test_a_unit_error_shows_as_values_outside_the_training_range():
    """5 % of sizes multiplied by ten: above anything the baseline saw, which the K-S
    distance (about 0.03) is too blunt to see at n = 600."""
    features, labels = mixed_data(600, seed=10)
    features["size"] = [v * 10 if i % 20 == 0 else v for i, v in enumerate(features["size"])]
    model, text = _scrape(features, labels)
    verdicts = {
        v.distribution.column: v
        for v in drift.judge(drift.distributions(text))
        if v.distribution.model == model and v.distribution.role == "feature"
    }
    size = verdicts["size"]
    assert size.reasons == ("out of range",) and size.value < size.threshold
    assert 0.01 < size.out_of_range <= 30 / 600
    assert verdicts["x"].out_of_range == 0 and verdicts["x"].drifted is False
    # W1 sees how far those values went: about half a standard deviation, x next to nothing
    assert size.wasserstein > 0.3 > 0.1 > verdicts["x"].wasserstein
    assert verdicts["colour"].wasserstein is None  # categories have none
