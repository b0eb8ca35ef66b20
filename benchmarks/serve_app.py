"""The Flask example for bench_gunicorn.py: as shipped, or with its one middleware line undone.

BOXKITE_BENCH=bare serves the example's own ``wsgi_app`` (what it was before
``app.wsgi_app = BoxkiteMiddleware(app.wsgi_app, ...)``); anything else, the example as is, or
with ``BOXKITE_BENCH_SAMPLE=0.1`` the same middleware recording that share of the requests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "flask_app"))

from app import HERE, app

if os.environ.get("BOXKITE_BENCH") == "bare":
    app.wsgi_app = app.wsgi_app.app
elif os.environ.get("BOXKITE_BENCH_SAMPLE"):  # the same middleware, recording a share
    from boxkite_middleware import BoxkiteMiddleware

    app.wsgi_app = BoxkiteMiddleware(
        app.wsgi_app.app,
        baseline=HERE / "histogram.prom",
        model="wine",
        sample=float(os.environ["BOXKITE_BENCH_SAMPLE"]),
    )
