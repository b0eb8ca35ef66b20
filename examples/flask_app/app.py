"""The wine-quality model served by Flask, watched by boxkite-middleware (one line).

gunicorn -c examples/flask_app/gunicorn.conf.py --chdir examples/flask_app app:app
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from flask import Flask, jsonify, request

from boxkite_middleware import BoxkiteMiddleware

HERE = Path(__file__).resolve().parent
trained = pickle.loads((HERE / "model.pkl").read_bytes())

app = Flask(__name__)


@app.post("/invocations")
def invocations():
    """pandas-split JSON (MLflow's format) in, ``{"predictions": [...]}`` out."""
    payload = request.get_json()
    columns = payload["columns"]
    table = np.array(payload["data"], dtype=float)
    ordered = table[:, [columns.index(name) for name in trained["features"]]]
    return jsonify(predictions=trained["model"].predict(ordered).round(3).tolist())


app.wsgi_app = BoxkiteMiddleware(app.wsgi_app, baseline=HERE / "histogram.prom", model="wine")
