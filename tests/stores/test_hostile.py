"""Hostile input on every store: no bad byte in a reply, a receipt or a send may hurt
another delivery, and the same input gets the same answer on memory, SQLite and
PostgreSQL (refused where it is built, or stored and read back equal)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cascade_notify import (
    AttemptStatus,
    DeliveryStatus,
    Message,
    MessageError,
    Notifier,
    PermanentError,
    Recipient,
    RecipientError,
)
from cascade_notify.errors import ProviderError
from cascade_notify.models import Receipt, ReceiptStatus
from cascade_notify.policy import load_config
from cascade_notify.providers.base import (
    Provider,
    ProviderSettings,
    SendRequest,
    SendResult,
    send_classified,
)
from cascade_notify.stores import Store
from cascade_notify.stores.base import Transition
from cascade_notify.testing import FakeClock, run_until_final
from webhook_harness import SECRET, serve, sign

from .conftest import LEASE, NOW, StoreFactory, attempt, delivery

PHONE = "+79161234567"
READ = ReceiptStatus.READ
BIG = "x" * 1_000_000

# what the loopback API answers, by recipient id: (status, JSON body)
REPLIES: dict[str, tuple[int, dict[str, Any]]] = {
    "nul": (400, {"error": "refused \x00 here", "code": "E\x00"}),
    "surrogate": (400, {"error": "bad \udc80\ud800 text", "code": "\udfff"}),
    "big": (400, {"error": BIG, "code": BIG}),
    "nul-id": (200, {"id": "m-\x00-\ud800"}),
    "big-id": (200, {"id": BIG}),
}


class EchoApi(Provider):
    """A provider that takes its API's answers at their word: the error text, the code and
    the message id go into the outcome exactly as the server sent them."""

    type_name = "echo"
    default_channel = "app"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(ReceiptStatus)

    def __init__(self, url: str, clock: FakeClock) -> None:
        super().__init__("app", ProviderSettings(), clock=clock)
        self.url = url
        self.client = httpx.AsyncClient()
        self.in_flight = 0
        clock.add_idle_check(lambda: self.in_flight == 0)

    async def send(self, request: SendRequest) -> SendResult:
        self.in_flight += 1
        try:
            answer = await self.client.post(self.url, json={"who": request.recipient.id})
        finally:
            self.in_flight -= 1
        data = json.loads(answer.content)
        if answer.status_code == 200:
            return SendResult(data["id"])
        raise PermanentError(data["error"], provider=self.name, code=data["code"])

    async def aclose(self) -> None:
        await self.client.aclose()


async def api(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The provider's API on loopback: REPLIES by recipient, else accepted as `m-<id>`."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    who = json.loads(body)["who"]
    status, reply = REPLIES.get(who, (200, {"id": f"m-{who}"}))
    # ensure_ascii: NUL and lone surrogates go over the wire as JSON escapes, as they can
    payload = json.dumps(reply).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


POLICY = """
providers:
  app: {type: fake, channel: app}
  sms: {type: fake, channel: sms}
policies:
  service:
    steps:
      - {channel: app, providers: [app], wait_for: accepted}
      - {channel: sms, providers: [sms], timeout: 10m}
"""


async def test_hostile_replies_fall_back_at_once_and_spare_the_neighbours(
    store_factory: StoreFactory,
) -> None:
    """Errors with NUL, lone surrogates or a megabyte of text make the cascade fall back
    to SMS at once; ids like them are stored too; every neighbour is delivered."""
    clock = FakeClock(start=time.time())
    async with serve(api) as url:
        provider = EchoApi(f"{url}/send", clock)
        config = load_config(POLICY)
        notifier = Notifier(config, clock=clock, store=store_factory(), providers={"app": provider})
        async with notifier:
            who = [*REPLIES, *(f"ok-{i}" for i in range(8))]
            sent = [
                await notifier.send(Recipient(id=w, app=f"dev-{w}", sms=PHONE), Message(text="hi"))
                for w in who
            ]
            start = clock.now()
            done = {
                d.recipient.id: d
                for d in await run_until_final(notifier, clock, [d.id for d in sent], limit=60)
            }
            # a receipt about the hostile id finds its attempt: escaped the same way
            hostile = Receipt(
                provider="app", provider_message_id="m-\x00-\ud800", status=READ, ts=start
            )
            [found] = await notifier.record_receipts([hostile])
    for name in ("nul", "surrogate", "big"):
        d = done[name]
        assert (d.status, d.channel) == (DeliveryStatus.DELIVERED, "sms"), d
        app, sms = d.attempts
        assert app.status is AttemptStatus.FAILED and sms.started_ts - start < 1
        assert app.error is not None and app.code is not None
        assert len(app.error) <= 2000 and len(app.code) <= 128
    assert "\\x00" in done["nul"].attempts[0].error  # type: ignore[operator]
    assert "\\udc80\\ud800" in done["surrogate"].attempts[0].error  # type: ignore[operator]
    assert done["nul-id"].attempts[0].provider_message_id == "m-\\x00-\\ud800"
    assert len(done["big-id"].attempts[0].provider_message_id or "") == 256
    assert found.delivery_id == done["nul-id"].id
    for name in ("nul-id", "big-id", *(w for w in who if w.startswith("ok-"))):
        d = done[name]
        assert (d.status, d.channel) == (DeliveryStatus.DELIVERED, "app"), d


async def test_twenty_good_sends_and_one_bad_write_the_twenty(pg_dsn: str, pg_schema: str) -> None:
    """On PostgreSQL, twenty sends grouped with one whose idempotency key no index can hold:
    the one is refused with a MessageError naming the key, the twenty are written."""
    notifier = Notifier.from_yaml(
        POLICY, store=f"{pg_dsn}?schema={pg_schema}", worker=False, clock=FakeClock()
    )
    async with notifier:
        sends = [
            notifier.send(Recipient(id=f"r{i}", sms=PHONE), Message(text="hi"), idempotency_key=k)
            for i, k in enumerate([*(f"k{i}" for i in range(10)), os.urandom(2500).hex()])
        ]
        sends += [
            notifier.send(Recipient(id=f"s{i}", sms=PHONE), Message(text="hi")) for i in range(10)
        ]
        results = await asyncio.gather(*sends, return_exceptions=True)
        refused = results.pop(10)
        assert isinstance(refused, MessageError) and refused.field == "idempotency_key"
        assert len(results) == 20
        for made in results:
            assert not isinstance(made, BaseException), made
            assert (await notifier.get(made.id)).status is DeliveryStatus.PENDING


# receipts in


WEBHOOK_POLICY = f"""
providers:
  app: {{type: webhook, url: "http://127.0.0.1:9/inbox", secret: "{SECRET}"}}
  sms: {{type: fake, channel: sms}}
policies:
  service:
    steps:
      - {{channel: app, providers: [app], wait_for: read, timeout: 10m}}
      - {{channel: sms, providers: [sms]}}
"""

HOSTILE_RECEIPTS = [
    {"message_id": "m\x00", "status": "read"},
    {"message_id": "m\ud800", "status": "read"},
    {"message_id": "\udcff", "status": "delivered"},
    {"message_id": "x" * 300, "status": "read"},
    {"message_id": 7, "status": "read"},
    {"message_id": "m", "status": "read\x00"},
    {"message_id": "m", "status": "read", "timestamp": 1e300},
    "\x00",
]


@pytest.fixture
async def app_world(
    store_factory: StoreFactory,
) -> AsyncIterator[tuple[Notifier, FakeClock, str]]:
    """A receipts-only notifier, and a delivery whose app attempt `good-1` was accepted."""
    clock = FakeClock(start=time.time())
    notifier = Notifier.from_yaml(WEBHOOK_POLICY, clock=clock, store=store_factory(), worker=False)
    async with notifier:
        store = notifier.store
        d, _ = await store.create(delivery())
        [claim] = await store.claim(NOW, limit=1, lease=LEASE)
        sent = attempt(d, provider="app", status=AttemptStatus.ACCEPTED, message_id="good-1")
        await store.commit(claim, Transition(attempts=[sent], step=0, wake_ts=NOW + 600))
        yield notifier, clock, d.id


@pytest.mark.parametrize("hostile", HOSTILE_RECEIPTS, ids=range(len(HOSTILE_RECEIPTS)))
async def test_signed_hostile_receipts_are_400_and_the_good_one_beside_is_recorded(
    app_world: tuple[Notifier, FakeClock, str], hostile: object
) -> None:
    """A correctly signed batch holding a hostile receipt beside a good one is answered
    400 (never 5xx), and the good receipt is recorded all the same."""
    notifier, clock, delivery_id = app_world
    body = json.dumps([hostile, {"message_id": "good-1", "status": "read"}]).encode()
    answer = await notifier.handle_webhook(
        "app",
        method="POST",
        url="http://x/receipts/app",
        headers=sign(SECRET, "wh-1", body, clock.now()),
        body=body,
    )
    assert answer.status == 400, answer.body
    assert json.loads(answer.body)["received"] == 1
    stored = await notifier.store.get(delivery_id)
    assert stored is not None
    [a] = stored.attempts
    assert a.status is AttemptStatus.READ and [r.receipt_id for r in a.receipts] == ["wh-1:1"]


@pytest.mark.parametrize("text", ["\x00", "\ud800", "\udc80 and \x00", "e" * 100_000])
async def test_signed_receipts_with_hostile_text_are_recorded_escaped(
    app_world: tuple[Notifier, FakeClock, str], text: str
) -> None:
    """Error text with NUL, lone surrogates or too many characters is stored escaped and
    bounded, the batch answered 200 (on PostgreSQL a NUL was a 503, a surrogate a 500)."""
    notifier, clock, delivery_id = app_world
    body = json.dumps(
        [{"message_id": "good-1", "status": "failed", "error": text, "code": text[:50]}]
    ).encode()
    answer = await notifier.handle_webhook(
        "app",
        method="POST",
        url="http://x/receipts/app",
        headers=sign(SECRET, "wh-2", body, clock.now()),
        body=body,
    )
    assert answer.status == 200, answer.body
    stored = await notifier.store.get(delivery_id)
    assert stored is not None
    [r] = stored.attempts[0].receipts
    assert r.error is not None and "\x00" not in r.error and len(r.error) <= 2000
    assert r.error.encode() and r.error[:1] in (text[:1], "\\")


# the same answer on every store

FUZZ = settings(
    deadline=None, database=None, max_examples=150, suppress_health_check=list(HealthCheck)
)
BAD = ["\x00", "\ud800", "\udfff", "\udc80"]
clean_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
# text with at least one character no store can hold as is (NUL, a lone surrogate)
hostile_text = st.tuples(clean_text, st.sampled_from(BAD), st.text(max_size=10)).map("".join)


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `usual`, now and then `odd`: each field of a recipient or message can be
    refused, and a fair share of them must get through whole to be stored."""
    return st.integers(0, 9).flatmap(lambda n: odd if n in (0, 5) else usual)


some_text = mostly(clean_text.filter(str.strip), hostile_text)
reply_text = st.one_of(clean_text, hostile_text, st.sampled_from(["\\x00", "x" * 3000]))
json_leaf = mostly(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        clean_text,
        st.sampled_from([1e300, 2.0**60, 1e23, -0.0, 10**30]),
    ),
    st.one_of(
        hostile_text,
        st.sampled_from([float("nan"), float("inf"), set(), object(), b"x", 10**2000]),
    ),
)
json_data = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.dictionaries(some_text, inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def recipients(draw: st.DrawFn) -> Recipient | Exception:
    fields = draw(
        st.fixed_dictionaries(
            {"id": mostly(some_text, st.sampled_from(["r" * 300, "r" * 256]))},
            optional={
                "telegram": some_text,
                "app": some_text,
                "email": st.one_of(st.text("abc.", min_size=1), some_text).map(
                    lambda t: f"{t}@example.com"
                ),
                "sms": st.sampled_from([PHONE, "+7 916 123-45-67", PHONE + "\x00", "\ud800"]),
                "locale": some_text,
                "timezone": mostly(
                    st.sampled_from(["Europe/Moscow", "UTC"]),
                    st.sampled_from(["x" * 5000, "Mars/Base"]) | some_text,
                ),
                "addresses": st.dictionaries(st.sampled_from(["max", "vk"]), some_text),
                "opted_out": st.frozensets(st.sampled_from(["sms", "app"]) | some_text, max_size=2),
            },
        )
    )
    try:
        return Recipient(**fields)
    except Exception as exc:
        return exc


@st.composite
def messages(draw: st.DrawFn) -> Message | Exception:
    fields = draw(
        st.fixed_dictionaries(
            {"text": some_text},
            optional={
                "subject": some_text,
                "category": st.sampled_from(["transactional", "marketing"]) | some_text,
                "metadata": st.dictionaries(some_text, json_data, max_size=3),
                "overrides": st.dictionaries(
                    st.sampled_from(["email", "app"]),
                    st.dictionaries(some_text, json_data, max_size=2),
                    max_size=2,
                ),
            },
        )
    )
    try:
        return Message(**fields)
    except Exception as exc:
        return exc


def test_every_message_and_recipient_is_refused_or_read_back_equal(
    store_factory: StoreFactory,
) -> None:
    """Messages, recipients and provider replies built from arbitrary text: each is refused
    at construction with a library error (naming the field), or stored and read back
    equal; the answer is the same on every store."""
    store = store_factory()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(store.open())
    try:

        @FUZZ
        @given(recipients(), messages(), reply_text, reply_text, reply_text)
        def check(
            recipient: Recipient | Exception,
            message: Message | Exception,
            error: str,
            code: str,
            message_id: str,
        ) -> None:
            for built, kind in ((recipient, RecipientError), (message, MessageError)):
                if isinstance(built, Exception):
                    assert isinstance(built, kind), repr(built)
                    assert str(built).startswith(("Recipient.", "Message.")), str(built)
            if isinstance(recipient, Exception) or isinstance(message, Exception):
                return
            loop.run_until_complete(round_trip(store, recipient, message, error, code, message_id))

        check()
    finally:
        loop.run_until_complete(store.close())
        loop.close()


class Replying(Provider):
    """Answers with whatever text it is told to: an error, or a message id."""

    default_channel = "app"
    error: tuple[str, str] | None = None
    message_id = ""

    async def send(self, request: SendRequest) -> SendResult:
        if self.error is not None:
            raise PermanentError(self.error[0], code=self.error[1])
        return SendResult(self.message_id)


async def reply(provider: Replying) -> SendResult | ProviderError:
    request = SendRequest("a", "d", "app", "x", Recipient(id="x"), Message(text="hi"))
    return await send_classified(provider, request)


async def round_trip(
    store: Store, recipient: Recipient, message: Message, error: str, code: str, message_id: str
) -> None:
    d = delivery()
    d.recipient, d.message = recipient, message
    _, created = await store.create(d)
    assert created
    stored = await store.get(d.id)
    assert stored is not None
    assert (stored.recipient, stored.message) == (recipient, message)
    # and the provider's replies, as the engine takes them: an error, an accepted id
    [claim] = [c for c in await store.claim(NOW, limit=100, lease=LEASE) if c.delivery.id == d.id]
    provider = Replying("p", ProviderSettings())
    provider.error = (error, code)
    failed = await reply(provider)
    assert isinstance(failed, PermanentError)
    provider.error, provider.message_id = None, f"{d.id}{message_id}"  # one id per example
    accepted = await reply(provider)
    assert isinstance(accepted, SendResult)
    a = attempt(d, status=AttemptStatus.ACCEPTED, message_id=accepted.provider_message_id)
    a.error, a.code = str(failed.args[0]), failed.code
    await store.commit(claim, Transition(attempts=[a], step=0, wake_ts=NOW + 600))
    heard = Receipt(
        provider="wa", provider_message_id=f"{d.id}{message_id}", status=READ, ts=NOW, error=error
    )
    await store.record_receipts([heard], NOW)
    again = await store.get(d.id)
    assert again is not None
    [back] = again.attempts
    assert (back.error, back.code, back.provider_message_id) == (
        a.error,
        a.code,
        a.provider_message_id,
    )
    assert back.receipts == [heard]
