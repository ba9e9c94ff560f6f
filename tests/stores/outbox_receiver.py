"""A loopback receiver of outcome webhooks: aiohttp on 127.0.0.1, answering 503 to the
first `fail_first` requests (a backend restarting), then 200; it keeps every request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Arrival:
    headers: dict[str, str]
    body: bytes
    status: int  # what we answered

    @property
    def payload(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    fail_first: int = 0
    hang_first: float = 0.0  # the very first request is answered (200) this late, in seconds
    arrivals: list[Arrival] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 503 if len(self.arrivals) < self.fail_first else 200
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.arrivals.append(Arrival(headers, body, status))
        if len(self.arrivals) == 1 and self.hang_first:
            await asyncio.sleep(self.hang_first)
        return web.Response(status=status)

    def accepted(self) -> list[Arrival]:
        """The requests answered 2xx, in the order they came."""
        return [a for a in self.arrivals if a.status == 200]


@asynccontextmanager
async def receiving(fail_first: int = 0, port: int = 0) -> AsyncIterator[Receiver]:
    receiver = Receiver(fail_first)
    app = web.Application()
    app.router.add_post("/events", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    sockets = site._server.sockets  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/events"
    try:
        yield receiver
    finally:
        await runner.cleanup()


def check_arrivals(receiver: Receiver, secret: str) -> dict[str, list[dict[str, Any]]]:
    """Verify every request's signature with the `standardwebhooks` package; check each
    delivery's events were accepted in order, every seq from 1 once (duplicates of a
    webhook-id are the same event); return the events accepted, per delivery."""
    from standardwebhooks import Webhook

    hook = Webhook(secret)
    per_delivery: dict[str, list[dict[str, Any]]] = {}
    bodies: dict[str, bytes] = {}
    for arrival in receiver.arrivals:
        payload = hook.verify(arrival.body, arrival.headers)
        webhook_id = arrival.headers["webhook-id"]
        assert bodies.setdefault(webhook_id, arrival.body) == arrival.body, "a retry changed it"
        delivery_id, seq = payload["data"]["delivery_id"], payload["data"]["seq"]
        events = per_delivery.setdefault(delivery_id, [])
        assert seq <= len(events) + 1, f"{delivery_id}: seq {seq} posted after {len(events)}"
        if arrival.status == 200 and seq == len(events) + 1:
            events.append(payload)
    return per_delivery
