"""Shared by the provider tests: requests as the engine builds them, emulator webhooks
fed to `receive()`, and a notifier served by uvicorn on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from cascade_notify import AttemptStatus, Message, Notifier, Recipient
from cascade_notify.providers.base import Inbound, Provider, SendRequest, WebhookRequest
from cascade_notify.testing import FakeClock
from cascade_notify.testing.emulators._base import Webhook
from webhook_harness import serve

PHONE = "+79161234567"


def request(
    provider: type[Provider],
    channel: str,
    address: str,
    *,
    attempt_id: str = "att_1",
    options: Mapping[str, Any] | None = None,
    locale: str | None = None,
    **message: Any,
) -> SendRequest:
    """What the engine hands `send()`: step `options` merged with the message's overrides
    for `channel` (the message wins), checked as the provider's `Overrides`."""
    text = Message(text=message.pop("text", "Your parcel A-1234 has arrived."), **message)
    given = text.overrides.get(channel) or {}
    return SendRequest(
        attempt_id=attempt_id,
        delivery_id=f"del_{attempt_id}",
        channel=channel,
        address=address,
        recipient=Recipient(id="anna", locale=locale, **{channel: address}),
        message=text,
        options=options or {},
        overrides=provider.check_overrides({**(options or {}), **given}, channel=channel),
    )


async def feed(provider: Provider, hook: Webhook) -> Inbound:
    """Hand one webhook the emulator made to `provider.receive()`, as the endpoint would."""
    headers = {k.lower(): v for k, v in hook.headers.items()}
    return await provider.receive(
        WebhookRequest("POST", "http://127.0.0.1/receipts/x", headers, hook.body)
    )


async def answered(
    notifier: Notifier, clock: FakeClock, ids: Sequence[str], timeout: float = 10.0
) -> None:
    """Wait, in real time, until no attempt of these deliveries is still in its HTTP call.

    `FakeClock.settle()` cannot see a request waiting on a socket (nothing is ready to
    run on the loop then), so moving fake time on right after a send could overtake it.
    """
    async with asyncio.timeout(timeout):
        while True:
            await clock.settle()
            deliveries = [await notifier.get(i) for i in ids]
            if all(
                a.status is not AttemptStatus.SENDING for d in deliveries for a in d.attempts
            ) and all(d.attempts or d.final for d in deliveries):
                return
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def served(policy: str, clock: FakeClock) -> AsyncIterator[tuple[Notifier, str]]:
    """A notifier on `clock` and the memory store, its `asgi_app()` under uvicorn on
    loopback; yield it and the receipts URL (`{url}/receipts`)."""
    notifier = Notifier.from_yaml(policy, clock=clock, store="memory://")
    async with notifier, serve(notifier.asgi_app()) as url:
        yield notifier, f"{url}/receipts"
