"""Django (ASGI) with the receipts endpoint under /receipts, all configured in this file.

Needs the extra `server` and Django: `pip install 'cascade-notify[server]' django`.

    APP_WEBHOOK_URL=https://app.example.com/hooks/messages \
    APP_WEBHOOK_SECRET=whsec_... \
    uvicorn examples.django_asgi:application

Django's ASGI handler has no mounts and refuses lifespan events, so a small dispatcher
in front sends /receipts/... and lifespan (which starts and stops the notifier) to the
receipts app, and everything else to Django. In a real project the settings live in
settings.py and the dispatcher in asgi.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret"),
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
)
django.setup()

# Django's own modules may be imported only once it is configured
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from cascade_notify import Notifier  # noqa: E402
from cascade_notify.webhooks import asgi_app  # noqa: E402

POLICY = os.environ.get("CASCADE_POLICY", str(Path(__file__).with_name("app_channel.yaml")))
PREFIX = "/receipts"


async def home(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"app": "django", "receipts": f"{PREFIX}/{{provider}}"})


urlpatterns = [path("", home)]

notifier = Notifier.from_yaml(POLICY)
receipts = asgi_app(notifier, prefix=PREFIX)
django_app = get_asgi_application()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI entry point: receipts and lifespan to cascade_notify, the rest to Django."""
    if scope["type"] == "lifespan" or scope.get("path", "").startswith(PREFIX + "/"):
        await receipts(scope, receive, send)
    else:
        await django_app(scope, receive, send)
