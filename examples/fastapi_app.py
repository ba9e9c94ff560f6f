"""The receipts endpoint mounted in a FastAPI app, beside a route that sends.

    APP_WEBHOOK_URL=https://app.example.com/hooks/messages \
    APP_WEBHOOK_SECRET=whsec_... \
    uvicorn examples.fastapi_app:app

Receipts: POST /receipts/{provider}; health: GET /receipts/-/health.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel

from cascade_notify import Message, Notifier, Recipient
from cascade_notify.webhooks import asgi_app

POLICY = os.environ.get("CASCADE_POLICY", str(Path(__file__).with_name("app_channel.yaml")))


class Notice(BaseModel):
    user_id: str
    app: str | None = None
    sms: str | None = None
    text: str


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

    @app.post("/notify")
    async def notify(notice: Notice) -> dict[str, str]:
        recipient = Recipient(id=notice.user_id, app=notice.app, sms=notice.sms)
        delivery = await notifier.send(recipient, Message(text=notice.text))
        return {"delivery_id": delivery.id}

    return app


app = create_app(Notifier.from_yaml(POLICY))
