"""A webhook receiver on loopback that records what the emulators post to it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from aiohttp import web

from cascade_notify.testing import FakeClock

# built once: a client's own default context costs ~0.1 s per test, and only loopback is used
_TLS = ssl.create_default_context()


@dataclass
class Hit:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers each hit with the next of `answers` (200 when they run out)."""

    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    verify_token: str = "emulator-verify-token"
    delay: float = 0.0  # real seconds before answering

    def posts(self) -> list[Hit]:
        return [h for h in self.hits if h.method == "POST"]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        hit = Hit(
            request.method,
            request.path,
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        self.hits.append(hit)
        status = self.answers.pop(0) if self.answers else 200
        if request.method == "GET":
            q = request.query
            if q.get("hub.mode") == "subscribe" and q.get("hub.verify_token") == self.verify_token:
                return web.Response(text=q.get("hub.challenge", ""))
            return web.Response(status=403)
        return web.Response(status=status, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recv.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    recv.url = f"http://127.0.0.1:{runner.addresses[0][1]}/receipts"
    yield recv
    await runner.cleanup()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0, verify=_TLS) as client:
        yield client
