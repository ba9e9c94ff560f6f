"""The receipts endpoint mounted in a FastAPI app, beside routes that send and look.

Needs the extra `server` and FastAPI: `pip install 'cascade-notify[server]' fastapi`.

    APP_WEBHOOK_URL=https://app.example.com/hooks/messages \
    APP_WEBHOOK_SECRET=whsec_... \
    uvicorn examples.fastapi_app:app

One host, several web processes and a worker beside them, all on the policy's SQLite
file (the policy names no store: `cascade.db` in the working directory):

    CASCADE_WORKER=off uvicorn examples.fastapi_app:app --workers 2
    cascade-notify worker --policy examples/app_channel.yaml

With CASCADE_WORKER=off the web processes only send (and take receipts); the
`cascade-notify worker` advances the cascades. Without it each web process also works.

Receipts: POST /receipts/{provider}; health: GET /receipts/-/health.
POST /notify sends; GET /notify/{delivery_id} says how the delivery stands.

The support page is at /support/ (needs the extra `support`), behind this app's own
staff sign-in: `Authorization: Bearer TOKEN` of an account in STAFF_TOKENS, written
`name:role:token,...` (role `agent` or `operator`), the same check the app's own
`current_staff` dependency makes (GET /staff/me).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel

from cascade_notify import DeliveryNotFound, Message, Notifier, Recipient
from cascade_notify.support import Grant, SupportRequest
from cascade_notify.webhooks import asgi_app

POLICY = os.environ.get("CASCADE_POLICY", str(Path(__file__).with_name("app_channel.yaml")))


class Notice(BaseModel):
    user_id: str
    app: str | None = None
    sms: str | None = None
    text: str


def staff_from(authorization: str | None) -> Grant | None:
    """This app's staff sign-in: a bearer token of an account in STAFF_TOKENS."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    for account in os.environ.get("STAFF_TOKENS", "").split(","):
        name, role, known = ([*account.split(":", 2), "", ""])[:3]
        if known and secrets.compare_digest(token.encode(), known.encode()):
            return Grant(role=role, user=name)  # type: ignore[arg-type]
    return None


def current_staff(authorization: str | None = Header(default=None)) -> Grant:
    """The FastAPI dependency the app's own staff routes use."""
    staff = staff_from(authorization)
    if staff is None:
        raise HTTPException(401, "staff only", headers={"WWW-Authenticate": "Bearer"})
    return staff


def support_auth(request: SupportRequest) -> Grant | None:
    """The support page signs in exactly as the app's staff routes do."""
    return staff_from(request.headers.get("authorization"))


def create_app(notifier: Notifier) -> FastAPI:
    """A FastAPI app that sends through `notifier` and takes its receipts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # a mount gets no lifespan events: the host app starts and stops the notifier
        async with notifier:
            yield

    app = FastAPI(lifespan=lifespan)
    # the mount point is the prefix, so the receipts app itself takes prefix=""
    app.mount("/receipts", asgi_app(notifier, prefix=""))
    app.mount("/support", notifier.support_app(auth=support_auth))

    @app.get("/staff/me")
    async def me(staff: Grant = Depends(current_staff)) -> dict[str, str]:
        return {"user": staff.user, "role": staff.role}

    @app.post("/notify")
    async def notify(notice: Notice) -> dict[str, str | int]:
        recipient = Recipient(id=notice.user_id, app=notice.app, sms=notice.sms)
        delivery = await notifier.send(recipient, Message(text=notice.text))
        # pid: which web process answered (several serve under `uvicorn --workers N`)
        return {"delivery_id": delivery.id, "pid": os.getpid()}

    @app.get("/notify/{delivery_id}")
    async def status(delivery_id: str) -> dict[str, str | None]:
        try:
            delivery = await notifier.get(delivery_id)
        except DeliveryNotFound:
            raise HTTPException(404, "no such delivery") from None
        return {"status": delivery.status.value, "channel": delivery.channel}

    return app


app = create_app(Notifier.from_yaml(POLICY, worker=os.environ.get("CASCADE_WORKER", "on") != "off"))
