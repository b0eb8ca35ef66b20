"""Run as a script: the multi-process directory vanishes, then a forked worker serves requests.

python -m tests.broken_store   (PROMETHEUS_MULTIPROC_DIR must be set; it is removed)

The forked child must lay out new files and cannot: the middleware must still pass every
request through unchanged. Prints, as JSON, what the bare and the wrapped app answered.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys

from boxkite_middleware import BoxkiteMiddleware

from .helpers import mixed_baseline, split_body


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"predictions": ["cat"], "echo": %d}' % len(body)]


def call(target, body: bytes, content_type: str) -> list:
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/invocations",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer.update(status=status, headers=headers)

    iterable = target(environ, start_response)
    chunks = [chunk.decode() for chunk in iterable]
    iterable.close() if hasattr(iterable, "close") else None
    return [answer["status"], answer["headers"], chunks]


def main() -> None:
    wrapped = BoxkiteMiddleware(app, baseline=mixed_baseline(), paths=["/invocations"])
    requests = [(split_body({"x": [1.0]}), "application/json"), (b"a=1", "text/plain")] * 2
    call(wrapped, *requests[0])  # works: the files exist
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    child = os.fork()
    if child == 0:
        answers = [[call(target, *request) for request in requests] for target in (app, wrapped)]
        print(json.dumps(answers), flush=True)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
