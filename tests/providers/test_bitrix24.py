"""`type: bitrix24_call_task` against the Bitrix24 REST emulator over real HTTP: finding the
customer, the to-do in the call window, errors, the search before a retry, the event as a
hint read back, polling as the backstop, and withdrawal."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from cascade_notify import DeliveryStatus, Message, Recipient
from cascade_notify.errors import PermanentError, TransientError
from cascade_notify.models import ReceiptStatus
from cascade_notify.providers import registry
from cascade_notify.providers._signing import BadSignature
from cascade_notify.providers.base import SendRequest, WebhookRequest, WithdrawRequest
from cascade_notify.providers.call._task import CallOverrides
from cascade_notify.providers.call.bitrix24 import Bitrix24CallTaskProvider, Bitrix24Settings
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import Bitrix24Emulator
from cascade_notify.testing.emulators.fixtures import EmulatorFactory

from ._support import PHONE, answered, feed, served


@pytest.fixture
async def b24(emulators: EmulatorFactory) -> Bitrix24Emulator:
    return await emulators(Bitrix24Emulator)


def make(emu: Bitrix24Emulator, clock: FakeClock, **kw: Any) -> Bitrix24CallTaskProvider:
    values = {k: v for k, v in emu.settings().items() if k != "type"}
    values.update(kw.pop("settings", {}))
    settings = Bitrix24Settings.model_validate(values)
    return Bitrix24CallTaskProvider("b24", settings, clock=clock, **kw)


@pytest.fixture
async def provider(
    b24: Bitrix24Emulator, fake_clock: FakeClock
) -> AsyncIterator[Bitrix24CallTaskProvider]:
    made = make(b24, fake_clock)
    yield made
    await made.aclose()


def call_request(clock: FakeClock, attempt_id: str = "ct_1", **kw: Any) -> SendRequest:
    recipient = Recipient(id="anna", call=PHONE, timezone="Europe/Moscow")
    request = SendRequest(
        attempt_id=attempt_id,
        delivery_id="dl_1",
        channel="call",
        address=PHONE,
        recipient=recipient,
        message=Message(text="Your parcel A-1234 has arrived."),
        deadline_ts=clock.now() + 7200,
        overrides=CallOverrides(),
    )
    return replace(request, **kw)


async def test_a_todo_on_the_contacts_card_in_local_time(
    b24: Bitrix24Emulator, provider: Bitrix24CallTaskProvider, fake_clock: FakeClock
) -> None:
    """The contact is found by phone; the to-do is due by the window's end, written in the
    customer's time with its offset, for the responsible user, with our marker."""
    contact = b24.add_contact(PHONE)
    result = await provider.send(call_request(fake_clock))
    find, todo = b24.requests
    assert find.path == f"/rest/1/{b24.code}/crm.duplicate.findbycomm.json"
    assert find.json() == {"type": "PHONE", "values": [PHONE]}
    body = todo.json()
    assert (body["ownerTypeId"], body["ownerId"], body["responsibleId"]) == (3, contact, 42)
    assert body["deadline"] == "2026-01-01T05:00:00+03:00"  # 02:00 UTC is 05:00 in Moscow
    assert body["title"] == "Call the customer: Your parcel A-1234 has arrived."
    assert body["description"].endswith("[cascade_notify ct_1]")
    assert result.provider_message_id == "5531"
    assert b24.activities[5531]["COMPLETED"] == "N"


async def test_a_number_stored_the_russian_way_is_found(
    b24: Bitrix24Emulator, provider: Bitrix24CallTaskProvider, fake_clock: FakeClock
) -> None:
    """When the E.164 form finds nobody, the 8-prefixed national form is tried once."""
    b24.people[77] = {"type": 3, "phone": "8 (916) 123-45-67"}
    original = b24._m_find

    async def e164_only(request: Any, params: dict[str, Any]) -> Any:
        if params["values"] == [PHONE]:
            return b24._answer([])
        return await original(request, params)

    b24._m_find = e164_only  # type: ignore[method-assign]
    await provider.send(call_request(fake_clock))
    assert [r.json()["values"] for r in b24.requests[:2]] == [[PHONE], ["89161234567"]]
    assert b24.requests[2].json()["ownerId"] == 77


async def test_nobody_known_makes_a_lead_or_fails(
    b24: Bitrix24Emulator, fake_clock: FakeClock
) -> None:
    """An unknown phone gets a lead (crm.item.add), or, with on_unknown_customer: fail, a
    permanent failure."""
    provider = make(b24, fake_clock)
    await provider.send(call_request(fake_clock))
    add = next(r for r in b24.requests if r.path.endswith("crm.item.add.json")).json()
    assert add["entityTypeId"] == 1
    assert add["fields"]["fm"] == [{"typeId": "PHONE", "valueType": "MOBILE", "value": PHONE}]
    await provider.aclose()
    strict = make(b24, fake_clock, settings={"on_unknown_customer": "fail"})
    with pytest.raises(PermanentError, match="no contact or lead"):
        await strict.send(call_request(fake_clock, attempt_id="ct_2", address="+79990000000"))
    await strict.aclose()


@pytest.mark.parametrize(
    ("script", "error", "account"),
    [
        ("rate_limited", TransientError, False),
        ("server_error", TransientError, False),
        ("owner_gone", PermanentError, False),
    ],
)
async def test_errors_are_classified(
    b24: Bitrix24Emulator,
    provider: Bitrix24CallTaskProvider,
    fake_clock: FakeClock,
    script: str,
    error: type[Exception],
    account: bool,
) -> None:
    """QUERY_LIMIT_EXCEEDED and 5xx are transient; OWNER_NOT_FOUND permanent."""
    b24.add_contact(PHONE)
    b24.script(PHONE, script)
    with pytest.raises(error) as raised:
        await provider.send(call_request(fake_clock))
    if isinstance(raised.value, PermanentError):
        assert raised.value.account is account


async def test_a_wrong_webhook_is_an_account_error(
    b24: Bitrix24Emulator, fake_clock: FakeClock
) -> None:
    """A wrong webhook code answers 401 NO_AUTH_FOUND: permanent, and the breaker opens."""
    url = f"{b24.api_url}/rest/1/wrongcode/"
    provider = make(b24, fake_clock, settings={"webhook_url": url})
    with pytest.raises(PermanentError) as raised:
        await provider.send(call_request(fake_clock))
    await provider.aclose()
    assert (raised.value.code, raised.value.account) == ("NO_AUTH_FOUND", True)


async def test_a_resend_finds_the_todo_a_lost_answer_created(
    b24: Bitrix24Emulator, provider: Bitrix24CallTaskProvider, fake_clock: FakeClock
) -> None:
    """The to-do was created but the answer was a 500; the resend finds it by our marker
    instead of creating a second one."""
    b24.add_contact(PHONE)
    b24.script(PHONE, ["created_then_500", "deliver"])
    with pytest.raises(TransientError):
        await provider.send(call_request(fake_clock))
    result = await provider.send(call_request(fake_clock, resend=True))
    assert result.provider_message_id == "5531"
    assert len(b24.activities) == 1


async def test_events_are_hints_read_back(
    b24: Bitrix24Emulator, provider: Bitrix24CallTaskProvider, fake_clock: FakeClock
) -> None:
    """A completion event is read back: done is delivered (code done, `auto` for a rule);
    an event about an open to-do, or with a wrong token, changes nothing."""
    b24.add_contact(PHONE)
    await provider.send(call_request(fake_clock))
    forged = (
        "event=ONCRMACTIVITYUPDATE&data%5BFIELDS%5D%5BID%5D=5531"
        f"&auth%5Bapplication_token%5D={b24.application_token}"
    ).encode()
    request = WebhookRequest("POST", "http://x/r/b24", {}, forged)
    assert (await provider.receive(request)).receipts == []  # still open: nothing
    wrong = WebhookRequest("POST", "http://x/r/b24", {}, forged.replace(b"jvh9", b"evil"))
    with pytest.raises(BadSignature):
        await provider.receive(wrong)
    [hook] = await b24.event("complete", PHONE)
    [receipt] = (await feed(provider, hook)).receipts
    assert (receipt.provider_message_id, receipt.status, receipt.code) == (
        "5531", ReceiptStatus.DELIVERED, "done",
    )  # fmt: skip


async def test_poll_finds_what_a_lost_event_did_not_say(
    b24: Bitrix24Emulator, provider: Bitrix24CallTaskProvider, fake_clock: FakeClock
) -> None:
    """With every event lost, crm.activity.list by id reports the completed to-dos."""
    b24.add_contact(PHONE)
    b24.drop_events = True
    first = await provider.send(call_request(fake_clock))
    second = await provider.send(call_request(fake_clock, attempt_id="ct_2"))
    await b24.complete(int(first.provider_message_id), status="3")
    receipts = await provider.poll([first.provider_message_id, second.provider_message_id])
    assert [(r.provider_message_id, r.code) for r in receipts] == [("5531", "auto")]


async def test_withdraw_deletes_the_todo(
    b24: Bitrix24Emulator, provider: Bitrix24CallTaskProvider, fake_clock: FakeClock
) -> None:
    """withdraw() is crm.activity.delete; a to-do already gone answers False."""
    b24.add_contact(PHONE)
    sent = await provider.send(call_request(fake_clock))
    request = WithdrawRequest("ct_1", "dl_1", sent.provider_message_id, PHONE)
    assert await provider.withdraw(request) is True
    assert b24.activities[5531]["_deleted"] is True
    assert await provider.withdraw(request) is False


POLICY = """
providers:
  b24: {settings}
policies:
  default:
    steps:
      - {{channel: call, providers: [b24], timeout: 4h}}
"""


@pytest.mark.parametrize("events", [True, False])
async def test_a_cascade_ends_when_the_operator_ticks_it_done(
    b24: Bitrix24Emulator, fake_clock: FakeClock, events: bool
) -> None:
    """Through the notifier: the event (or, with events lost, the poll) delivers."""
    b24.add_contact(PHONE)
    b24.drop_events = not events
    async with served(POLICY.format(settings=json.dumps(b24.settings())), fake_clock) as (
        notifier,
        receipts,
    ):
        b24.webhook_url = f"{receipts}/b24"
        delivery = await notifier.send(Recipient(id="anna", call=PHONE), Message(text="hi"))
        await answered(notifier, fake_clock, [delivery.id])
        await fake_clock.advance(60)
        [hook] = await b24.event("complete", PHONE)
        [delivery] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert (delivery.status, delivery.channel) == (DeliveryStatus.DELIVERED, "call")
    assert delivery.attempts[0].receipts[0].code == "done"
    assert hook.delivered is events
    if not events:
        assert delivery.finished_ts is not None
        assert delivery.finished_ts - delivery.created_ts >= 300  # the poll found it


def test_registered() -> None:
    """`type: bitrix24_call_task` is built in; a webhook URL that is not one is refused."""
    assert registry.get("bitrix24_call_task") is Bitrix24CallTaskProvider
    with pytest.raises(ValueError, match="inbound webhook"):
        Bitrix24Settings.model_validate({"webhook_url": "https://x.example/", "responsible_id": 1})
