"""The receipts endpoint mounted in a Starlette app.

Needs the extra `server` and Starlette: `pip install 'cascade-notify[server]' starlette`.

    APP_WEBHOOK_URL=https://app.example.com/hooks/messages \
    APP_WEBHOOK_SECRET=whsec_... \
    uvicorn examples.starlette_app:app

Receipts: POST /receipts/{provider}; health: GET /receipts/-/health.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from cascade_notify import Notifier
from cascade_notify.webhooks import asgi_app

POLICY = os.environ.get("CASCADE_POLICY", str(Path(__file__).with_name("app_channel.yaml")))


def create_app(notifier: Notifier) -> Starlette:
    """A Starlette app whose /receipts mount takes `notifier`'s receipts."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # a Mount gets no lifespan events: the host app starts and stops the notifier
        async with notifier:
            yield

    async def home(request: Request) -> JSONResponse:
        return JSONResponse({"receipts": "/receipts/{provider}"})

    return Starlette(
        routes=[Route("/", home), Mount("/receipts", app=asgi_app(notifier, prefix=""))],
        lifespan=lifespan,
    )


app = create_app(Notifier.from_yaml(POLICY))
