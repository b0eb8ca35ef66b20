"""The drift report page: built from the same verdicts as the CLI, served next to /metrics,
and read back from a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from html.parser import HTMLParser

import pytest
from werkzeug.test import Client

from boxkite_middleware import BoxkiteMiddleware, drift
from boxkite_middleware.cli import DRIFT_FOUND, main
from boxkite_middleware.report import page

from .helpers import mixed_baseline, mixed_data, split_body


def _served(features: dict, labels: list, **options) -> tuple[str, Client]:
    """A WSGI model answering the labels of the rows it is sent, fed ``features``."""
    model = "report-" + uuid.uuid4().hex[:8]

    def app(environ, start_response):
        if environ["REQUEST_METHOD"] != "POST":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        rows = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))["index"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"predictions": [labels[i] for i in rows]}).encode()]

    client = Client(BoxkiteMiddleware(app, baseline=mixed_baseline(), model=model, **options))
    for start in range(0, len(labels), 100):
        body = split_body(features, slice(start, start + 100))
        client.post("/invocations", data=body, content_type="application/json", buffered=True)
    return model, client


class _Text(HTMLParser):
    """The page's visible text, and every tag it opens."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.add(tag)

    def handle_data(self, data) -> None:
        self.text.append(data)


def _drifted() -> tuple[dict, list]:
    features, labels = mixed_data(600, seed=21)
    features["x"] = [value + 3 for value in features["x"]]
    features["colour"] = [
        "<script>alert(1)</script>" if i % 4 == 0 else c for i, c in enumerate(features["colour"])
    ]
    return features, labels


def test_the_page_shows_every_column_worst_first_and_escapes_what_clients_sent():
    model, client = _served(*_drifted())
    text = client.get("/metrics").get_data(as_text=True)
    verdicts = [v for v in drift.judge(drift.distributions(text)) if v.distribution.model == model]
    html = page(verdicts, source="a test", window="since the start")
    parsed = _Text()
    parsed.feed(html)
    assert parsed.tags.isdisjoint({"script", "iframe", "img", "link"})  # self-contained
    headings = re.findall(r"<h2>(.*?) <span", html)
    assert set(headings[:2]) == {"x", "colour"}  # the drifted ones first
    assert set(headings) == {"x", "size", "colour", "grade", "output 0"}
    for name in ("x", "colour"):
        assert re.search(rf"<h2>{name} <span class=\"verdict\">DRIFT \(distribution", html), name
    assert "&lt;script&gt;" not in html  # an unseen category is __other__, never shown raw
    assert "__other__" in html


def test_the_middleware_serves_the_page_next_to_metrics():
    features, labels = mixed_data(600, seed=22)
    model, client = _served(features, labels)
    answer = client.get("/drift")
    assert answer.status_code == 200 and answer.mimetype == "text/html"
    body = answer.get_data(as_text=True)
    assert f"{model} (baseline {mixed_baseline().identity})" in body
    _, hidden = _served(features, labels, report_path=None)
    assert hidden.get("/drift").status_code == 404  # the app's own answer


def test_cli_report_from_a_metrics_url(tmp_path):
    from .servers import wsgi_server

    model, client = _served(*_drifted())
    output = tmp_path / "report.html"
    with wsgi_server(client.application) as url:
        code = main(["report", url.removeprefix("http://"), "-o", str(output)])
    assert code == DRIFT_FOUND
    html = output.read_text()
    assert model in html and "DRIFT (distribution)" in html


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (scripts/setup.sh installs it as root)")
def test_a_real_browser_renders_the_page(tmp_path):
    """Headless chromium: the page renders without console errors, a screenshot is taken,
    and the text the browser laid out names every column with its verdict."""
    _, client = _served(*_drifted())
    report = tmp_path / "report.html"
    report.write_bytes(client.get("/drift").get_data())
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    browser += [f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "report.png"
    taken = subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=900,1400", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", taken.stderr[-2000:]
    assert shot.stat().st_size > 20_000  # bars and text, not a blank page
    assert not re.search(r"CONSOLE|Uncaught", taken.stderr), taken.stderr[-2000:]
    dom = subprocess.run(
        [*browser, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    parsed = _Text()
    parsed.feed(dom)
    text = " ".join(" ".join(parsed.text).split())
    for column, verdict in (("x", "DRIFT"), ("colour", "DRIFT"), ("size", "ok"), ("grade", "ok")):
        assert re.search(rf"\b{column} {verdict}", text), (column, text[:2000])
