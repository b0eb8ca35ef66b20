"""An app with no prometheus_client metrics of its own, for the broken-directory tests.

prometheus_client's own metrics open their files when the app module is imported, so with an
unwritable directory an app that has any fails to boot whatever the middleware does.
"""

from __future__ import annotations

import os

from flask import Flask, jsonify, request

from boxkite_middleware import BoxkiteMiddleware

wsgi = Flask(__name__)


@wsgi.post("/invocations")
def invocations():
    rows = request.get_json()["data"]
    return jsonify(predictions=["cat"] * len(rows), pid=os.getpid())


wsgi.wsgi_app = BoxkiteMiddleware(
    wsgi.wsgi_app, baseline=os.environ["BOXKITE_TEST_BASELINE"], model="e2e"
)
