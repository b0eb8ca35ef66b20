"""`BoxkiteMiddleware`: one name for WSGI and ASGI apps, decided by what it wraps."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .baseline import Baseline
    from .monitor import Options


def is_asgi(app: Any) -> bool:
    """uvicorn's rule: a coroutine function, or an object whose ``__call__`` is one."""
    return inspect.iscoroutinefunction(app) or (
        callable(app) and inspect.iscoroutinefunction(app.__call__)
    )


class BoxkiteMiddleware:
    """Record drift of the wrapped app's predictions and serve ``/metrics``.

    - Flask / WSGI: ``app.wsgi_app = BoxkiteMiddleware(app.wsgi_app, baseline="h.prom")``
      (or ``BoxkiteMiddleware(app, ...)``: an object with ``wsgi_app`` has that wrapped).
    - FastAPI / Starlette / ASGI: ``app.add_middleware(BoxkiteMiddleware, baseline="h.prom")``.

    Builds a `WSGIMiddleware` or an `ASGIMiddleware`; use those directly for apps this
    detection cannot decide. ``baseline`` is a path or a `Baseline`; the keyword-only options
    are `monitor.Options`, each described in docs/reference.md.
    """

    def __new__(
        cls,
        app: Any,
        baseline: Baseline | str | Path | None = None,
        **options: Unpack[Options],
    ) -> Any:
        if not hasattr(app, "wsgi_app") and is_asgi(app):
            from .asgi import ASGIMiddleware

            return ASGIMiddleware(app, baseline, **options)
        from .wsgi import WSGIMiddleware

        return WSGIMiddleware(app, baseline, **options)
