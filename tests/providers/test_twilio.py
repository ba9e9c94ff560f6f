"""`twilio_sms` against the Twilio emulator over real loopback HTTP, signatures against the
official `twilio` package, and a whole cascade through the notifier's receipts endpoint.

Callbacks go where a real Twilio sends them: the message's `StatusCallback`, which is the
provider's `public_url`, here an `Inbox` on loopback that hands each request to the
provider's `receive()` as the receipts endpoint would.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from cascade_notify import DeliveryStatus, Message, Notifier, Recipient
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.models import ReceiptStatus, SignalKind, WaitFor
from cascade_notify.providers import registry
from cascade_notify.providers._signing import BadSignature
from cascade_notify.providers.base import Inbound, SendRequest, WebhookRequest
from cascade_notify.providers.sms.twilio import TwilioSettings, TwilioSmsProvider
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import TwilioEmulator
from webhook_harness import serve

PHONE = "+79161234567"
TOKEN = "emulator-auth-token"
PUBLIC = "https://hooks.example.com/twilio/status"
SERVICE = "MG" + "0123456789abcdef" * 2


@dataclass
class Inbox:
    """A receipts endpoint on loopback: each POST goes to the provider's `receive()`."""

    provider: TwilioSmsProvider | None = None
    url: str = ""
    inbound: list[Inbound] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self.provider is not None
        hook = WebhookRequest(
            "POST",
            str(request.url),
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
        )
        try:
            self.inbound.append(await self.provider.receive(hook))
        except BadSignature as exc:
            self.refused.append(exc.status)
            return web.Response(status=exc.status)
        return web.Response(status=200)

    @property
    def receipts(self) -> list[tuple[str, str | None]]:
        return [(r.status.value, r.code) for i in self.inbound for r in i.receipts]


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    box = Inbox()
    app = web.Application()
    app.router.add_post("/receipts/twilio", box.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    box.url = f"http://127.0.0.1:{runner.addresses[0][1]}/receipts/twilio"
    yield box
    await runner.cleanup()


@pytest.fixture
async def emu(fake_clock: FakeClock) -> AsyncIterator[TwilioEmulator]:
    async with TwilioEmulator(clock=fake_clock) as emulator:
        yield emulator


Make = Callable[..., Awaitable[TwilioSmsProvider]]


@pytest.fixture
async def make(emu: TwilioEmulator, inbox: Inbox, fake_clock: FakeClock) -> AsyncIterator[Make]:
    made: list[TwilioSmsProvider] = []

    async def build(**changes: Any) -> TwilioSmsProvider:
        values = {**emu.settings(), "public_url": inbox.url, **changes}
        values.pop("type")
        provider = TwilioSmsProvider("twilio", TwilioSettings(**values), clock=fake_clock)
        inbox.provider = provider
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


def request(text: str = "Your parcel A-1234 has arrived.", **changes: Any) -> SendRequest:
    values: dict[str, Any] = {
        "attempt_id": "at-1",
        "delivery_id": "dl-1",
        "channel": "sms",
        "address": PHONE,
        "recipient": Recipient(id="anna", sms=PHONE),
        "message": Message(text=text),
        **changes,
    }
    return SendRequest(**values)


def signed(url: str, params: dict[str, str], token: str = TOKEN) -> WebhookRequest:
    """A callback as Twilio posts it to `url`, signed by the official package."""
    signature = RequestValidator(token).compute_signature(url, params)
    return WebhookRequest(
        "POST",
        "http://10.0.0.7:8000/receipts/twilio",  # what the app sees behind the proxy
        {"x-twilio-signature": signature, "content-type": "application/x-www-form-urlencoded"},
        urlencode(params).encode(),
    )


def callback(status: str, **extra: str) -> dict[str, str]:
    sid = "SM" + "ab" * 16
    return {
        "AccountSid": "AC" + "0123456789abcdef" * 2,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": PHONE,
        **extra,
    }


# -- sending ----------------------------------------------------------------------


async def test_send_posts_the_form_and_returns_the_sid(
    make: Make, emu: TwilioEmulator, inbox: Inbox, fake_clock: FakeClock
) -> None:
    """A send is a Basic-auth form with To, From, Body, StatusCallback and ValidityPeriod;
    the 201's `SM…` sid is the provider message id."""
    provider = await make()
    result = await provider.send(request(deadline_ts=fake_clock.now() + 600))
    assert result.provider_message_id.startswith("SM")
    assert len(result.provider_message_id) == 34
    assert result.cost is None
    [record] = emu.requests
    assert record.path == f"/2010-04-01/Accounts/{emu.account_sid}/Messages.json"
    assert record.headers["content-type"] == "application/x-www-form-urlencoded"
    assert record.headers["authorization"].startswith("Basic ")
    assert record.parsed == {
        "To": PHONE,
        "Body": "Your parcel A-1234 has arrived.",
        "From": "+15005550006",
        "StatusCallback": inbox.url,
        "ValidityPeriod": "600",
    }
    assert emu.sent_to(PHONE)[0].id == result.provider_message_id


async def test_messaging_service_instead_of_from(make: Make, emu: TwilioEmulator) -> None:
    """With `messaging_service_sid` the form names the service and no From."""
    provider = await make(from_number=None, messaging_service_sid=SERVICE)
    await provider.send(request())
    form = emu.requests[0].parsed
    assert form["MessagingServiceSid"] == SERVICE
    assert "From" not in form


def test_settings_need_exactly_one_sender() -> None:
    """Neither or both of from_number and messaging_service_sid is refused."""
    base = {"account_sid": "AC" + "0" * 32, "auth_token": "t"}
    with pytest.raises(ValueError, match="exactly one"):
        TwilioSettings(**base)
    with pytest.raises(ValueError, match="exactly one"):
        TwilioSettings(**base, from_number="+15005550006", messaging_service_sid=SERVICE)
    with pytest.raises(ValueError, match="currency"):
        TwilioSettings(**base, from_number="+1", currency="usd")


async def test_validity_period_fits_twilios_range(make: Make, fake_clock: FakeClock) -> None:
    """ValidityPeriod is the whole seconds left to the deadline, at least 1; past 36,000
    (Twilio's maximum and default) or with no deadline it is left out."""
    provider = await make()
    now = fake_clock.now()
    assert provider.validity(None) is None
    assert provider.validity(now + 90.7) == 90
    assert provider.validity(now + 36_000) == 36_000
    assert provider.validity(now + 36_001) is None
    assert provider.validity(now - 5) == 1
    assert "ValidityPeriod" not in dict(provider.form(request(deadline_ts=now + 86_400)))


async def test_cost_is_segments_times_price(make: Make, emu: TwilioEmulator) -> None:
    """With a price, the cost is the text's segments times it: 71 Cyrillic letters are
    2 UCS-2 segments; the emulator's own count agrees."""
    provider = await make(price_per_segment=0.0075)
    result = await provider.send(request("я" * 71))
    assert result.cost == pytest.approx(0.015)
    assert (await provider.send(request("a" * 160))).cost == pytest.approx(0.0075)
    assert emu.requests[0].parsed["Body"] == "я" * 71


@pytest.mark.parametrize(
    ("script", "error", "code", "extra"),
    [
        ("bad_token", PermanentError, "20003", {"account": True}),
        ("not_found", PermanentError, "20404", {"account": False}),
        ({"do": "rate_limited", "retry_after": 7}, TransientError, "20429", {"retry_after": 7}),
        ("rate_limited", TransientError, "20429", {"retry_after": None}),
        ("invalid_number", UnreachableError, "21211", {"gone": None}),
        ("region_not_allowed", PermanentError, "21408", {"account": True}),
        ("not_sms_capable", PermanentError, "21606", {"account": True}),
        ("unverified", PermanentError, "21608", {"account": True}),
        ("unsubscribed", UnreachableError, "21610", {"gone": "unsubscribed"}),
        ("queue_full", TransientError, "21611", {}),
        ("not_routable", UnreachableError, "21612", {"gone": None}),
        ("not_mobile", UnreachableError, "21614", {"gone": None}),
        ("landline", UnreachableError, "21635", {"gone": None}),
        ("too_long", PermanentError, "21658", {"account": False}),
        ("server_error", TransientError, "20500", {}),
        ("unavailable", TransientError, "20503", {}),
        ("hang_up", UnknownOutcomeError, "after_send", {}),
    ],
)
async def test_every_rest_error_is_classified(
    make: Make,
    emu: TwilioEmulator,
    script: Any,
    error: type[ProviderError],
    code: str,
    extra: dict[str, Any],
) -> None:
    """Each row of providers.md section 4.4: the emulator's envelope -> our error class."""
    emu.script(PHONE, script)
    provider = await make()
    with pytest.raises(error) as caught:
        await provider.send(request())
    assert type(caught.value) is error
    assert caught.value.code == code
    for name, value in extra.items():
        assert getattr(caught.value, name) == value


async def test_the_emulator_checks_what_twilio_checks(make: Make) -> None:
    """A wrong auth token is 20003 (account); a malformed To is 21211 (unreachable)."""
    with pytest.raises(PermanentError) as caught:
        await (await make(auth_token="wrong")).send(request())
    assert (caught.value.code, caught.value.account) == ("20003", True)
    with pytest.raises(UnreachableError) as unreachable:
        await (await make()).send(request(address="+7916"))
    assert unreachable.value.code == "21211"


def _mock(status: int, body: bytes, headers: dict[str, str] | None = None) -> httpx.MockTransport:
    return httpx.MockTransport(lambda r: httpx.Response(status, content=body, headers=headers))


@pytest.mark.parametrize(
    ("status", "body", "error", "account"),
    [
        (400, json.dumps({"code": 29999, "message": "x" * 5000}).encode(), PermanentError, False),
        (418, b"<html>" + b"teapot " * 2000 + b"</html>", PermanentError, False),
        (403, b"{}", PermanentError, True),
        (502, b"bad gateway", TransientError, None),
    ],
)
async def test_an_unclassified_answer_fails_safe(
    emu: TwilioEmulator,
    fake_clock: FakeClock,
    status: int,
    body: bytes,
    error: type[ProviderError],
    account: bool | None,
) -> None:
    """A code nobody classified is permanent with the answer's words, bounded; bare
    statuses follow the shared rules."""
    values = {**emu.settings(), "public_url": PUBLIC}
    values.pop("type")
    provider = TwilioSmsProvider(
        "twilio", TwilioSettings(**values), clock=fake_clock, http=_mock(status, body)
    )
    with pytest.raises(error) as caught:
        await provider.send(request())
    assert len(str(caught.value)) < 500
    if account is not None:
        assert isinstance(caught.value, PermanentError)
        assert caught.value.account is account
    await provider.aclose()


async def test_a_2xx_without_a_sid_is_an_unknown_outcome(
    emu: TwilioEmulator, fake_clock: FakeClock
) -> None:
    """Twilio took something: resending could send it twice."""
    values = {**emu.settings()}
    values.pop("type")
    provider = TwilioSmsProvider(
        "twilio", TwilioSettings(**values), clock=fake_clock, http=_mock(201, b"{}")
    )
    with pytest.raises(UnknownOutcomeError):
        await provider.send(request())
    await provider.aclose()


def test_registered_and_declares_its_receipts() -> None:
    """`type: twilio_sms` is built in; without public_url only `accepted` can be awaited."""
    assert registry.get("twilio_sms") is TwilioSmsProvider
    with_url = TwilioSettings(
        account_sid="AC" + "0" * 32, auth_token="t", from_number="+1", public_url=PUBLIC
    )
    without = with_url.model_copy(update={"public_url": None})
    assert TwilioSmsProvider.can_satisfy(WaitFor.DELIVERED, with_url)
    assert not TwilioSmsProvider.can_satisfy(WaitFor.DELIVERED, without)
    assert TwilioSmsProvider.can_satisfy(WaitFor.ACCEPTED, without)
    assert not TwilioSmsProvider.can_satisfy(WaitFor.READ, with_url)


# -- status callbacks ---------------------------------------------------------------


async def _send_and_wait(
    provider: TwilioSmsProvider, fake_clock: FakeClock, seconds: float = 5
) -> str:
    result = await provider.send(request())
    await fake_clock.advance(seconds)
    return result.provider_message_id


async def test_delivered_callbacks(
    make: Make, emu: TwilioEmulator, inbox: Inbox, fake_clock: FakeClock
) -> None:
    """`sent` then `delivered`, posted to StatusCallback, signed, verified, with stable ids."""
    sid = await _send_and_wait(await make(), fake_clock)
    assert inbox.refused == []
    assert inbox.receipts == [("sent", None), ("delivered", None)]
    ids = [r.receipt_id for i in inbox.inbound for r in i.receipts]
    assert ids == [f"{sid}:sent", f"{sid}:delivered"]
    assert all(r.provider_message_id == sid for i in inbox.inbound for r in i.receipts)
    assert [h.url for h in emu.webhooks] == [inbox.url, inbox.url]


async def test_sent_alone_does_not_satisfy_delivered(
    make: Make, emu: TwilioEmulator, inbox: Inbox, fake_clock: FakeClock
) -> None:
    """A carrier without DLRs stops at `sent`: a SENT receipt, never DELIVERED."""
    emu.script(PHONE, {"do": "deliver", "delivered": 10_000})
    await _send_and_wait(await make(), fake_clock, 5)
    assert inbox.receipts == [("sent", None)]
    assert inbox.inbound[0].receipts[0].status is ReceiptStatus.SENT


@pytest.mark.parametrize(
    ("code", "status"),
    [(30003, "undelivered"), (30005, "undelivered"), (30006, "undelivered"), (30001, "failed")],
)
async def test_failed_callbacks_carry_the_error_code(
    make: Make, emu: TwilioEmulator, inbox: Inbox, fake_clock: FakeClock, code: int, status: str
) -> None:
    """`undelivered` and `failed` with ErrorCode are failed receipts with that code."""
    emu.script(PHONE, {"do": "fail_receipt", "code": code})
    sid = await _send_and_wait(await make(), fake_clock)
    assert inbox.receipts == [("sent", None), ("failed", str(code))]
    failed = inbox.inbound[1].receipts[0]
    assert failed.receipt_id == f"{sid}:{status}"
    assert failed.error
    assert emu.webhooks[1].body.decode().count(f"MessageStatus={status}") == 1


async def test_duplicate_and_out_of_order_callbacks(
    make: Make, emu: TwilioEmulator, inbox: Inbox, fake_clock: FakeClock
) -> None:
    """A duplicate has the same receipt id (it dedupes); out of order is read as it comes."""
    emu.script(PHONE, ["duplicate_receipts", "out_of_order"])
    provider = await make()
    first = await _send_and_wait(provider, fake_clock)
    ids = [r.receipt_id for i in inbox.inbound for r in i.receipts]
    assert ids == [f"{first}:sent", f"{first}:delivered", f"{first}:delivered"]
    inbox.inbound.clear()
    await _send_and_wait(provider, fake_clock)
    assert inbox.receipts == [("delivered", None), ("sent", None)]


async def test_twilios_own_steps_are_acknowledged_without_a_receipt() -> None:
    """`queued`, `sending` and the like are not receipts; a body without a sid is malformed."""
    provider = _offline()
    for status in ("accepted", "queued", "sending", "scheduled"):
        assert (await provider.receive(signed(PUBLIC, callback(status)))).receipts == []
    with pytest.raises(ValueError, match="MessageSid"):
        await provider.receive(signed(PUBLIC, {"MessageStatus": "sent"}))


async def test_stop_is_a_gone_signal(
    make: Make, emu: TwilioEmulator, inbox: Inbox, fake_clock: FakeClock
) -> None:
    """A customer's STOP comes as an incoming message (OptOutType=STOP): the number is gone;
    later sends answer 21610."""
    emu.webhook_url = inbox.url
    provider = await make()
    await emu.event("stop", PHONE)
    [signal] = inbox.inbound[0].signals
    assert (signal.kind, signal.address, signal.reason) == (
        SignalKind.GONE,
        PHONE,
        "unsubscribed",
    )
    with pytest.raises(UnreachableError) as caught:
        await provider.send(request())
    assert caught.value.gone == "unsubscribed"


# -- signatures -----------------------------------------------------------------------


def _offline(public_url: str = PUBLIC) -> TwilioSmsProvider:
    settings = TwilioSettings(
        account_sid="AC" + "0123456789abcdef" * 2,
        auth_token=TOKEN,
        from_number="+15005550006",
        public_url=public_url,
    )
    return TwilioSmsProvider("twilio", settings, clock=FakeClock())


async def test_a_signature_by_twilios_request_validator_is_accepted() -> None:
    """Signed by the official package over public_url, whatever URL the app saw."""
    inbound = await _offline().receive(signed(PUBLIC, callback("delivered")))
    assert [r.status for r in inbound.receipts] == [ReceiptStatus.DELIVERED]


@pytest.mark.parametrize(
    ("public_url", "signed_url"),
    [
        ("https://hooks.example.com/twilio/status", "https://hooks.example.com:443/twilio/status"),
        ("https://hooks.example.com:443/twilio/status", "https://hooks.example.com/twilio/status"),
        ("http://hooks.example.com/s?x=1", "http://hooks.example.com:80/s?x=1"),
    ],
)
async def test_the_explicit_default_port_is_accepted(public_url: str, signed_url: str) -> None:
    """Twilio signs with or without :443/:80; both verify, as twilio-python's validator."""
    assert RequestValidator(TOKEN).validate(
        public_url,
        callback("sent"),
        RequestValidator(TOKEN).compute_signature(signed_url, callback("sent")),
    )
    inbound = await _offline(public_url).receive(signed(signed_url, callback("sent")))
    assert len(inbound.receipts) == 1


@pytest.mark.parametrize(
    "hook",
    [
        signed(PUBLIC, callback("delivered"), token="another-token"),
        signed("http://10.0.0.7:8000/receipts/twilio", callback("delivered")),  # the inner URL
        signed("https://hooks.example.com:8443/twilio/status", callback("delivered")),
        WebhookRequest("POST", PUBLIC, {}, urlencode(callback("delivered")).encode()),
    ],
    ids=["wrong-token", "internal-url", "other-port", "no-header"],
)
async def test_a_wrong_signature_is_refused_with_403(hook: WebhookRequest) -> None:
    """A signature that does not match public_url + the form is BadSignature, 403."""
    with pytest.raises(BadSignature) as caught:
        await _offline().receive(hook)
    assert caught.value.status == 403


async def test_a_tampered_parameter_is_refused() -> None:
    """Every parameter is signed: changing one (or adding one) breaks the signature."""
    good = signed(PUBLIC, callback("failed", ErrorCode="30003"))
    for body in (
        good.body.replace(b"30003", b"30008"),
        good.body + b"&Extra=1",
    ):
        with pytest.raises(BadSignature):
            await _offline().receive(WebhookRequest("POST", PUBLIC, good.headers, body))


async def test_the_emulators_signatures_pass_twilios_validator(
    make: Make, emu: TwilioEmulator, inbox: Inbox, fake_clock: FakeClock
) -> None:
    """What the emulator posts verifies with the official RequestValidator."""
    await _send_and_wait(await make(), fake_clock)
    validator = RequestValidator(TOKEN)
    for hook in emu.webhooks:
        params = dict(parse_qsl(hook.body.decode()))
        assert hook.url is not None
        assert validator.validate(hook.url, params, hook.headers["X-Twilio-Signature"])


async def test_no_public_url_means_nothing_verifies() -> None:
    """Without public_url there is nothing to verify against: 403."""
    provider = _offline()
    provider.settings = provider.settings.model_copy(update={"public_url": None})
    with pytest.raises(BadSignature):
        await provider.receive(signed(PUBLIC, callback("sent")))


# -- twilio-python ----------------------------------------------------------------------


async def test_twilio_python_talks_to_the_emulator(
    emu: TwilioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """twilio-python with `client.api.base_url` set: creates and fetches messages, and
    raises TwilioRestException with the code of a scripted error."""
    for name in ("TWILIO_REGION", "TWILIO_EDGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = Client(emu.account_sid, emu.auth_token)
    client.api.base_url = emu.api_url

    def create(**kwargs: Any) -> Any:
        return client.messages.create(**kwargs)

    message = await asyncio.to_thread(create, to=PHONE, from_="+15005550006", body="hi")
    assert message.sid.startswith("SM")
    assert message.status == "queued"
    assert message.num_segments == "1"
    fetched = await asyncio.to_thread(lambda: client.messages(message.sid).fetch())
    assert fetched.body == "hi"
    emu.script("+79160000000", "unsubscribed")
    with pytest.raises(TwilioRestException) as caught:
        await asyncio.to_thread(create, to="+79160000000", from_="+15005550006", body="hi")
    assert (caught.value.status, caught.value.code) == (400, 21610)


# -- a whole cascade ------------------------------------------------------------------------


async def _answered(notifier: Notifier, delivery_id: str, timeout: float = 5.0) -> None:
    """Real time: wait until the send's answer is recorded. (FakeClock.settle sees work on
    the loop, not a request waiting on a socket; fake time must not pass the step's
    deadline while the loopback call is in flight.)"""
    async with asyncio.timeout(timeout):
        while True:
            attempts = (await notifier.get(delivery_id)).attempts
            if attempts and attempts[-1].provider_message_id is not None:
                return
            await asyncio.sleep(0.005)


async def test_cascade_through_the_receipts_endpoint(fake_clock: FakeClock) -> None:
    """Notifier -> twilio_sms -> emulator; the signed callbacks come back to
    `{url}/receipts/twilio` (public_url) and end the cascade `delivered`, with the cost."""
    late: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await late["app"](scope, receive, send)

    async with TwilioEmulator(clock=fake_clock) as emu, serve(app) as url:
        settings = {**emu.settings(), "public_url": f"{url}/receipts/twilio"}
        settings["price_per_segment"] = 0.05
        policy = {
            "providers": {"twilio": settings},
            "policies": {
                "service": {
                    "steps": [
                        {
                            "channel": "sms",
                            "providers": ["twilio"],
                            "wait_for": "delivered",
                            "timeout": "10m",
                        }
                    ]
                }
            },
        }
        notifier = Notifier.from_yaml(json.dumps(policy), clock=fake_clock, store="memory://")
        late["app"] = notifier.asgi_app()
        async with notifier:
            text = "Ваша посылка A-1234 прибыла в пункт выдачи. Код получения: 4821. Ждём вас."
            delivery = await notifier.send(Recipient(id="anna", sms=PHONE), Message(text=text))
            await _answered(notifier, delivery.id)
            [delivery] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert delivery.status is DeliveryStatus.DELIVERED
    [attempt] = delivery.attempts
    [message] = emu.outbox
    assert attempt.provider_message_id == message.id
    assert [r.status.value for r in attempt.receipts] == ["sent", "delivered"]
    assert attempt.cost == pytest.approx(0.10)  # 75 Cyrillic characters: 2 UCS-2 segments
    assert all(h.delivered for h in emu.webhooks)
    assert message.request.parsed["StatusCallback"] == f"{url}/receipts/twilio"
    assert int(message.request.parsed["ValidityPeriod"]) == 600
