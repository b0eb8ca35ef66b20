"""The Flask example for bench_gunicorn.py: as shipped, or with its one middleware line undone.

BOXKITE_BENCH=bare serves the example's own ``wsgi_app`` (what it was before
``app.wsgi_app = BoxkiteMiddleware(app.wsgi_app, ...)``); anything else, the example as is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples" / "flask_app"))

from app import app

if os.environ.get("BOXKITE_BENCH") == "bare":
    app.wsgi_app = app.wsgi_app.app
