"""The end-to-end app of `e2e_app` written with Django, Litestar and Quart, each wrapped as
its documentation tells users to (baseline path from the environment)."""

from __future__ import annotations

import json

import django
from django.conf import settings

from boxkite_middleware import BoxkiteMiddleware

from .e2e_app import BASELINE, _answer

settings.configure(
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1"],
    SECRET_KEY="only-for-tests",
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402  (after settings)
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def invocations(request: HttpRequest) -> JsonResponse:
    return JsonResponse(_answer(json.loads(request.body)))


urlpatterns = [path("invocations", invocations)]

django_wsgi = BoxkiteMiddleware(get_wsgi_application(), baseline=BASELINE, model="e2e")
django_asgi = BoxkiteMiddleware(get_asgi_application(), baseline=BASELINE, model="e2e")


def _litestar():
    from litestar import Litestar, Request, post

    @post("/invocations", status_code=200)
    async def litestar_invocations(request: Request) -> dict:
        return _answer(json.loads(await request.body()))

    # Outermost: Litestar's own middleware setting runs only on matched routes (no /metrics).
    return BoxkiteMiddleware(Litestar([litestar_invocations]), baseline=BASELINE, model="e2e")


def _quart():
    from quart import Quart, request

    app = Quart(__name__)

    @app.post("/invocations")
    async def quart_invocations():
        return _answer(json.loads(await request.get_data()))

    app.asgi_app = BoxkiteMiddleware(app.asgi_app, baseline=BASELINE, model="e2e")
    return app


litestar = _litestar()
quart = _quart()
