"""The Flask example's model served bare or wrapped, for bench_gunicorn.py.

BOXKITE_BENCH=bare|wrapped selects the variant: the same app, the same model.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from flask import Flask, jsonify, request

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flask_app"
trained = pickle.loads((EXAMPLE / "model.pkl").read_bytes())
app = Flask(__name__)


@app.post("/invocations")
def invocations():
    payload = request.get_json()
    columns = payload["columns"]
    table = np.array(payload["data"], dtype=float)
    ordered = table[:, [columns.index(name) for name in trained["features"]]]
    return jsonify(predictions=trained["model"].predict(ordered).round(3).tolist())


if os.environ.get("BOXKITE_BENCH") == "wrapped":
    from boxkite_middleware import BoxkiteMiddleware

    app.wsgi_app = BoxkiteMiddleware(app.wsgi_app, baseline=EXAMPLE / "histogram.prom")
