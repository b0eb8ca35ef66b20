"""An app with no prometheus_client metrics of its own, for the broken-directory tests.

prometheus_client's own metrics open their files when the app module is imported, so with an
unwritable directory an app that has any fails to boot whatever the middleware does.
"""

from __future__ import annotations

import json
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


async def asgi(scope, receive, send):
    """The same answer as a bare ASGI app (no framework, no metrics of its own)."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    rows = json.loads(body)["data"]
    answer = json.dumps({"predictions": ["cat"] * len(rows), "pid": os.getpid()}).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


asgi = BoxkiteMiddleware(asgi, baseline=os.environ["BOXKITE_TEST_BASELINE"], model="e2e")
