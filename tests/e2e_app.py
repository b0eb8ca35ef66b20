"""Apps that gunicorn loads in the end-to-end tests (baseline path from the environment)."""

from __future__ import annotations

import json
import os

from fastapi import FastAPI, Request
from flask import Flask, jsonify, request
from prometheus_client import Counter

from boxkite_middleware import BoxkiteMiddleware

BASELINE = os.environ["BOXKITE_TEST_BASELINE"]


ANSWERED = Counter("e2e_answered", "The app's own metric, next to boxkite's in /metrics.")


def _answer(document: dict) -> dict:
    ANSWERED.inc()
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


def _echo_labels():
    """Answers each row's ``label`` and ``score`` columns as its predictions (two outputs), so
    that replaying the training data reproduces the baseline's outputs too."""
    document = request.get_json()
    label, score = (document["columns"].index(name) for name in ("label", "score"))
    return jsonify(predictions=[{"label": r[label], "score": r[score]} for r in document["data"]])


echo = Flask("echo")
echo.add_url_rule("/replay", "replay", _echo_labels, methods=["POST"])
echo.add_url_rule("/drift", "drift", _echo_labels, methods=["POST"])
# Two models in one app, told apart by path; the outer one serves /metrics for both.
echo.wsgi_app = BoxkiteMiddleware(
    BoxkiteMiddleware(
        echo.wsgi_app, baseline=BASELINE, model="replay", paths=["/replay"], metrics_path=None
    ),
    baseline=BASELINE,
    model="drift",
    paths=["/drift"],
)


def _echo_quality(model: str):
    """Answers each row's ``quality`` column as the predicted class."""
    document = request.get_json()
    quality = document["columns"].index("quality")
    return jsonify(predictions=[row[quality] for row in document["data"]])


WINE_MODELS = ("steady", "unchanged", "unit_error", "class_shift", "vanished")
wine = Flask("wine")
wine.add_url_rule("/<model>", "predict", _echo_quality, methods=["POST"])
# One model per path, the same baseline; the outermost serves /metrics for all of them.
for position, name in enumerate(WINE_MODELS, 1):
    wine.wsgi_app = BoxkiteMiddleware(
        wine.wsgi_app,
        baseline=BASELINE,
        model=name,
        paths=[f"/{name}"],
        metrics_path="/metrics" if position == len(WINE_MODELS) else None,
    )
