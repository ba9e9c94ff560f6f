"""`smsru` against the SMS.ru emulator over real loopback HTTP: sends, every code of
providers.md section 5.3, the signed delivery callback (answered `100`), polling
`sms/status` in batches, and a cascade where callback and poll meet in one receipt."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import pytest

from cascade_notify import DeliveryStatus, Message, Notifier, Recipient
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.models import ReceiptStatus
from cascade_notify.providers import registry
from cascade_notify.providers._signing import BadSignature
from cascade_notify.providers.base import SendRequest, WebhookRequest
from cascade_notify.providers.sms.smsru import CODES, SmsRuProvider, SmsRuSettings, callback_hash
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import SmsRuEmulator
from webhook_harness import serve

from .conftest import answered

PHONE = "+79161234567"
DIGITS = "79161234567"


@pytest.fixture
async def emu(fake_clock: FakeClock) -> AsyncIterator[SmsRuEmulator]:
    async with SmsRuEmulator(clock=fake_clock) as emulator:
        yield emulator


Make = Callable[..., Awaitable[SmsRuProvider]]


@pytest.fixture
async def make(emu: SmsRuEmulator, fake_clock: FakeClock) -> AsyncIterator[Make]:
    made: list[SmsRuProvider] = []

    async def build(**changes: Any) -> SmsRuProvider:
        values = {**emu.settings(), **changes}
        values.pop("type")
        provider = SmsRuProvider("smsru", SmsRuSettings(**values), clock=fake_clock)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


def request(text: str = "Your parcel A-1234 has arrived.", address: str = PHONE) -> SendRequest:
    return SendRequest(
        attempt_id="at-1",
        delivery_id="dl-1",
        channel="sms",
        address=address,
        recipient=Recipient(id="anna", sms=address),
        message=Message(text=text),
    )


def callback(api_id: str, *events: str, hash_: str | None = None) -> WebhookRequest:
    fields = [(f"data[{i}]", e) for i, e in enumerate(events)]
    fields.append(("hash", callback_hash(api_id, list(events)) if hash_ is None else hash_))
    return WebhookRequest(
        "POST",
        "http://127.0.0.1/receipts/smsru",
        {"content-type": "application/x-www-form-urlencoded"},
        urlencode(fields).encode(),
    )


def test_registered() -> None:
    """`type: smsru` is a built-in."""
    assert registry.get("smsru") is SmsRuProvider


async def test_send_posts_the_form_and_returns_the_sms_id(make: Make, emu: SmsRuEmulator) -> None:
    """A send is a POST form with api_id, to (digits), msg, json=1 and from; the
    number's sms_id is the provider message id, and the cost is segments x price."""
    provider = await make(sender="Parcels", price_per_segment=0.5, currency="RUB")
    result = await provider.send(request("я" * 71))
    [record] = emu.requests
    assert record.method == "POST"
    assert record.path == "/sms/send"
    assert record.parsed == {
        "api_id": emu.api_id,
        "to": DIGITS,
        "msg": "я" * 71,
        "json": "1",
        "from": "Parcels",
    }
    [message] = emu.sent_to(PHONE)
    assert result.provider_message_id == message.id
    assert result.cost == pytest.approx(1.0)  # 71 Cyrillic letters: 2 UCS-2 segments


# every code of section 5.3 the emulator can be scripted to answer, and what it becomes
CODE_TABLE = [
    ("bad_token", PermanentError, "200", True),
    ("no_money", PermanentError, "201", True),
    ("invalid_number", UnreachableError, "202", False),
    ("sender_not_approved", PermanentError, "204", True),
    ("too_long", PermanentError, "205", False),
    ("daily_limit", TransientError, "206", False),
    ("no_route", UnreachableError, "207", False),
    ("stop_list", UnreachableError, "209", False),
    ("unavailable", TransientError, "220", False),
    ("number_daily_limit", UnreachableError, "230", False),
    ("duplicate_minute", TransientError, "231", False),
    ("duplicate_day", UnreachableError, "232", False),
    ("code_too_often", UnreachableError, "233", False),
    ("expired_token", PermanentError, "300", True),
    ("bad_login", PermanentError, "301", True),
    ("not_confirmed", PermanentError, "302", True),
    ("server_error", TransientError, "500", False),
    ("http_503", TransientError, "503", False),
]


@pytest.mark.parametrize(("entry", "kind", "code", "account"), CODE_TABLE)
async def test_codes_are_classified(
    make: Make,
    emu: SmsRuEmulator,
    entry: str,
    kind: type[ProviderError],
    code: str,
    account: bool,
) -> None:
    """Each SMS.ru code (HTTP 200, in status_code) is the class providers.md gives it."""
    provider = await make()
    emu.script(PHONE, entry)
    with pytest.raises(kind) as raised:
        await provider.send(request())
    assert raised.value.code == code
    assert type(raised.value) is kind
    if isinstance(raised.value, PermanentError):
        assert raised.value.account is account
    if code == "209":
        assert isinstance(raised.value, UnreachableError)
        assert raised.value.gone == "unsubscribed"


async def test_a_wrong_api_id_is_an_account_error(make: Make) -> None:
    """The emulator checks api_id as SMS.ru does: 200, permanent, opens the breaker."""
    provider = await make(api_id="wrong")
    with pytest.raises(PermanentError) as raised:
        await provider.send(request())
    assert raised.value.code == "200"
    assert raised.value.account


async def test_more_than_8_sms_is_refused_by_the_gateway(make: Make) -> None:
    """A text of 9 GSM-7 segments gets SMS.ru's 205 (too long)."""
    provider = await make()
    with pytest.raises(PermanentError) as raised:
        await provider.send(request("a" * (8 * 153 + 1)))
    assert raised.value.code == "205"


async def test_a_hang_up_is_an_unknown_outcome(make: Make, emu: SmsRuEmulator) -> None:
    """The connection closed after the request went out: maybe sent, never resent."""
    provider = await make()
    emu.script(PHONE, "hang_up")
    with pytest.raises(UnknownOutcomeError):
        await provider.send(request())


# -- the callback ----------------------------------------------------------------------


async def test_callback_is_verified_and_answered_100(make: Make) -> None:
    """data[] events become receipts (102 sent, 103 delivered, 104..150 failed) and the
    answer is the plain body 100."""
    provider = await make()
    api_id = provider.settings.api_id.get_secret_value()
    events = [
        "sms_status\n000000-1\n102\n1735689660",
        "sms_status\n000000-1\n103\n1735689661",
        "sms_status\n000000-2\n104\n1735689662",
        "sms_status\n000000-3\n150\n1735689662",
        "sms_status\n000000-4\n101\n1735689662",  # SMS.ru's own step: no receipt
        "callcheck_status\n201234-1000\n401\n1735689662",  # not ours
    ]
    inbound = await provider.receive(callback(api_id, *events))
    assert [(r.provider_message_id, r.status, r.code) for r in inbound.receipts] == [
        ("000000-1", ReceiptStatus.SENT, None),
        ("000000-1", ReceiptStatus.DELIVERED, None),
        ("000000-2", ReceiptStatus.FAILED, "104"),
        ("000000-3", ReceiptStatus.FAILED, "150"),
    ]
    assert inbound.answer is not None
    assert (inbound.answer.status, inbound.answer.body) == (200, b"100")


@pytest.mark.parametrize(
    "change",
    [
        {"hash_": "0" * 64},  # wrong hash
        {"hash_": ""},  # no hash
        {"api_id": "another-account"},  # signed with another key
    ],
)
async def test_bad_callback_signature_is_refused(make: Make, change: dict[str, str]) -> None:
    """A callback whose hash is missing or does not match is BadSignature, reading nothing."""
    provider = await make()
    api_id = change.pop("api_id", provider.settings.api_id.get_secret_value())
    with pytest.raises(BadSignature):
        await provider.receive(callback(api_id, "sms_status\n000000-1\n103\n1", **change))


async def test_tampered_callback_is_refused(make: Make) -> None:
    """A data[] element changed after signing (delivered for failed) does not verify."""
    provider = await make()
    api_id = provider.settings.api_id.get_secret_value()
    good = callback(api_id, "sms_status\n000000-1\n104\n1")
    body = good.body.replace(b"104", b"103")
    with pytest.raises(BadSignature):
        await provider.receive(WebhookRequest("POST", good.url, good.headers, body))


async def test_emulator_callbacks_verify_and_resend_until_100(
    make: Make, emu: SmsRuEmulator, fake_clock: FakeClock
) -> None:
    """The emulator's callbacks verify with the provider; one not answered 100 is sent
    again."""
    provider = await make()
    answers: list[bytes] = [b"oops", b"100", b"100", b"100"]
    seen: list[ReceiptStatus] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        inbound = await provider.receive(WebhookRequest("POST", "http://x/", headers, body))
        seen.extend(r.status for r in inbound.receipts)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": answers.pop(0)})

    async with serve(app) as url:
        emu.webhook_url = url
        emu.script(PHONE, "deliver")
        await provider.send(request())
        await fake_clock.advance(0.1)
        assert len(emu.webhooks[0].attempts) == 1
        assert not emu.webhooks[0].delivered  # answered "oops"
        await fake_clock.advance(10)
    assert all(h.delivered for h in emu.webhooks)
    assert seen.count(ReceiptStatus.SENT) == 2  # the first, sent again
    assert ReceiptStatus.DELIVERED in seen


# -- polling ---------------------------------------------------------------------------


async def test_poll_asks_many_ids_in_one_call(
    make: Make, emu: SmsRuEmulator, fake_clock: FakeClock
) -> None:
    """sms/status takes a comma list: one call for every id, each status a receipt."""
    provider = await make()
    emu.script("79160000001", "deliver")
    emu.script("79160000002", {"do": "fail_receipt", "code": 106})
    emu.script("79160000003", "no_receipt")
    ids = [
        (await provider.send(request(address=f"+7916000000{i}"))).provider_message_id
        for i in (1, 2, 3)
    ]
    await fake_clock.advance(5)
    before = len(emu.requests)
    receipts = await provider.poll([*ids, "000000-99999"])
    [call] = emu.requests[before:]
    assert call.path == "/sms/status"
    assert call.parsed["sms_id"] == ",".join([*ids, "000000-99999"])
    assert [(r.provider_message_id, r.status, r.code) for r in receipts] == [
        (ids[0], ReceiptStatus.DELIVERED, None),
        (ids[1], ReceiptStatus.FAILED, "106"),
    ]
    assert provider.poll_batch == 100


async def test_a_failing_status_call_raises(make: Make, emu: SmsRuEmulator) -> None:
    """A refused or failed status call raises, so the poller backs off."""
    provider = await make()
    emu.status_errors += ["server_error", "http_503", "bad_token"]
    with pytest.raises(TransientError):
        await provider.poll(["000000-1"])
    with pytest.raises(TransientError):
        await provider.poll(["000000-1"])
    with pytest.raises(PermanentError):
        await provider.poll(["000000-1"])


async def test_cascade_callback_and_poll_meet_in_one_receipt(
    emu: SmsRuEmulator, fake_clock: FakeClock
) -> None:
    """Notifier -> smsru -> emulator: the callback through the receipts endpoint and the
    poll both report `delivered`; it is recorded once, and the cascade ends delivered."""
    late: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await late["app"](scope, receive, send)

    async with serve(app) as url:
        emu.webhook_url = f"{url}/receipts/smsru"
        settings = {**emu.settings(), "poll_interval": "30s", "price_per_segment": 0.5}
        policy = {
            "providers": {"smsru": {**settings, "currency": "RUB"}},
            "policies": {"p": {"steps": [{"channel": "sms", "providers": ["smsru"]}]}},
        }
        notifier = Notifier.from_yaml(json.dumps(policy), clock=fake_clock, store="memory://")
        late["app"] = notifier.asgi_app()
        emu.script(PHONE, {"do": "deliver", "delivered": 40})
        async with notifier:
            delivery = await notifier.send(Recipient(id="anna", sms=PHONE), Message(text="Hi"))
            await answered(notifier, delivery.id)
            [delivery] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert delivery.status is DeliveryStatus.DELIVERED
    [attempt] = delivery.attempts
    assert [r.status for r in attempt.receipts] == [ReceiptStatus.SENT, ReceiptStatus.DELIVERED]
    assert any(r.path == "/sms/status" for r in emu.requests)  # polled at 30 s
    assert attempt.cost == pytest.approx(0.5)


@pytest.mark.parametrize("code", sorted(CODES))
async def test_every_code_of_the_table(make: Make, code: int) -> None:
    """Every code of section 5.3 (those the emulator cannot be scripted to give as well)
    has the class CODES names, with SMS.ru's words in the message."""
    provider = await make()
    error = provider.refused(code, "слова SMS.ru")
    kind = CODES[code].kind
    expected = {
        "transient": TransientError,
        "unreachable": UnreachableError,
        "move_on": UnreachableError,
        "unsubscribed": UnreachableError,
        "permanent": PermanentError,
        "account": PermanentError,
    }[kind]
    assert type(error) is expected
    assert error.code == str(code)
    assert "слова SMS.ru" in str(error)
    if isinstance(error, PermanentError):
        assert error.account is (kind == "account")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (104, ReceiptStatus.FAILED),
        (105, ReceiptStatus.FAILED),
        (106, ReceiptStatus.FAILED),
        (107, ReceiptStatus.FAILED),
        (108, ReceiptStatus.FAILED),
        (150, ReceiptStatus.FAILED),
    ],
)
async def test_every_failure_receipt_by_callback_and_poll(
    make: Make, emu: SmsRuEmulator, fake_clock: FakeClock, code: int, status: ReceiptStatus
) -> None:
    """Each failure code the emulator reports comes the same by its signed callback and by
    `sms/status`, with the same receipt id (recorded once)."""
    provider = await make()
    emu.script(PHONE, {"do": "fail_receipt", "code": code})
    sms_id = (await provider.send(request())).provider_message_id
    await fake_clock.advance(5)
    hook = emu.webhooks[-1]
    inbound = await provider.receive(
        WebhookRequest(
            "POST", "http://x/", {k.lower(): v for k, v in hook.headers.items()}, hook.body
        )
    )
    [by_callback] = inbound.receipts
    [by_poll] = await provider.poll([sms_id])
    for receipt in (by_callback, by_poll):
        assert (receipt.status, receipt.code) == (status, str(code))
    assert by_callback.receipt_id == by_poll.receipt_id == f"{sms_id}:{code}"


def test_unknown_code_is_permanent_with_the_words() -> None:
    """A code nobody classified fails safe: permanent, SMS.ru's words kept."""
    provider = SmsRuProvider("smsru", SmsRuSettings(api_id="k"))
    error = provider.refused(777, "что-то новое")
    assert type(error) is PermanentError
    assert (error.code, error.account) == ("777", False)
    assert "что-то новое" in str(error)


async def test_the_price_a_status_answer_reports_becomes_the_cost(
    emu: SmsRuEmulator, fake_clock: FakeClock
) -> None:
    """Polling only (no callback URL): the `cost` of the sms/status answer travels on the
    receipt and wins over segments x price_per_segment."""
    settings = {**emu.settings(), "poll_interval": "30s", "price_per_segment": 0.5}
    policy = {
        "providers": {"smsru": {**settings, "currency": "RUB"}},
        "policies": {"p": {"steps": [{"channel": "sms", "providers": ["smsru"]}]}},
    }
    emu.price = 0.7
    notifier = Notifier.from_yaml(json.dumps(policy), clock=fake_clock, store="memory://")
    async with notifier:
        delivery = await notifier.send(Recipient(id="anna", sms=PHONE), Message(text="Hi"))
        await answered(notifier, delivery.id)
        assert (await notifier.get(delivery.id)).attempts[0].cost == 0.5  # the estimate
        [delivery] = await run_until_final(notifier, fake_clock, [delivery.id])
    [attempt] = delivery.attempts
    assert (attempt.cost, attempt.currency) == (0.7, "RUB")
    assert delivery.cost == pytest.approx(0.7)
