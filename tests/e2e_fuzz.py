"""The fuzz campaign's app under gunicorn: one echo app, bare at /bare and wrapped elsewhere.

The echo answers with a digest of exactly what it read (method, path, content type, every
byte), in a content type and status chosen by the request, so any byte the middleware changed
on the way in or out shows as a different answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib

from werkzeug.middleware.dispatcher import DispatcherMiddleware

from boxkite_middleware import BoxkiteMiddleware


def echo(environ, start_response):
    size = environ.get("CONTENT_LENGTH") or ""
    body = environ["wsgi.input"].read(int(size)) if size.isdigit() else environ["wsgi.input"].read()
    digest = hashlib.sha256(body).hexdigest()
    mode = environ.get("HTTP_X_ANSWER", "json")
    answer = json.dumps(
        {"predictions": [len(body) % 7, "cat"], "read": digest, "type": environ.get("CONTENT_TYPE")}
    ).encode()
    status = "500 Internal Server Error" if mode == "error" else "200 OK"
    headers = [("Content-Type", "text/plain" if mode == "text" else "application/json")]
    if mode == "deflate":
        answer = zlib.compress(answer)
        headers.append(("Content-Encoding", "deflate"))
    start_response(status, [*headers, ("Content-Length", str(len(answer)))])
    if mode == "chunks":
        return [answer[i : i + 7] for i in range(0, len(answer), 7)]
    return [answer]


app = DispatcherMiddleware(
    BoxkiteMiddleware(echo, baseline=os.environ["BOXKITE_TEST_BASELINE"], model="fuzz"),
    {"/bare": echo},
)
