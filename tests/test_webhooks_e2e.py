"""The `app` channel end to end over loopback HTTP, and interop with `standardwebhooks`.

Deadlines run on a FakeClock while the HTTP calls are real: the clock starts at the real
time (the reference package checks timestamps against the real clock), `clock.settle()`
waits for the engine's in-flight HTTP sends (the notifier is busy until they return),
and `company.settle()` waits, in real time, for the receipts the company's app POSTs back
before the test moves fake time on.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from standardwebhooks import Webhook

from cascade_notify import AttemptStatus, DeliveryStatus, Message, Notifier, Recipient
from cascade_notify.providers.webhook import WebhookProvider
from cascade_notify.testing import FakeClock, FakeProvider, run_until_final
from cascade_notify.webhooks import asgi_app, handle_webhook
from webhook_harness import NEW_SECRET, SECRET, CompanyApp, receipt, serve, sign

PHONE = "+79161234567"


def policy(url: str, secrets: tuple[str, ...] = (SECRET,), sms: str = "deliver") -> str:
    return f"""
providers:
  app: {{type: webhook, url: "{url}", secret: {json.dumps(list(secrets))}, timeout: 5s}}
  sms: {{type: fake, channel: sms, behavior: {sms}}}
policies:
  service:
    steps:
      - {{channel: app, providers: [app], wait_for: read, timeout: 10m}}
      - {{channel: sms, providers: [sms], timeout: 10m}}
"""


@dataclass
class World:
    clock: FakeClock
    company: CompanyApp
    notifier: Notifier

    @property
    def sms(self) -> FakeProvider:
        provider = self.notifier.providers["sms"]
        assert isinstance(provider, FakeProvider)
        return provider


async def make_world(sms: str = "deliver") -> AsyncIterator[World]:
    clock = FakeClock(start=time.time())
    company = CompanyApp(SECRET, clock)
    try:
        async with serve(company) as company_url:
            # the notifier builds its own webhook provider: the default aiohttp transport
            notifier = Notifier.from_yaml(policy(f"{company_url}/inbox", sms=sms), clock=clock)
            async with notifier, serve(asgi_app(notifier)) as url:
                company.receipts_url = f"{url}/receipts/app"
                yield World(clock, company, notifier)
    finally:
        await company.aclose()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async for made in make_world():
        yield made


@pytest.fixture
async def world_sms_silent() -> AsyncIterator[World]:
    async for made in make_world(sms="no_receipt"):
        yield made


async def test_app_then_sms_cascade(world: World) -> None:
    """The app that reports `read` ends the cascade on `app`; the one whose app never
    reports falls through to SMS at the app step's deadline."""
    world.company.script = {"reader": ["delivered", "read"]}
    text = Message(text="Your lawyer answered.")
    reader = await world.notifier.send(Recipient(id="reader", app="dev-1", sms=PHONE), text)
    silent = await world.notifier.send(Recipient(id="silent", app="dev-2", sms=PHONE), text)
    start = world.clock.now()
    await world.clock.settle()  # both sends went out over HTTP and were answered
    await world.company.settle()  # the reader's app reported back, and was answered
    assert sorted(m["recipient"]["id"] for m in world.company.inbox) == ["reader", "silent"]
    assert [(s, code) for _, s, code in world.company.reported] == [
        ("delivered", 200),
        ("read", 200),
    ]

    reader, silent = await run_until_final(world.notifier, world.clock, [reader.id, silent.id])

    assert (reader.status, reader.channel) == (DeliveryStatus.DELIVERED, "app")
    [attempt] = reader.attempts
    assert attempt.status is AttemptStatus.READ
    # the two sends go out concurrently: the app's inbox holds them in either order
    [sent] = [m for m in world.company.inbox if m["recipient"]["id"] == "reader"]
    assert attempt.provider_message_id == sent["message_id"] == attempt.id
    assert [r.status.value for r in attempt.receipts] == ["delivered", "read"]

    assert (silent.status, silent.channel) == (DeliveryStatus.DELIVERED, "sms")
    app, sms = silent.attempts
    assert (app.channel, app.status) == ("app", AttemptStatus.TIMED_OUT)
    assert (sms.channel, sms.status) == ("sms", AttemptStatus.DELIVERED)
    assert sms.started_ts == pytest.approx(start + 600)
    assert [c.recipient_id for c in world.sms.sent] == ["silent"]


async def test_receipt_before_the_sends_answer(world: World) -> None:
    """An app that reports `delivered` before it answers the send (the receipt arrives
    before we know the message id is ours) still gets it counted, then `read`."""
    world.company.script = {"eager": "early"}
    delivery = await world.notifier.send(
        Recipient(id="eager", app="dev-3", sms=PHONE), Message(text="hi")
    )
    await world.clock.settle()
    await world.company.settle()
    [delivery] = await run_until_final(world.notifier, world.clock, [delivery.id])
    assert (delivery.status, delivery.channel) == (DeliveryStatus.DELIVERED, "app")
    assert [r.status.value for r in delivery.attempts[0].receipts] == ["delivered", "read"]
    assert world.sms.sent == []


async def test_late_read_after_the_cascade_moved_on_stops_it(world_sms_silent: World) -> None:
    """A `read` that comes after the app step timed out, while SMS waits, is recorded and
    ends the cascade on `app`; the SMS attempt is abandoned."""
    world = world_sms_silent
    delivery = await world.notifier.send(
        Recipient(id="late", app="dev-4", sms=PHONE), Message(text="hi")
    )
    await world.clock.settle()
    await world.clock.advance(660)  # past the app deadline: SMS went out
    moved_on = await world.notifier.get(delivery.id)
    assert [a.channel for a in moved_on.attempts] == ["app", "sms"]
    assert await world.company.report(moved_on.attempts[0].id, "read") == 200
    [delivery] = await run_until_final(world.notifier, world.clock, [delivery.id])
    assert (delivery.status, delivery.channel) == (DeliveryStatus.DELIVERED, "app")
    assert [a.status for a in delivery.attempts] == [AttemptStatus.READ, AttemptStatus.ABANDONED]


# interop with the reference implementation


@pytest.mark.parametrize("secrets", [[SECRET], [SECRET, NEW_SECRET], [NEW_SECRET, SECRET]])
async def test_reference_package_verifies_what_we_send(secrets: list[str]) -> None:
    """`standardwebhooks.Webhook(secret).verify` accepts our request, for every secret in
    rotation, and reads back our body."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    clock = FakeClock(start=time.time())
    config = Notifier.from_yaml(policy("http://127.0.0.1:9/inbox", tuple(secrets))).config
    settings = config.providers["app"].settings
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        sender = WebhookProvider("app", settings, clock=clock, client=client)
        notifier = Notifier(config, clock=clock, providers={"app": sender})
        async with notifier:
            await notifier.send(
                Recipient(id="u", app="d", sms=PHONE),
                Message(text="Привет", metadata={"k": [1, 2]}),
            )
            await clock.settle()
    [request] = seen
    for secret in secrets:
        payload = Webhook(secret).verify(request.content, dict(request.headers))
        assert payload["text"] == "Привет" and payload["metadata"] == {"k": [1, 2]}
        assert payload["message_id"] == request.headers["webhook-id"]


async def test_we_accept_what_the_reference_package_signs(fake_clock: FakeClock) -> None:
    """A receipt signed by `standardwebhooks` (a list, unicode error text) is accepted."""
    notifier = Notifier.from_yaml(policy("http://127.0.0.1:9/inbox"), clock=fake_clock)
    body = json.dumps(
        [
            {"message_id": "m1", "status": "delivered"},
            {"message_id": "m1", "status": "failed", "error": "Ошибка"},
        ],
        ensure_ascii=False,
    ).encode()
    async with notifier:
        answer = await handle_webhook(
            notifier,
            "app",
            method="POST",
            url="http://h/receipts/app",
            headers=sign(SECRET, "msg_2NxQk", body, time.time()),
            body=body,
        )
    assert answer.status == 200
    assert json.loads(answer.body) == {"status": "ok", "received": 2, "duplicates": 0, "unknown": 2}


def test_our_signature_matches_the_reference_byte_for_byte() -> None:
    """For the same id, time and body our header equals the reference package's."""
    clock = FakeClock(start=1_767_225_600)
    config = Notifier.from_yaml(policy("http://127.0.0.1:9/inbox")).config
    ours = WebhookProvider("app", config.providers["app"].settings, clock=clock)
    body = receipt("m", "read")
    stamp = int(time.time())
    assert ours.signed_headers("msg_1", body) == sign(SECRET, "msg_1", body, stamp)
    assert ours.signed_headers("msg_1", body, stamp) == sign(SECRET, "msg_1", body, stamp)
