"""Django (ASGI) with the receipts endpoint under /receipts, all configured in this file.

Needs the extra `server` and Django: `pip install 'cascade-notify[server]' django`.

    APP_WEBHOOK_URL=https://app.example.com/hooks/messages \
    APP_WEBHOOK_SECRET=whsec_... \
    uvicorn examples.django_asgi:application

Django's ASGI handler has no mounts and refuses lifespan events, so a small dispatcher
in front sends /receipts/... and lifespan (which starts and stops the notifier) to the
receipts app, /support/... to the support page, and everything else to Django. In a
real project the settings live in settings.py and the dispatcher in asgi.py.

The support page (extra `support`) signs staff in with Django's own signed cookie: POST
/login with `name` and `password` of an account in STAFF_ACCOUNTS (`name:role:password,...`,
role `agent` or `operator`) sets it; the page's `auth` reads it back with Django's cookie
signer. With `django.contrib.auth`, read `request.user` from the session instead (see
docs/support.md).
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
from django.core import signing  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

from cascade_notify import Notifier  # noqa: E402
from cascade_notify.support import Grant, SupportRequest  # noqa: E402
from cascade_notify.webhooks import asgi_app  # noqa: E402

POLICY = os.environ.get("CASCADE_POLICY", str(Path(__file__).with_name("app_channel.yaml")))
PREFIX = "/receipts"
SUPPORT = "/support"
STAFF_COOKIE, STAFF_SALT = "staff", "cascade-notify support"
SIGNED_IN_FOR = 8 * 3600


async def home(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"app": "django", "receipts": f"{PREFIX}/{{provider}}"})


def _accounts() -> dict[str, tuple[str, str]]:
    found = {}
    for account in os.environ.get("STAFF_ACCOUNTS", "").split(","):
        name, role, password = ([*account.split(":", 2), "", ""])[:3]
        if password:
            found[name] = (role, password)
    return found


async def login(request: HttpRequest) -> HttpResponse:
    """Django's side of the sign-in: a signed cookie naming the staff member and role."""
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST"})
    name = request.POST.get("name", "")
    role, password = _accounts().get(name, ("", ""))
    given = request.POST.get("password", "")
    if not password or not signing.constant_time_compare(given, password):
        return HttpResponse("wrong name or password", status=403)
    answer = HttpResponse(status=303, headers={"Location": SUPPORT + "/"})
    answer.set_signed_cookie(STAFF_COOKIE, f"{name}:{role}", salt=STAFF_SALT,
                             max_age=SIGNED_IN_FOR, httponly=True, samesite="Lax")  # fmt: skip
    return answer


def support_auth(request: SupportRequest) -> Grant | None:
    """The support page reads Django's signed cookie back through Django's own
    `get_signed_cookie` (its signer, its salt, its expiry)."""
    cookies = HttpRequest()
    cookies.COOKIES = dict(request.cookies)
    found = cookies.get_signed_cookie(
        STAFF_COOKIE, default=None, salt=STAFF_SALT, max_age=SIGNED_IN_FOR
    )
    if found is None:
        return None
    name, _, role = found.partition(":")
    return Grant(role=role, user=name)  # type: ignore[arg-type]


urlpatterns = [path("", home), path("login", login)]

notifier = Notifier.from_yaml(POLICY)
receipts = asgi_app(notifier, prefix=PREFIX)
support = notifier.support_app(auth=support_auth)
django_app = get_asgi_application()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI entry point: receipts and lifespan to cascade_notify, /support/ to the
    support page, the rest to Django."""
    where = scope.get("path", "")
    if scope["type"] == "lifespan" or where.startswith(PREFIX + "/"):
        await receipts(scope, receive, send)
    elif where.startswith(SUPPORT + "/"):
        await support({**scope, "root_path": scope.get("root_path", "") + SUPPORT}, receive, send)
    else:
        await django_app(scope, receive, send)
