"""See data and prediction drift of a model server in Prometheus, with one middleware.

Public names are loaded lazily (PEP 562): prometheus_client decides between in-memory and
mmap storage when it is first imported, so importing this package must not import it before
``PROMETHEUS_MULTIPROC_DIR`` is set.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Baseline": "baseline",
    "BatchRecorder": "batch",
    "BaselineError": "baseline",
    "BoxkiteMiddleware": "middleware",
    "WSGIMiddleware": "wsgi",
    "ASGIMiddleware": "asgi",
    "metrics_wsgi_app": "exposition",
    "metrics_asgi_app": "exposition",
    "worker_started": "store",
}

__all__ = [
    "ASGIMiddleware",
    "Baseline",
    "BaselineError",
    "BatchRecorder",
    "BoxkiteMiddleware",
    "WSGIMiddleware",
    "__version__",
    "metrics_asgi_app",
    "metrics_wsgi_app",
    "worker_started",
]

if TYPE_CHECKING:
    from .asgi import ASGIMiddleware
    from .baseline import Baseline, BaselineError
    from .batch import BatchRecorder
    from .exposition import metrics_asgi_app, metrics_wsgi_app
    from .middleware import BoxkiteMiddleware
    from .store import worker_started
    from .wsgi import WSGIMiddleware


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
