"""A Flask app whose middleware logs its predictions (baseline path from the environment)."""

import os

from flask import Flask, jsonify, request

from boxkite_middleware import BoxkiteMiddleware

from .e2e_app import BASELINE

app = Flask(__name__)


@app.post("/invocations")
def invocations():
    document = request.get_json()
    return jsonify(predictions=["cat"] * len(document["data"]), pid=os.getpid())


app.wsgi_app = BoxkiteMiddleware(
    app.wsgi_app, baseline=BASELINE, model="logged", log_predictions=True
)
