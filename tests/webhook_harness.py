"""Shared by the webhook tests: uvicorn on loopback in-process, secrets, a `webhook`
provider and send request to test with, and a company's app.

`CompanyApp` plays the company's side of the `app` channel: it verifies what we send
with the reference `standardwebhooks` package, answers 200, and reports receipts back,
signed with that package, per recipient as `script` says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from standardwebhooks import Webhook

from cascade_notify.clock import Clock
from cascade_notify.models import Message, Recipient
from cascade_notify.providers.base import SendRequest
from cascade_notify.providers.webhook import WebhookProvider, WebhookSettings
from cascade_notify.testing import FakeClock

URL = "http://127.0.0.1:9/inbox"  # nothing listens there
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
NEW_SECRET = "whsec_" + base64.b64encode(bytes(range(50, 90))).decode()

Scope = dict[str, Any]


class _InProcessServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # the test process keeps its own signal handlers
        yield


@contextlib.asynccontextmanager
async def serve(app: Any, *, lifespan: str = "off") -> AsyncIterator[str]:
    """Run `app` under uvicorn on 127.0.0.1 on a free port; yield its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan=lifespan,
        ws="none",
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    server = _InProcessServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


def sign(secret: str, webhook_id: str, body: bytes, ts: float) -> dict[str, str]:
    """Standard Webhooks headers made by the reference package."""
    stamp = datetime.fromtimestamp(int(ts), UTC)
    signature = Webhook(secret).sign(webhook_id, stamp, body.decode())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(ts)),
        "webhook-signature": signature,
    }


def receipt(message_id: str, status: str, **extra: Any) -> bytes:
    return json.dumps({"message_id": message_id, "status": status, **extra}).encode()


class CompanyApp:
    """The company's own backend: takes our messages, reports receipts back.

    `script[recipient_id]` is what it reports: a list of statuses, sent one by one
    after answering, or `"early"` to report `delivered` before answering (the receipt
    arrives before the send's answer) and `read` after. A recipient not in the script
    never hears of it (no receipt).
    """

    def __init__(self, secret: str, clock: Clock) -> None:
        self.hook = Webhook(secret)
        self.secret = secret
        self.clock = clock
        self.receipts_url = ""
        self.script: dict[str, Any] = {}
        self.inbox: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.reported: list[tuple[str, str, int]] = []
        self.answer = 200
        self._tasks: set[asyncio.Task[None]] = set()
        self._client = httpx.AsyncClient(timeout=5.0)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        payload = self.hook.verify(body, headers)  # the reference package checks our signature
        self.inbox.append(payload)
        self.headers.append(headers)
        plan = self.script.get(payload["recipient"]["id"], [])
        if plan == "early":
            await self.report(payload["message_id"], "delivered")
            plan = ["read"]
        answered = asyncio.Event()
        if plan:
            # registered before answering, so whoever saw the answer can wait for the reports
            task = asyncio.create_task(
                self._report_all(payload["message_id"], list(plan), answered)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await send(
            {
                "type": "http.response.start",
                "status": self.answer,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"ok":true}'})
        answered.set()

    async def _report_all(
        self, message_id: str, statuses: list[str], answered: asyncio.Event
    ) -> None:
        await answered.wait()
        for status in statuses:
            await self.report(message_id, status)

    async def report(self, message_id: str, status: str) -> int:
        """POST one signed receipt to our endpoint; return the answer's status code."""
        body = receipt(
            message_id, status, timestamp=datetime.fromtimestamp(self.clock.now(), UTC).isoformat()
        )
        webhook_id = f"rcpt_{message_id}_{status}"
        headers = sign(self.secret, webhook_id, body, time.time())  # signatures: wall time
        answer = await self._client.post(self.receipts_url, content=body, headers=headers)
        self.reported.append((message_id, status, answer.status_code))
        return answer.status_code

    async def settle(self) -> None:
        """Wait (real time) until every report started has been answered."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))

    async def aclose(self) -> None:
        await self.settle()
        await self._client.aclose()


def settings(**values: Any) -> WebhookSettings:
    """`type: webhook` settings for `URL` and `SECRET`, with `values` on top."""
    return WebhookSettings.model_validate({"url": URL, "secret": SECRET, **values})


def provider(
    clock: FakeClock, client: httpx.AsyncClient | None = None, **values: Any
) -> WebhookProvider:
    """A `webhook` provider named `app` on `clock` (and `client`, if given)."""
    return WebhookProvider("app", settings(**values), clock=clock, client=client)


def request(attempt_id: str = "att_1", **message: Any) -> SendRequest:
    """What the engine hands `send()` for recipient `u1` on `app`."""
    recipient = Recipient(id="u1", app="device-1", locale="ru")
    text = Message(text="Your parcel has arrived.", **message)
    return SendRequest(
        attempt_id=attempt_id,
        delivery_id="del_1",
        channel="app",
        address="device-1",
        recipient=recipient,
        message=text,
        overrides=WebhookProvider.check_overrides(text.overrides.get("app", {}), channel="app"),
    )


Handler = Callable[[httpx.Request], httpx.Response]


async def send_with(clock: FakeClock, handler: Handler, **values: Any) -> Any:
    """Send one request through a MockTransport answering with `handler`."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        return await provider(clock, client, **values).send(request())
