"""Apps that gunicorn loads in the end-to-end tests (baseline path from the environment)."""

from __future__ import annotations

import json
import os

from fastapi import FastAPI, Request
from flask import Flask, jsonify, request

from boxkite_middleware import BoxkiteMiddleware

BASELINE = os.environ["BOXKITE_TEST_BASELINE"]


def _answer(document: dict) -> dict:
    return {"predictions": ["cat"] * len(document["data"]), "pid": os.getpid()}


wsgi = Flask(__name__)


@wsgi.post("/invocations")
def invocations():
    return jsonify(_answer(request.get_json()))


wsgi.wsgi_app = BoxkiteMiddleware(wsgi.wsgi_app, baseline=BASELINE, model="e2e")

asgi = FastAPI()


@asgi.post("/invocations")
async def asgi_invocations(request: Request):
    return _answer(json.loads(await request.body()))


asgi.add_middleware(BoxkiteMiddleware, baseline=BASELINE, model="e2e")
