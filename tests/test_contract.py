"""The provider contract through the notifier: one receipt door (webhook, push or poll),
signals, account errors, typed overrides, a shared HTTP client, wall-clock signatures."""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

import httpx
import pytest
from standardwebhooks import Webhook

from cascade_notify import (
    DeliveryStatus,
    Message,
    MessageError,
    Notifier,
    PermanentError,
    Receipt,
    ReceiptStatus,
    Recipient,
    UnreachableError,
)
from cascade_notify.events import Event
from cascade_notify.providers import registry
from cascade_notify.providers.base import (
    Inbound,
    Provider,
    ProviderOverrides,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
)
from cascade_notify.testing import FakeClock, run_until_final

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


class Gateway(Provider):
    """An SMS gateway with a status call that takes lists, and a webhook for the same
    receipts: the two ways in must be indistinguishable past the door."""

    type_name = "contract_gateway"
    default_channel = "sms"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset({ReceiptStatus.DELIVERED})
    poll_interval: ClassVar[float | None] = 30.0
    poll_batch = 50
    webhook_methods = frozenset({"POST"})
    polls: ClassVar[list[list[str]]] = []
    delivered: ClassVar[set[str]] = set()

    async def send(self, request: SendRequest) -> SendResult:
        return SendResult(f"sms-{request.attempt_id}")

    async def poll(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        self.polls.append(list(provider_message_ids))
        now = self.clock.now()
        return [
            Receipt(
                provider=self.name,
                provider_message_id=m,
                status=ReceiptStatus.DELIVERED,
                ts=now,
                receipt_id=f"{m}:delivered",
            )
            for m in provider_message_ids
            if m in self.delivered
        ]

    async def receive(self, request: WebhookRequest) -> Inbound:
        data = json.loads(request.body)
        return Inbound(
            receipts=[
                Receipt(
                    provider=self.name,
                    provider_message_id=data["id"],
                    status=ReceiptStatus.DELIVERED,
                    ts=self.clock.now(),
                    receipt_id=f"{data['id']}:delivered",
                )
            ]
        )


@pytest.fixture(autouse=True)
def _gateway() -> object:
    registry.register("contract_gateway", Gateway)
    yield
    registry.unregister("contract_gateway")
    Gateway.polls.clear()
    Gateway.delivered.clear()


POLICY = """
providers:
  gw: {type: contract_gateway}
policies:
  p:
    steps: [{channel: sms, providers: [gw], wait_for: delivered, timeout: 10m}]
"""
PHONE = "+79161234567"


async def _run(fake_clock: FakeClock, by: str) -> tuple[list[tuple[str, ...]], object]:
    events: list[Event] = []
    notifier = Notifier.from_yaml(POLICY, clock=fake_clock, store="memory://")
    notifier.subscribe(events.append)
    async with notifier:
        sent = [
            await notifier.send(Recipient(id=f"r{i}", sms=PHONE), Message(text="hi"))
            for i in range(5)
        ]
        await fake_clock.advance(1)
        ids = [(await notifier.get(d.id)).attempts[0].provider_message_id for d in sent]
        Gateway.delivered.update(i for i in ids if i)
        if by == "webhook":
            for message_id in ids:
                body = json.dumps({"id": message_id}).encode()
                answer = await notifier.handle_webhook(
                    "gw", method="POST", url="http://h/receipts/gw", headers={}, body=body
                )
                assert answer.status == 200
        done = await run_until_final(notifier, fake_clock, [d.id for d in sent])
        breakers = await notifier.breakers.list()
    assert all(d.status is DeliveryStatus.DELIVERED for d in done)
    kinds = [(e.kind, e.channel or "", e.provider or "", e.status or "") for e in events]
    return kinds, [(b.provider, b.state, b.failures_in_row) for b in breakers]


async def test_a_polled_receipt_is_the_same_as_one_by_webhook(fake_clock: FakeClock) -> None:
    """The same receipts learned by polling and by webhook give the same events and the
    same breaker state; the poll asks about all five messages in one call."""
    by_webhook = await _run(fake_clock, "webhook")
    assert Gateway.polls == []
    by_poll = await _run(FakeClock(), "poll")
    assert by_poll == by_webhook
    assert [len(ids) for ids in Gateway.polls] == [5]
    assert ("receipt", "sms", "gw", "delivered") in by_poll[0]


async def test_a_failing_status_call_backs_off_and_recovers(fake_clock: FakeClock) -> None:
    """A status call that raises is tried again later (doubling), and then succeeds."""
    calls: list[float] = []
    real = Gateway.poll

    async def flaky(self: Gateway, ids: Sequence[str]) -> list[Receipt]:
        calls.append(fake_clock.now())
        if len(calls) < 3:
            raise httpx.ConnectError("gateway down")
        return await real(self, ids)

    Gateway.poll = flaky  # type: ignore[method-assign]
    try:
        notifier = Notifier.from_yaml(POLICY, clock=fake_clock, store="memory://")
        async with notifier:
            sent = await notifier.send(Recipient(id="r", sms=PHONE), Message(text="hi"))
            await fake_clock.advance(1)
            Gateway.delivered.add(f"sms-{(await notifier.get(sent.id)).attempts[0].id}")
            [done] = await run_until_final(notifier, fake_clock, [sent.id])
    finally:
        Gateway.poll = real  # type: ignore[method-assign]
    assert done.status is DeliveryStatus.DELIVERED
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert len(calls) == 3 and gaps[0] >= 30 and gaps[1] >= 60


class Refusing(Provider):
    """Answers as its class says: a bad account, or a recipient who blocked the bot."""

    type_name = "contract_refusing"
    default_channel = "telegram"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset()
    signals: ClassVar[bool] = True
    answer: ClassVar[str] = "account"

    async def send(self, request: SendRequest) -> SendResult:
        if self.answer == "account":
            raise PermanentError("Unauthorized", provider=self.name, code="401", account=True)
        raise UnreachableError(
            "Forbidden: bot was blocked by the user", provider=self.name, code="403", gone="blocked"
        )


TWO_STEPS = """
providers:
  tg: {type: contract_refusing}
  sms: {type: fake, channel: sms}
policies:
  p:
    steps:
      - {channel: telegram, providers: [tg], wait_for: accepted}
      - {channel: sms, providers: [sms], wait_for: delivered}
"""


@pytest.fixture
def refusing() -> object:
    registry.register("contract_refusing", Refusing)
    yield Refusing
    registry.unregister("contract_refusing")
    Refusing.answer = "account"


@pytest.mark.parametrize("store", ["memory://", "sqlite:///:memory:"])
async def test_an_account_error_opens_the_breaker_at_once(
    fake_clock: FakeClock, refusing: object, store: str
) -> None:
    """One permanent error about the account opens the provider's breaker: the next
    cascade skips the channel as circuit_open, without calling it."""
    notifier = Notifier.from_yaml(TWO_STEPS, clock=fake_clock, store=store)
    async with notifier:
        recipient = Recipient(id="r", telegram="42", sms=PHONE)
        first = await notifier.send(recipient, Message(text="a"))
        await run_until_final(notifier, fake_clock, [first.id])
        [breaker] = [b for b in await notifier.breakers.list() if b.provider == "tg"]
        second = await notifier.send(recipient, Message(text="b"))
        [done] = await run_until_final(notifier, fake_clock, [second.id])
    assert breaker.state == "open" and "account" in breaker.reason
    assert [s.reason for s in done.skipped] == ["circuit_open"]
    assert done.status is DeliveryStatus.DELIVERED and done.channel == "sms"


@pytest.mark.parametrize("store", ["memory://", "sqlite:///:memory:"])
async def test_a_blocked_bot_is_skipped_by_later_cascades(
    fake_clock: FakeClock, refusing: object, store: str
) -> None:
    """An unreachable error that says the address is gone is remembered: the next
    cascade to that address skips the channel as address_gone, with the reason."""
    Refusing.answer = "blocked"
    notifier = Notifier.from_yaml(TWO_STEPS, clock=fake_clock, store=store)
    events: list[Event] = []
    notifier.subscribe(events.append)
    async with notifier:
        recipient = Recipient(id="r", telegram="42", sms=PHONE)
        first = await notifier.send(recipient, Message(text="a"))
        [one] = await run_until_final(notifier, fake_clock, [first.id])
        second = await notifier.send(recipient, Message(text="b"))
        [two] = await run_until_final(notifier, fake_clock, [second.id])
    assert [a.status.value for a in one.attempts][:1] == ["unreachable"]
    assert ("signal", "telegram", "gone", "blocked") in [
        (e.kind, e.channel, e.status, e.detail) for e in events
    ]
    assert [a.channel for a in two.attempts] == ["sms"]
    assert [(s.reason, "blocked" in (s.detail or "")) for s in two.skipped] == [
        ("address_gone", True)
    ]


class Templated(Provider):
    type_name = "contract_templated"
    default_channel = "whatsapp"

    class Overrides(ProviderOverrides):
        template: str | None = None

    seen: ClassVar[list[SendRequest]] = []

    async def send(self, request: SendRequest) -> SendResult:
        self.seen.append(request)
        return SendResult("m")


async def test_overrides_are_typed_per_provider_and_checked_at_send(fake_clock: FakeClock) -> None:
    """A wrong key in `Message.overrides[channel]` is a MessageError naming the channel and
    the key, and nothing is stored; a right one, merged over the step's options, reaches
    the provider typed, with the step's deadline."""
    registry.register("contract_templated", Templated)
    try:
        notifier = Notifier.from_yaml(
            """
providers:
  wa: {type: contract_templated}
policies:
  p:
    steps:
      - {channel: whatsapp, providers: [wa], wait_for: accepted, timeout: 2m,
         options: {wa: {template: step_one}}}
""",
            clock=fake_clock,
            store="memory://",
        )
        async with notifier:
            recipient = Recipient(id="r", whatsapp=PHONE)
            with pytest.raises(MessageError, match=r"overrides\['whatsapp'\]\.tempalte"):
                await notifier.send(
                    recipient, Message(text="x", overrides={"whatsapp": {"tempalte": "a"}})
                )
            first = await notifier.send(recipient, Message(text="x"))
            second = await notifier.send(
                recipient, Message(text="x", overrides={"whatsapp": {"text": "y"}})
            )
            await run_until_final(notifier, fake_clock, [first.id, second.id])
    finally:
        registry.unregister("contract_templated")
    one, two = Templated.seen
    Templated.seen.clear()
    assert isinstance(one.overrides, Templated.Overrides)
    assert (one.overrides.template, one.text, two.overrides.template, two.text) == (
        "step_one",
        "x",
        "step_one",
        "y",
    )
    assert one.deadline_ts == fake_clock.now() - (fake_clock.now() - one.deadline_ts)
    assert one.deadline_ts is not None and one.options == {"template": "step_one"}


def test_options_naming_an_unknown_key_fail_the_policy() -> None:
    """A step's options are checked against the provider's overrides at load time."""
    from cascade_notify import PolicyError
    from cascade_notify.policy import load_config

    registry.register("contract_templated", Templated)
    try:
        with pytest.raises(PolicyError, match=r"options\.wa.*tempalte"):
            load_config("""
providers:
  wa: {type: contract_templated}
policies:
  p:
    steps: [{channel: whatsapp, providers: [wa], wait_for: accepted,
             options: {wa: {tempalte: x}}}]
""")
    finally:
        registry.unregister("contract_templated")


APP = f"""
providers:
  app: {{type: webhook, url: "http://app.invalid/inbox", secret: "{SECRET}"}}
policies:
  p: {{steps: [{{channel: app, providers: [app], wait_for: delivered}}]}}
"""


async def test_one_http_client_for_every_provider(fake_clock: FakeClock) -> None:
    """`Notifier(http=transport)` puts every HTTP provider on it: here a MockTransport
    answering for a host no resolver knows."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    notifier = Notifier.from_yaml(
        APP, clock=fake_clock, store="memory://", http=httpx.MockTransport(answer)
    )
    async with notifier:
        sent = await notifier.send(Recipient(id="r", app="device"), Message(text="hi"))
        await fake_clock.advance(1)
        got = await notifier.get(sent.id)
    assert [str(r.url) for r in seen] == ["http://app.invalid/inbox"]
    assert got.attempts[0].status.value == "accepted"


async def test_signatures_are_wall_clock_under_a_fake_clock(fake_clock: FakeClock) -> None:
    """On a FakeClock (2026-01-01), a receipt the reference package signs with wall time
    is accepted, and what we send verifies with the reference package (not "too old")."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    notifier = Notifier.from_yaml(
        APP, clock=fake_clock, store="memory://", http=httpx.MockTransport(answer)
    )
    async with notifier:
        sent = await notifier.send(Recipient(id="r", app="device"), Message(text="hi"))
        await fake_clock.advance(1)
        attempt_id = (await notifier.get(sent.id)).attempts[0].id
        body = json.dumps({"message_id": attempt_id, "status": "delivered"}).encode()
        stamp = datetime.fromtimestamp(int(time.time()), UTC)
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": Webhook(SECRET).sign("msg_1", stamp, body.decode()),
        }
        answer_in = await notifier.handle_webhook(
            "app", method="POST", url="http://h/receipts/app", headers=headers, body=body
        )
        [done] = await run_until_final(notifier, fake_clock, [sent.id])
    assert abs(fake_clock.now() - time.time()) > 86400  # the fake clock is far from wall time
    Webhook(SECRET).verify(seen[0].content, dict(seen[0].headers))
    assert answer_in.status == 200 and done.status is DeliveryStatus.DELIVERED


class Challenge(Provider):
    """A custom answer and a GET: receive() owns what goes back."""

    type_name = "contract_challenge"
    default_channel = "app"
    webhook_methods = frozenset({"GET", "POST"})

    async def receive(self, request: WebhookRequest) -> Inbound:
        if request.method == "GET":
            return Inbound(answer=_plain(request.query.get("challenge", "")))
        return Inbound(answer=_plain("100"))


def _plain(text: str) -> object:
    from cascade_notify.providers.base import WebhookResponse

    return WebhookResponse.text(text)


async def test_a_provider_chooses_its_answer(fake_clock: FakeClock) -> None:
    """The endpoint sends what `Inbound.answer` says (a challenge, a plain `100`), and
    answers 405 to a method the provider does not declare."""
    registry.register("contract_challenge", Challenge)
    try:
        notifier = Notifier.from_yaml(
            """
providers:
  c: {type: contract_challenge}
policies:
  p: {steps: [{channel: app, providers: [c], wait_for: accepted}]}
""",
            clock=fake_clock,
            store="memory://",
        )
        async with notifier:
            get = await notifier.handle_webhook(
                "c", method="GET", url="http://h/r/c?challenge=42", headers={}, body=b""
            )
            post = await notifier.handle_webhook(
                "c", method="POST", url="http://h/r/c", headers={}, body=b"x"
            )
            put = await notifier.handle_webhook(
                "c", method="PUT", url="http://h/r/c", headers={}, body=b""
            )
    finally:
        registry.unregister("contract_challenge")
    assert (get.status, get.body, post.body, put.status) == (200, b"42", b"100", 405)


async def test_a_claim_never_ages_past_its_lease_waiting_for_a_slot(
    fake_clock: FakeClock,
) -> None:
    """Lease 4 s, one slot, a provider answering in 2 s, six sends: each reaches its first
    channel once (issue 14, item 4: a claim that waited for a slot was sent as unknown)."""
    notifier = Notifier.from_yaml(
        """
worker: {lease: 4s, concurrency: 1}
providers:
  wa: {type: fake, channel: whatsapp, latency: 2s}
  sms: {type: fake, channel: sms}
policies:
  p:
    steps:
      - {channel: whatsapp, providers: [wa], wait_for: delivered, timeout: 1m}
      - {channel: sms, providers: [sms], wait_for: delivered}
""",
        clock=fake_clock,
        store="memory://",
    )
    async with notifier:
        sent = [
            await notifier.send(Recipient(id=f"r{i}", whatsapp=PHONE, sms=PHONE), Message(text="x"))
            for i in range(6)
        ]
        done = await run_until_final(notifier, fake_clock, [d.id for d in sent])
    assert [(d.channel, len(d.attempts)) for d in done] == [("whatsapp", 1)] * 6


def test_provider_settings_base_forbids_unknown_keys() -> None:
    """The contract's bases refuse unknown keys: a typo never passes silently."""
    with pytest.raises(ValueError, match="extra"):
        ProviderSettings.model_validate({"nope": 1})
    with pytest.raises(ValueError, match="extra"):
        ProviderOverrides.model_validate({"nope": 1})


async def test_a_signal_the_store_refuses_loses_no_outcome(
    fake_clock: FakeClock, refusing: object
) -> None:
    """The address signal of an unreachable answer cannot be stored: the attempt's
    outcome is written all the same and the cascade moves on to the next channel."""
    from cascade_notify import StoreError
    from cascade_notify.stores import MemoryStore

    class NoBook(MemoryStore):
        async def record_signals(self, signals: Sequence[object]) -> None:  # type: ignore[override]
            raise StoreError("the address book is down")

    Refusing.answer = "blocked"
    notifier = Notifier.from_yaml(TWO_STEPS, clock=fake_clock, store=NoBook())
    async with notifier:
        sent = await notifier.send(Recipient(id="r", telegram="42", sms=PHONE), Message(text="a"))
        [done] = await run_until_final(notifier, fake_clock, [sent.id])
    assert [(a.channel, a.status.value) for a in done.attempts] == [
        ("telegram", "unreachable"),
        ("sms", "delivered"),
    ]
