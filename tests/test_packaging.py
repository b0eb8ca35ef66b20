"""The built wheel, installed with no extras into a fresh environment, serves a plain WSGI app."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from .helpers import ROOT_DIR, Scrape, free_port, mixed_baseline, split_body, wait_for

pytestmark = pytest.mark.slow

PLAIN_APP = textwrap.dedent(
    """
    import sys
    from wsgiref.simple_server import make_server

    from boxkite_middleware import BoxkiteMiddleware

    def app(environ, start_response):
        size = int(environ.get("CONTENT_LENGTH") or 0)
        environ["wsgi.input"].read(size)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"predictions": ["cat"]}']

    wrapped = BoxkiteMiddleware(app, baseline=sys.argv[1], model="plain")
    make_server("127.0.0.1", int(sys.argv[2]), wrapped).serve_forever()
    """
)


def test_the_wheel_serves_a_plain_wsgi_app_without_any_extra(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT_DIR)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("boxkite_middleware-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)], check=True)
    installed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    ).stdout.lower()
    for absent in ("werkzeug", "starlette", "orjson", "flask", "gunicorn"):
        assert absent not in installed, installed
    typed = subprocess.run(
        [python, "-c", "import importlib.resources as r; print(r.files('boxkite_middleware'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert (tmp_path / typed / "py.typed").exists()
    baseline = tmp_path / "histogram.prom"
    mixed_baseline().save(baseline)
    port = free_port()
    server = subprocess.Popen(
        [python, "-c", PLAIN_APP, str(baseline), str(port)], cwd=tmp_path, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/metrics")
        request = urllib.request.Request(
            f"{url}/invocations",
            data=split_body({"x": [1.0]}),
            headers={"Content-Type": "application/json"},
        )
        assert urllib.request.urlopen(request, timeout=5).read() == b'{"predictions": ["cat"]}'
        deadline = time.monotonic() + 5
        while True:
            scrape = Scrape(urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode())
            if scrape.value("boxkite_requests_total", model="plain", reason="ok") == 1:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert scrape.find("boxkite_feature_value_baseline_bucket", model="plain", feature="x")
    finally:
        server.kill()
        server.wait()
