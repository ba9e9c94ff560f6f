"""`type: amocrm_call_task` against the amoCRM API v4 emulator over real HTTP: the contact
by phone, the call task, errors, the search before a retry, unsigned webhooks read back
(forged ones change nothing), polling, and withdrawal by completing with a reason."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from cascade_notify import AttemptStatus, DeliveryStatus, Message, Recipient
from cascade_notify.errors import PermanentError, TransientError
from cascade_notify.models import ReceiptStatus
from cascade_notify.providers import registry
from cascade_notify.providers._signing import BadSignature
from cascade_notify.providers.base import SendRequest, WebhookRequest, WithdrawRequest
from cascade_notify.providers.call._task import CallOverrides
from cascade_notify.providers.call.amocrm import AmoCrmCallTaskProvider, AmoCrmSettings
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import AmoCrmEmulator
from cascade_notify.testing.emulators.fixtures import EmulatorFactory

from ._support import PHONE, answered, served


@pytest.fixture
async def amo(emulators: EmulatorFactory) -> AmoCrmEmulator:
    return await emulators(AmoCrmEmulator)


def make(emu: AmoCrmEmulator, clock: FakeClock, **kw: Any) -> AmoCrmCallTaskProvider:
    values = {k: v for k, v in emu.settings().items() if k != "type"}
    values.update(kw.pop("settings", {}))
    return AmoCrmCallTaskProvider("amo", AmoCrmSettings.model_validate(values), clock=clock)


@pytest.fixture
async def provider(
    amo: AmoCrmEmulator, fake_clock: FakeClock
) -> AsyncIterator[AmoCrmCallTaskProvider]:
    made = make(amo, fake_clock)
    yield made
    await made.aclose()


def call_request(clock: FakeClock, attempt_id: str = "ct_1", **kw: Any) -> SendRequest:
    request = SendRequest(
        attempt_id=attempt_id,
        delivery_id="dl_1",
        channel="call",
        address=PHONE,
        recipient=Recipient(id="anna", call=PHONE, timezone="Europe/Moscow"),
        message=Message(text="Your parcel A-1234 has arrived."),
        deadline_ts=clock.now() + 7200,
        overrides=CallOverrides(),
    )
    return replace(request, **kw)


def hook_request(amo: AmoCrmEmulator, body: bytes, key: str | None = None) -> WebhookRequest:
    secret = amo.webhook_secret if key is None else key
    return WebhookRequest("POST", f"http://x/r/amo?key={secret}", {}, body, {"key": secret})


async def test_a_call_task_on_the_contact(
    amo: AmoCrmEmulator, provider: AmoCrmCallTaskProvider, fake_clock: FakeClock
) -> None:
    """The contact is found by the digits of its phone (stored with punctuation); the task
    is a call (type 1) due in Unix seconds, for the operator, with our marker."""
    contact = amo.add_contact("8 (916) 123-45-67")
    result = await provider.send(call_request(fake_clock))
    find, create = amo.requests[-2:]
    assert find.headers["authorization"] == f"Bearer {amo.access_token}"
    [body] = create.json()
    assert (body["task_type_id"], body["entity_type"], body["entity_id"]) == (
        1,
        "contacts",
        contact,
    )
    assert body["complete_till"] == int(fake_clock.now() + 7200)
    assert body["responsible_user_id"] == 7001 and body["request_id"] == "ct_1"
    assert body["text"].endswith("[cascade_notify ct_1]")
    assert result.provider_message_id == "90211"


async def test_nobody_known_makes_a_contact_or_fails(
    amo: AmoCrmEmulator, fake_clock: FakeClock
) -> None:
    """An unknown phone (204 to the search) gets a contact; with fail, a permanent error."""
    provider = make(amo, fake_clock)
    await provider.send(call_request(fake_clock))
    made = next(r for r in amo.requests if r.method == "POST" and r.path == "/api/v4/contacts")
    assert made.json()[0]["custom_fields_values"][0]["values"] == [{"value": PHONE}]
    await provider.aclose()
    strict = make(amo, fake_clock, settings={"on_unknown_customer": "fail"})
    with pytest.raises(PermanentError, match="no contact"):
        await strict.send(call_request(fake_clock, address="+79990000000"))
    await strict.aclose()


@pytest.mark.parametrize(
    ("script", "error", "account"),
    [
        ("rate_limited", TransientError, False),
        ("server_error", TransientError, False),
        ("payment_required", PermanentError, True),
        ("forbidden", PermanentError, True),
    ],
)
async def test_errors_are_classified(
    amo: AmoCrmEmulator,
    provider: AmoCrmCallTaskProvider,
    fake_clock: FakeClock,
    script: str,
    error: type[Exception],
    account: bool,
) -> None:
    """429 and 5xx are transient (429 waits a second at least); 402 and 403 are about the
    account."""
    amo.add_contact(PHONE)
    amo.script(PHONE, script)
    with pytest.raises(error) as raised:
        await provider.send(call_request(fake_clock))
    if isinstance(raised.value, PermanentError):
        assert raised.value.account is account
    elif script == "rate_limited":
        assert isinstance(raised.value, TransientError) and raised.value.retry_after == 1.0


async def test_a_wrong_token_is_an_account_error(
    amo: AmoCrmEmulator, fake_clock: FakeClock
) -> None:
    """401 problem JSON: permanent, for the account."""
    provider = make(amo, fake_clock, settings={"access_token": "wrong"})
    with pytest.raises(PermanentError) as raised:
        await provider.send(call_request(fake_clock))
    await provider.aclose()
    assert (raised.value.code, raised.value.account) == ("401", True)
    assert "Invalid access token" in str(raised.value)


async def test_a_resend_finds_the_open_task(
    amo: AmoCrmEmulator, provider: AmoCrmCallTaskProvider, fake_clock: FakeClock
) -> None:
    """A resend after a lost answer finds the task by our marker instead of adding one."""
    amo.add_contact(PHONE)
    first = await provider.send(call_request(fake_clock))
    again = await provider.send(call_request(fake_clock, resend=True))
    assert again.provider_message_id == first.provider_message_id
    assert len(amo.tasks) == 1


async def test_webhooks_are_hints_and_forgeries_change_nothing(
    amo: AmoCrmEmulator, provider: AmoCrmCallTaskProvider, fake_clock: FakeClock
) -> None:
    """A forged body about an open task reads back as nothing; a wrong key is refused; the
    operator's completion reads back as delivered, code done."""
    amo.add_contact(PHONE)
    await provider.send(call_request(fake_clock))
    forged = b"task%5Bupdate%5D%5B0%5D%5Bid%5D=90211&account%5Bsubdomain%5D=acme"
    assert (await provider.receive(hook_request(amo, forged))).receipts == []
    with pytest.raises(BadSignature):
        await provider.receive(hook_request(amo, forged, key="guess"))
    [hook] = await amo.event("complete", PHONE)
    [receipt] = (await provider.receive(hook_request(amo, hook.body))).receipts
    assert (receipt.provider_message_id, receipt.status, receipt.code) == (
        "90211", ReceiptStatus.DELIVERED, "done",
    )  # fmt: skip


async def test_withdraw_completes_with_a_reason_that_is_not_read_as_done(
    amo: AmoCrmEmulator, provider: AmoCrmCallTaskProvider, fake_clock: FakeClock
) -> None:
    """Withdrawal completes the task saying why; reading it back later is not a delivery."""
    amo.add_contact(PHONE)
    sent = await provider.send(call_request(fake_clock))
    request = WithdrawRequest("ct_1", "dl_1", sent.provider_message_id, PHONE, delivered_on="sms")
    assert await provider.withdraw(request) is True
    task = amo.tasks[90211]
    assert task["is_completed"] is True
    assert task["result"]["text"] == "Cancelled by cascade_notify: delivered on sms"
    assert await provider.poll([sent.provider_message_id]) == []
    gone = WithdrawRequest("ct_x", "dl_1", "1", PHONE)
    assert await provider.withdraw(gone) is False


POLICY = """
providers:
  sms: {{type: fake, channel: sms, behavior: no_receipt}}
  amo: {settings}
policies:
  default:
    steps:
      - {{channel: sms, providers: [sms], wait_for: delivered, timeout: 1m}}
      - {{channel: call, providers: [amo], timeout: 4h}}
"""


@pytest.mark.parametrize("events", [True, False])
async def test_a_cascade_ends_when_the_task_is_completed(
    amo: AmoCrmEmulator, fake_clock: FakeClock, events: bool
) -> None:
    """Through the notifier: the webhook (sent twice, as amoCRM may) or, with none, the poll
    delivers on the call step."""
    amo.add_contact(PHONE)
    amo.drop_events = not events
    async with served(POLICY.format(settings=json.dumps(amo.settings())), fake_clock) as (
        notifier,
        receipts,
    ):
        amo.webhook_url = f"{receipts}/amo?key={amo.webhook_secret}"
        delivery = await notifier.send(
            Recipient(id="anna", sms=PHONE, call=PHONE), Message(text="hi")
        )
        await answered(notifier, fake_clock, [delivery.id])
        await fake_clock.advance(61)
        await answered(notifier, fake_clock, [delivery.id])
        hooks = await amo.event("complete", PHONE, twice=True)
        [delivery] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert (delivery.status, delivery.channel) == (DeliveryStatus.DELIVERED, "call")
    call = delivery.attempts[-1]
    assert call.status is AttemptStatus.DELIVERED and len(call.receipts) == 1
    assert all(h.delivered for h in hooks) is events


def test_registered_and_settings() -> None:
    """`type: amocrm_call_task` is built in; an account must be named."""
    assert registry.get("amocrm_call_task") is AmoCrmCallTaskProvider
    with pytest.raises(ValueError, match="subdomain"):
        AmoCrmSettings.model_validate({"access_token": "t", "responsible_user_id": 1})
    settings = AmoCrmSettings.model_validate(
        {"subdomain": "acme", "access_token": "t", "responsible_user_id": 1}
    )
    assert settings.base == "https://acme.amocrm.ru"
