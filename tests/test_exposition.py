"""/metrics: valid for promtool and the strict OpenMetrics parser, single and multi-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from werkzeug.test import Client

from boxkite_middleware import BoxkiteMiddleware, metrics_wsgi_app

from .helpers import ROOT_DIR, Scrape, mixed_baseline, scrape
from .multiprocess_scrape import HOSTILE_ROWS

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool")


def _promtool(text: str) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def _strict(openmetrics: str) -> dict:
    families = {family.name: family for family in om_parse(openmetrics)}
    for family in families.values():
        assert not any(s.name.endswith("_created") for s in family.samples), family.name
    return families


def _app():
    def app(environ, start_response):
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"predictions": ["cat", "dog", "cat", "cat", "dog", "emu"]}']

    return app


def _post_hostile(client: Client) -> None:
    body = json.dumps(
        {"columns": ["x", "colour"], "data": [[value[0], "red"] for value in HOSTILE_ROWS]}
    ).encode()
    response = client.post(
        "/invocations", data=body, content_type="application/json", buffered=True
    )
    assert response.status_code == 200


@needs_promtool
def test_single_process_scrape_is_valid_for_promtool_and_openmetrics():
    model = "valid-" + uuid.uuid4().hex[:6]
    client = Client(BoxkiteMiddleware(_app(), baseline=mixed_baseline(), model=model))
    _post_hostile(client)
    text = client.get("/metrics").get_data(as_text=True)
    _promtool(text)
    openmetrics = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert openmetrics.headers["Content-Type"].startswith("application/openmetrics-text")
    families = _strict(openmetrics.get_data(as_text=True))
    live = families["boxkite_feature_value"]
    x = [s for s in live.samples if s.labels.get("feature") == "x" and s.labels["model"] == model]
    assert not [s for s in x if s.name.endswith("_sum")]  # negative edges: no _sum
    assert [s.value for s in x if s.labels.get("le") == "+Inf"] == [4.0]  # None, "abc" missing
    size = [s for s in live.samples if s.labels.get("feature") == "size"]
    assert any(s.name.endswith("_sum") for s in size)
    scrape = Scrape(text)
    assert scrape.value("boxkite_feature_missing_total", model=model, feature="x") == 2
    assert (
        scrape.value("boxkite_inference_category_total", model=model, category="__other__") == 1
    )  # the unseen "emu"
    info = scrape.find("boxkite_baseline_info", model=model)
    assert len(info) == 1 and info[0].labels["baseline"] == mixed_baseline().identity


def test_every_le_is_spelled_the_same_in_file_baseline_and_live(tmp_path):
    from prometheus_client.utils import floatToGoString

    baseline = mixed_baseline()
    baseline.save(tmp_path / "b.prom")
    model = "le-" + uuid.uuid4().hex[:6]
    client = Client(BoxkiteMiddleware(_app(), baseline=tmp_path / "b.prom", model=model))
    scrape = Scrape(client.get("/metrics").get_data(as_text=True))
    expected = [floatToGoString(edge) for edge in baseline.features["x"].edges] + ["+Inf"]
    for name in ("boxkite_feature_value_bucket", "boxkite_feature_value_baseline_bucket"):
        spelled = [s.labels["le"] for s in scrape.find(name, model=model, feature="x")]
        assert spelled == expected
    in_file = [
        line.split('le="')[1].split('"')[0]
        for line in (tmp_path / "b.prom").read_text().splitlines()
        if line.startswith('boxkite_feature_value_baseline_bucket{feature="x"')
    ]
    assert in_file == expected


def test_standalone_metrics_app_and_gzip():
    client = Client(metrics_wsgi_app)
    response = client.get("/", headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    import gzip

    assert b"# TYPE" in gzip.decompress(response.get_data())
    assert client.post("/").status_code == 405


@needs_promtool
def _identity(sample) -> tuple:
    return sample.name, tuple(sorted(sample.labels.items())), sample.value


def test_the_fast_scrape_equals_prometheus_clients_encoding_in_one_process():
    from prometheus_client.exposition import generate_latest

    from boxkite_middleware.exposition import scrape_registry

    wrapped = BoxkiteMiddleware(lambda e, s: [], baseline=mixed_baseline(), model="same")
    assert wrapped  # series exist (at 0) from here on, with every other test's
    fast = scrape()
    general = Scrape(generate_latest(scrape_registry()).decode())

    def ours(result: Scrape) -> list[tuple]:  # the process's CPU time moves between the two
        return sorted(_identity(s) for s in result.samples if s.name.startswith("boxkite_"))

    assert ours(fast) == ours(general)
    assert {s.name for s in fast.samples} == {s.name for s in general.samples}
    assert fast.find("boxkite_feature_value_bucket", model="same")


def test_multiprocess_scrape_aggregates_workers_and_stays_valid(tmp_path):
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "tests.multiprocess_scrape"],
        cwd=ROOT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    scrapes = json.loads(result.stdout)  # with a just-created, still empty worker file present
    _promtool(scrapes["text"])
    families = _strict(scrapes["openmetrics"])
    scrape = Scrape(scrapes["text"])
    requests = 1 + 2 + 3  # three forked workers
    assert scrape.value("app_requests_total") == requests
    assert scrape.value("boxkite_requests_total", model="mp", reason="ok") == requests
    assert (
        scrape.value("boxkite_feature_value_bucket", model="mp", feature="x", le="+Inf")
        == 4 * requests
    )
    assert scrape.value("boxkite_feature_missing_total", model="mp", feature="x") == 2 * requests
    assert (
        scrape.value("boxkite_inference_category_total", model="mp", category="cat") == 3 * requests
    )
    # Baselines are served once, never summed over the workers' files.
    baseline = mixed_baseline()
    x = baseline.features["x"]
    assert scrape.value(
        "boxkite_feature_value_baseline_bucket", model="mp", feature="x", le="+Inf"
    ) == sum(x.counts)
    assert len(families["boxkite_feature_value"].samples) > 0
    assert scrapes["text"].count("# HELP boxkite_feature_value ") == 1
    general = Scrape(scrapes["general"])  # what prometheus_client's encoder makes of it all
    assert sorted(map(_identity, general.samples)) == sorted(map(_identity, scrape.samples))
    selected = Scrape(scrapes["selected"])  # name[] selects in multi-process mode too
    assert {s.name for s in selected.samples} == {"boxkite_requests_total"}
    assert selected.value("boxkite_requests_total", model="mp", reason="ok") == requests
    # Baselines are published once as documents, never in the summed counting files.
    published = [name for name in os.listdir(tmp_path) if "baseline" in name]
    assert len(published) == 1 and published[0].endswith(".json"), published


def test_a_vanished_directory_never_reaches_the_app(tmp_path):
    """A worker that cannot make its files (the directory was removed) still passes every
    request through unchanged, and logs the failure once with its traceback."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "tests.broken_store"],
        cwd=ROOT_DIR,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    bare, wrapped = json.loads(result.stdout)
    assert bare == wrapped and len(bare) == 4
    assert result.stderr.count("Traceback") == 1, result.stderr
    assert "later failures are logged at debug level" in result.stderr
