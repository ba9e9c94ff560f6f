"""A loopback receipts endpoint for provider tests: what an emulator posts goes through
`notifier.handle_webhook`, over real HTTP, and the provider's answer goes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from cascade_notify import AttemptStatus, Notifier


@dataclass
class Inbox:
    """Forwards `POST /receipts/{provider}` to `notifier` (set it before posting)."""

    url: str = ""
    notifier: Notifier | None = None
    answers: list[tuple[int, bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.notifier is not None, "set inbox.notifier first"
        body = await request.read()
        answer = await self.notifier.handle_webhook(
            request.match_info["name"],
            method=request.method,
            url=str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        self.answers.append((answer.status, answer.body))
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    box = Inbox()
    app = web.Application()
    app.router.add_route("*", "/receipts/{name}", box.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    box.url = f"http://127.0.0.1:{runner.addresses[0][1]}/receipts"
    yield box
    await runner.cleanup()


async def answered(notifier: Notifier, delivery_id: str, timeout: float = 5.0) -> None:
    """Wait, in real time, until the delivery's latest call has its answer.

    `FakeClock.settle()` cannot see a request of the provider's own aiohttp session in
    flight (its DNS step runs in a thread), so without this the fake clock could pass
    the step's deadline before the loopback answer is in."""
    async with asyncio.timeout(timeout):
        while True:
            attempts = (await notifier.get(delivery_id)).attempts
            if attempts and attempts[-1].status is not AttemptStatus.SENDING:
                return
            await asyncio.sleep(0.005)
