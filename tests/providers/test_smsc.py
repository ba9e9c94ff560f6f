"""`smsc` against the SMSC emulator over real loopback HTTP: sends, every `error_code` of
providers.md section 6.1, every delivery status of section 6.3 learned by polling
`status.php` in batches, the back-off of a failing status call, and a whole cascade whose
receipts come by polling alone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

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
from cascade_notify.polling import Poller
from cascade_notify.providers import registry
from cascade_notify.providers.base import SendRequest
from cascade_notify.providers.sms.smsc import SmscProvider, SmscSettings
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import SmscEmulator

from .conftest import answered

PHONE = "+79161234567"


@pytest.fixture
async def emu(fake_clock: FakeClock) -> AsyncIterator[SmscEmulator]:
    async with SmscEmulator(clock=fake_clock) as emulator:
        yield emulator


Make = Callable[..., Awaitable[SmscProvider]]


@pytest.fixture
async def make(emu: SmscEmulator, fake_clock: FakeClock) -> AsyncIterator[Make]:
    made: list[SmscProvider] = []

    async def build(**changes: Any) -> SmscProvider:
        values = {**emu.settings(), **changes}
        values.pop("type")
        provider = SmscProvider("smsc", SmscSettings(**values), clock=fake_clock)
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


def test_registered_and_takes_no_webhooks() -> None:
    """`type: smsc` is a built-in; its callback is unconfirmed, so it takes none."""
    assert registry.get("smsc") is SmscProvider
    assert SmscProvider.webhook_methods == frozenset()


async def test_send_posts_the_form_and_takes_the_reported_cost(
    make: Make, emu: SmscEmulator
) -> None:
    """A send is a POST form (login, psw, phones, mes, fmt=3, charset, cost=3, sender);
    the id and phone are the provider message id, SMSC's reported cost the attempt's."""
    provider = await make(sender="Parcels", price_per_segment=9.99)
    result = await provider.send(request("я" * 71))
    [record] = emu.requests
    assert record.path == "/sys/send.php"
    assert record.parsed == {
        "login": emu.login,
        "psw": emu.password,
        "phones": PHONE,
        "mes": "я" * 71,
        "fmt": "3",
        "charset": "utf-8",
        "cost": "3",
        "sender": "Parcels",
    }
    [message] = emu.outbox
    assert result.provider_message_id == f"{message.id}:79161234567"
    assert result.cost == pytest.approx(3.8)  # 2 segments at the emulator's 1.90, not 9.99


ERROR_TABLE = [
    ("bad_params", PermanentError, "1", False),
    ("bad_token", PermanentError, "2", True),
    ("no_money", PermanentError, "3", True),
    ("ip_blocked", TransientError, "4", False),
    ("bad_date", PermanentError, "5", False),
    ("forbidden", PermanentError, "6", False),
    ("invalid_number", UnreachableError, "7", False),
    ("undeliverable", UnreachableError, "8", False),
    ("duplicate", TransientError, "9", False),
    ("http_503", TransientError, "503", False),
]


@pytest.mark.parametrize(("entry", "kind", "code", "account"), ERROR_TABLE)
async def test_errors_are_classified(
    make: Make,
    emu: SmscEmulator,
    entry: str,
    kind: type[ProviderError],
    code: str,
    account: bool,
) -> None:
    """Each SMSC error_code (HTTP 200) is the class providers.md gives it."""
    provider = await make()
    emu.script(PHONE, entry)
    with pytest.raises(kind) as raised:
        await provider.send(request())
    assert type(raised.value) is kind
    assert raised.value.code == code
    if isinstance(raised.value, PermanentError):
        assert raised.value.account is account
    if code == "9":
        assert isinstance(raised.value, TransientError)
        assert raised.value.retry_after == 60


async def test_a_wrong_password_is_an_account_error(make: Make) -> None:
    provider = await make(password="wrong")
    with pytest.raises(PermanentError) as raised:
        await provider.send(request())
    assert (raised.value.code, raised.value.account) == ("2", True)


async def test_a_hang_up_is_an_unknown_outcome(make: Make, emu: SmscEmulator) -> None:
    provider = await make()
    emu.script(PHONE, "hang_up")
    with pytest.raises(UnknownOutcomeError):
        await provider.send(request())


# -- polling ---------------------------------------------------------------------------

STATUS_TABLE = [
    ({"do": "deliver"}, ReceiptStatus.DELIVERED, None),
    ({"do": "fail_receipt", "code": 20}, ReceiptStatus.FAILED, "20"),
    ({"do": "fail_receipt", "code": 22}, ReceiptStatus.FAILED, "22"),
    ({"do": "fail_receipt", "code": 23}, ReceiptStatus.FAILED, "23"),
    ({"do": "fail_receipt", "code": 24}, ReceiptStatus.FAILED, "24"),
    ({"do": "fail_receipt", "code": 25}, ReceiptStatus.FAILED, "25"),
    ({"do": "fail_receipt", "code": 3}, ReceiptStatus.FAILED, "3"),
    ({"do": "fail_receipt", "code": -2}, ReceiptStatus.FAILED, "-2"),
]


@pytest.mark.parametrize(("script", "status", "code"), STATUS_TABLE)
async def test_every_status_is_a_receipt(
    make: Make,
    emu: SmscEmulator,
    fake_clock: FakeClock,
    script: dict[str, Any],
    status: ReceiptStatus,
    code: str | None,
) -> None:
    """status.php's status for one message (section 6.3) is the receipt it maps to;
    before anything happened (-1) there is none, and `sent` (0) comes first."""
    provider = await make()
    emu.script(PHONE, {**script, "sent": 0.5, "delivered": 2, "failed": 2})
    message_id = (await provider.send(request())).provider_message_id
    assert await provider.poll([message_id]) == []  # -1: waiting to be sent
    await fake_clock.advance(1)
    [sent] = await provider.poll([message_id])
    assert sent.status is ReceiptStatus.SENT
    await fake_clock.advance(2)
    [receipt] = await provider.poll([message_id])
    assert (receipt.status, receipt.code) == (status, code)
    assert receipt.receipt_id == f"{message_id}:{code or 1}"
    if status is ReceiptStatus.FAILED and code in ("20", "25"):
        assert receipt.error is not None
        assert "does not exist" in receipt.error  # the err detail (section 6.4)


async def test_poll_batches_ids_and_phones(
    make: Make, emu: SmscEmulator, fake_clock: FakeClock
) -> None:
    """Several messages go in one status.php call: comma lists of id and phone in the same
    order; a message SMSC does not know (-3) has no receipt."""
    provider = await make()
    ids = [
        (await provider.send(request(address=f"+7916000000{i}"))).provider_message_id
        for i in (1, 2)
    ]
    await fake_clock.advance(5)
    before = len(emu.requests)
    receipts = await provider.poll([*ids, "999:79160000009"])
    [call] = emu.requests[before:]
    assert call.method == "GET"
    assert call.parsed["id"].split(",") == [i.split(":")[0] for i in ids] + ["999"]
    assert call.parsed["phone"] == "79160000001,79160000002,79160000009"
    assert [(r.provider_message_id, r.status) for r in receipts] == [
        (ids[0], ReceiptStatus.DELIVERED),
        (ids[1], ReceiptStatus.DELIVERED),
    ]


async def test_polling_backs_off_on_errors_and_recovers(
    make: Make, emu: SmscEmulator, fake_clock: FakeClock
) -> None:
    """A failing status.php call is tried again after the interval, then twice that; the
    receipts then reach the door."""
    provider = await make(poll_interval=60)
    message_id = (await provider.send(request())).provider_message_id
    await fake_clock.advance(5)
    emu.status_errors += ["duplicate", "http_503"]
    got: list[list[Any]] = []

    async def door(receipts: Any) -> None:
        got.append(list(receipts))

    poller = Poller({"smsc": provider}, fake_clock, door)
    from cascade_notify.models import Attempt, AttemptStatus

    poller.request(
        Attempt(
            id="a", delivery_id="d", step=0, channel="sms", provider="smsc",
            status=AttemptStatus.ACCEPTED, started_ts=0.0, provider_message_id=message_id,
        )
    )  # fmt: skip
    await fake_clock.settle()
    calls = lambda: sum(r.path == "/sys/status.php" for r in emu.requests)  # noqa: E731
    assert calls() == 1 and got == []
    await fake_clock.advance(59)
    assert calls() == 1
    await fake_clock.advance(1)
    assert calls() == 2 and got == []  # failed again: next in 120 s
    await fake_clock.advance(119)
    assert calls() == 2
    await fake_clock.advance(1)
    assert calls() == 3
    assert [[r.status for r in batch] for batch in got] == [[ReceiptStatus.DELIVERED]]
    await poller.aclose()


async def test_cascade_by_polling_alone(emu: SmscEmulator, fake_clock: FakeClock) -> None:
    """Notifier -> smsc: no webhook at all; the delivery ends `delivered` from polled
    receipts, with the cost SMSC reported."""
    policy = {
        "providers": {"smsc": {**emu.settings(), "poll_interval": "1m", "currency": "RUB"}},
        "policies": {"p": {"steps": [{"channel": "sms", "providers": ["smsc"]}]}},
    }
    notifier = Notifier.from_yaml(json.dumps(policy), clock=fake_clock, store="memory://")
    emu.script(PHONE, {"do": "deliver", "delivered": 90})
    async with notifier:
        delivery = await notifier.send(Recipient(id="anna", sms=PHONE), Message(text="Hi"))
        await answered(notifier, delivery.id)
        [delivery] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert delivery.status is DeliveryStatus.DELIVERED
    [attempt] = delivery.attempts
    assert [r.status for r in attempt.receipts] == [ReceiptStatus.SENT, ReceiptStatus.DELIVERED]
    assert attempt.cost == pytest.approx(1.9)
    polls = [r.at for r in emu.requests if r.path == "/sys/status.php"]
    assert len(polls) == 2  # at 60 s (sent) and 120 s (delivered)
    assert emu.webhooks and all(h.url is None for h in emu.webhooks)


async def test_end_to_end_messengers_fail_gateway_one_down_gateway_two_delivers(
    emu: SmscEmulator, fake_clock: FakeClock
) -> None:
    """WhatsApp, Telegram and Viber fail (fakes); SMS.ru refuses connections (nothing
    listens on its port) and the step fails over at once to SMSC, which delivers. The
    delivery's cost is SMSC's, and the attempts show both gateways."""
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    policy = {
        "providers": {
            "wa": {"type": "fake", "channel": "whatsapp", "behavior": "unreachable"},
            "tg": {"type": "fake", "channel": "telegram", "behavior": "fail"},  # accepted only
            "vb": {"type": "fake", "channel": "viber", "behavior": "fail_receipt"},
            "smsru": {
                "type": "smsru",
                "api_id": "key",
                "api_url": f"http://127.0.0.1:{closed}",
                "price_per_segment": 0.5,
                "currency": "RUB",
            },
            "smsc": {**emu.settings(), "poll_interval": "30s", "currency": "RUB"},
        },
        "policies": {
            "p": {
                "steps": [
                    {"channel": "whatsapp", "providers": ["wa"]},
                    {"channel": "telegram", "providers": ["tg"], "wait_for": "accepted"},
                    {"channel": "viber", "providers": ["vb"]},
                    {"channel": "sms", "providers": ["smsru", "smsc"], "timeout": "10m"},
                ]
            }
        },
    }
    notifier = Notifier.from_yaml(json.dumps(policy), clock=fake_clock, store="memory://")
    who = Recipient(
        id="anna", whatsapp=PHONE, telegram="123456789", viber="01234567890A=", sms=PHONE
    )
    start = fake_clock.now()
    async with notifier:
        delivery = await notifier.send(who, Message(text="Ваша посылка прибыла."))
        [delivery] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.channel == "sms"
    assert [(a.provider, a.status.value) for a in delivery.attempts] == [
        ("wa", "unreachable"),
        ("tg", "failed"),
        ("vb", "failed"),
        ("smsru", "transient"),
        ("smsc", "delivered"),
    ]
    down, sent = delivery.attempts[3:]
    assert down.code == "connect"
    assert sent.started_ts == down.finished_ts  # at once, not after retries or the deadline
    assert sent.started_ts - start < 5
    assert (sent.segments, sent.encoding, sent.currency) == (1, "UCS-2", "RUB")
    assert sent.cost == pytest.approx(1.9)  # what SMSC reported
    assert delivery.cost == pytest.approx(1.9)
    assert down.cost is None


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (-3, None),
        (-1, None),
        (0, ReceiptStatus.SENT),
        (2, ReceiptStatus.READ),
        (4, ReceiptStatus.READ),
    ],
)
def test_statuses_the_emulator_does_not_script(status: int, expected: ReceiptStatus | None) -> None:
    """Not found and waiting report nothing; read (2) and link clicked (4) are `read`."""
    provider = SmscProvider("smsc", SmscSettings(login="l", password="p"))
    receipt = provider.receipt("1:79161234567", {"status": status, "err": 0})
    assert (receipt.status if receipt else None) is expected


def test_unknown_error_code_is_permanent() -> None:
    """An error_code nobody classified fails safe: permanent, SMSC's words kept."""
    provider = SmscProvider("smsc", SmscSettings(login="l", password="p"))
    error = provider.refused(99, "new error")
    assert type(error) is PermanentError
    assert "new error" in str(error)
