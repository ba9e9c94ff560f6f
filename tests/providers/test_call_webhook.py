"""`type: call_webhook` against the fake call centre over real HTTP: the task's JSON, every
answer of providers.md §10.4.4, the signed outcome callbacks of §10.4.5 (duplicated, out
of order, forged) and the §10.4.3 test vector."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cascade_notify import DeliveryStatus, Message, Recipient, RecipientError, load_config
from cascade_notify.errors import PermanentError, PolicyError, TransientError, UnknownOutcomeError
from cascade_notify.models import (
    Attempt,
    AttemptStatus,
    Delivery,
    ReceiptStatus,
    SkippedStep,
    Step,
)
from cascade_notify.providers import registry
from cascade_notify.providers._signing import BadSignature, StandardWebhooks
from cascade_notify.providers.base import SendRequest, WebhookRequest, WithdrawRequest
from cascade_notify.providers.call._task import CallOverrides, iso
from cascade_notify.providers.call.webhook import CallWebhookProvider, CallWebhookSettings
from cascade_notify.testing import FakeClock, run_until_final
from cascade_notify.testing.emulators import CallCentreEmulator
from cascade_notify.testing.emulators.call_centre import TEST_SECRET
from cascade_notify.testing.emulators.fixtures import EmulatorFactory

from ._support import PHONE, answered, feed, served

VECTOR_BODY = (
    b'{"type":"call_task.completed","timestamp":"2025-01-01T15:12:40Z","data":'
    b'{"task_id":"ct_01JH5Q8W3M","outcome":"answered","final":true}}'
)
VECTOR_HEADERS = {"webhook-id": "msg_01JH5T0K2E", "webhook-timestamp": "1735744360"}
VECTOR_SIGNATURE = "v1,tDWxYtyJ/IVe9Ff8Jec0LW0S/xx8X+VkBexBtCYBynQ="
WHSEC_MISTAKE = "v1,gjzzBI9yEbt/jJYOKCxhGseXqx92qTSdlGFjaO3v4nI="


@pytest.fixture
async def centre(emulators: EmulatorFactory) -> CallCentreEmulator:
    return await emulators(CallCentreEmulator)


def make(emu: CallCentreEmulator, clock: FakeClock, **kw: Any) -> CallWebhookProvider:
    values = {k: v for k, v in emu.settings().items() if k != "type"}
    values.update(kw.pop("settings", {}))
    settings = CallWebhookSettings.model_validate(values)
    return CallWebhookProvider("calls", settings, clock=clock, **kw)


@pytest.fixture
async def provider(
    centre: CallCentreEmulator, fake_clock: FakeClock
) -> AsyncIterator[CallWebhookProvider]:
    made = make(centre, fake_clock, settings={"callback_url": "https://notify.example/r/calls"})
    yield made
    await made.aclose()


def call_request(clock: FakeClock, attempt_id: str = "ct_1", **options: Any) -> SendRequest:
    """A call step's request, with the history of a delivery whose other channels failed."""
    now = clock.now()
    recipient = Recipient(
        id="cust-7f3c2a", sms=PHONE, call=PHONE, email="anna@example.com",
        timezone="Europe/Moscow", locale="ru",
    )  # fmt: skip
    delivery = Delivery(
        id="dl_1",
        policy="default",
        recipient=recipient,
        message=Message(text="Your parcel A-1234 has arrived.", category="order_status"),
        steps=(
            Step(channel="telegram", providers=("tg",)),
            Step(channel="sms", providers=("smsru",)),
            Step(channel="email", providers=("smtp",)),
            Step(channel="call", providers=("calls",), quiet_hours=(21 * 60, 9 * 60)),
        ),
        created_ts=now - 3600,
        expires_ts=now + 7200,
        idempotency_key="order-A-1234-arrived",
        skipped=[SkippedStep(step=0, channel="telegram", reason="no_address", ts=now - 3600)],
        attempts=[
            Attempt(
                id="a1", delivery_id="dl_1", step=1, channel="sms", provider="smsru",
                status=AttemptStatus.FAILED, started_ts=now - 3500, finished_ts=now - 3400,
                error="number not served", code="103",
            ),
            Attempt(
                id="a2", delivery_id="dl_1", step=2, channel="email", provider="smtp",
                status=AttemptStatus.UNREACHABLE, started_ts=now - 60, finished_ts=now - 59,
                error="mailbox unknown", code="5.1.1",
            ),
        ],
    )  # fmt: skip
    return SendRequest(
        attempt_id=attempt_id,
        delivery_id="dl_1",
        channel="call",
        address=PHONE,
        recipient=recipient,
        message=delivery.message,
        deadline_ts=now + 86400,
        overrides=CallOverrides(priority="high", queue="support", customer_name="Anna Petrova"),
        delivery=delivery,
    )


# the task


async def test_task_json_is_the_documented_shape(
    centre: CallCentreEmulator, provider: CallWebhookProvider, fake_clock: FakeClock
) -> None:
    """`call_task.created` carries the customer, the exact text, the reason, one line per
    channel, the history, the window (capped by the TTL) and the callback URL, signed."""
    result = await provider.send(call_request(fake_clock))
    [sent] = centre.requests
    assert sent.headers["webhook-id"] == "msg_ct_1"
    StandardWebhooks.from_secrets([TEST_SECRET]).verify(sent.headers, sent.body)
    body = sent.json()
    assert body["type"] == "call_task.created"
    data = body["data"]
    assert data["task_id"] == "ct_1" and data["delivery_id"] == "dl_1"
    assert data["idempotency_key"] == "order-A-1234-arrived"
    assert data["customer"] == {
        "id": "cust-7f3c2a", "name": "Anna Petrova", "phone": PHONE, "locale": "ru",
        "time_zone": "Europe/Moscow",
    }  # fmt: skip
    assert data["message"]["text"] == "Your parcel A-1234 has arrived."
    assert data["message"]["category"] == "order_status"
    assert data["reason"] == "exhausted"
    assert data["summary"] == (
        "Telegram: skipped (no_address). SMS: number not served (103). "
        "E-mail: mailbox unknown (5.1.1)."
    )
    assert [(a["channel"], a["outcome"]) for a in data["attempts"]] == [
        ("telegram", "skipped"),
        ("sms", "failed"),
        ("email", "unreachable"),
    ]
    assert data["attempts"][1]["code"] == "103"
    window = data["window"]
    assert window["due_by"] > window["not_before"]  # RFC 3339 text sorts by time
    assert window["quiet_hours"] == {"start": "21:00", "end": "09:00", "time_zone": "Europe/Moscow"}
    assert data["priority"] == "high" and data["assignee"] == {"queue": "support", "user_ref": None}
    assert data["callback_url"] == "https://notify.example/r/calls"
    assert result.provider_message_id == "5531"  # the receiver's crm_task_id


async def test_the_window_ends_with_the_delivery(
    centre: CallCentreEmulator, provider: CallWebhookProvider, fake_clock: FakeClock
) -> None:
    """due_by is the sooner of the step's deadline and the delivery's expiry."""
    await provider.send(call_request(fake_clock))
    window = centre.requests[0].json()["data"]["window"]
    assert window == {
        "not_before": iso(fake_clock.now()),
        "due_by": iso(fake_clock.now() + 7200),
        "quiet_hours": window["quiet_hours"],
    }


# the answers of §10.4.4


@pytest.mark.parametrize(
    ("script", "error", "account"),
    [
        ("bad_request", PermanentError, False),
        ({"do": "bad_request", "code": 401}, PermanentError, False),
        ({"do": "bad_request", "code": 403}, PermanentError, False),
        ({"do": "bad_request", "code": 404}, PermanentError, False),
        ({"do": "bad_request", "code": 405}, PermanentError, False),
        ({"do": "bad_request", "code": 422}, PermanentError, False),
        ({"do": "bad_request", "code": 302}, PermanentError, False),
        ("gone", PermanentError, True),
        ({"do": "server_error", "code": 408}, TransientError, False),
        ({"do": "server_error", "code": 500}, TransientError, False),
        ("server_error", TransientError, False),
    ],
)
async def test_refusals_are_classified(
    centre: CallCentreEmulator,
    provider: CallWebhookProvider,
    fake_clock: FakeClock,
    script: Any,
    error: type[Exception],
    account: bool,
) -> None:
    """400/401/403/404/405/422 and 3xx are permanent (configuration), 410 permanent for
    the account (the endpoint is retired), 408 and 5xx transient."""
    centre.script(PHONE, script)
    with pytest.raises(error) as raised:
        await provider.send(call_request(fake_clock))
    if isinstance(raised.value, PermanentError):
        assert raised.value.account is account


async def test_429_honours_retry_after(
    centre: CallCentreEmulator, provider: CallWebhookProvider, fake_clock: FakeClock
) -> None:
    """429 is transient, with the receiver's Retry-After."""
    centre.script(PHONE, "rate_limited", retry_after=12)
    with pytest.raises(TransientError) as raised:
        await provider.send(call_request(fake_clock))
    assert raised.value.retry_after == 12


async def test_409_means_already_accepted(
    centre: CallCentreEmulator, provider: CallWebhookProvider, fake_clock: FakeClock
) -> None:
    """A resend of a task the receiver has (same task id) is accepted, not an error; it
    goes with the same webhook-id and body, so sends are idempotent."""
    first = await provider.send(call_request(fake_clock))
    again = await provider.send(call_request(fake_clock))
    assert first.provider_message_id == "5531"
    assert again.provider_message_id == "ct_1"
    one, two = centre.requests
    assert (one.headers["webhook-id"], two.headers["webhook-id"]) == ("msg_ct_1", "msg_ct_1")
    assert two.status == 409 and len(centre.tasks) == 1
    assert CallWebhookProvider.idempotent_sends is True


async def test_a_wrong_secret_is_refused(centre: CallCentreEmulator, fake_clock: FakeClock) -> None:
    """The call centre answers 401 to a task signed with another secret: permanent."""
    other = "whsec_" + "b3RoZXItc2VjcmV0LWtleS1vZi0yNC1ieXRlcw=="
    provider = make(centre, fake_clock, settings={"secret": other})
    with pytest.raises(PermanentError) as raised:
        await provider.send(call_request(fake_clock))
    await provider.aclose()
    assert raised.value.code == "401"
    assert centre.rejected == ["no v1 signature matches"] and centre.tasks == {}


async def test_hang_up_and_timeout_are_unknown_outcomes(
    centre: CallCentreEmulator, fake_clock: FakeClock
) -> None:
    """A receiver that closes without answering, or answers past the timeout, leaves the
    outcome unknown (the engine resends: the provider declares idempotent sends)."""
    provider = make(centre, fake_clock, settings={"timeout": 0.2})
    centre.script(PHONE, "hang_up")
    with pytest.raises(UnknownOutcomeError):
        await provider.send(call_request(fake_clock))
    await provider.aclose()


async def test_withdraw_posts_call_task_cancelled(
    centre: CallCentreEmulator, provider: CallWebhookProvider, fake_clock: FakeClock
) -> None:
    """withdraw() sends call_task.cancelled with the reason; a task the receiver does not
    know (any more) answers False."""
    await provider.send(call_request(fake_clock))
    request = WithdrawRequest(
        attempt_id="ct_1", delivery_id="dl_1", provider_message_id="5531", address=PHONE,
        delivered_on="whatsapp",
    )  # fmt: skip
    assert await provider.withdraw(request) is True
    cancel = centre.requests[-1]
    assert cancel.headers["webhook-id"] == "msg_ct_1_cancelled"
    assert cancel.json()["type"] == "call_task.cancelled"
    assert cancel.json()["data"] == {
        "task_id": "ct_1", "reason": "delivered_elsewhere", "delivered_on": "whatsapp",
    }  # fmt: skip
    assert centre.cancelled == ["ct_1"]
    unknown = WithdrawRequest("ct_x", "dl_1", "ct_x", PHONE)
    assert await provider.withdraw(unknown) is False


# the outcome callback of §10.4.5


def test_the_test_vector() -> None:
    """§10.4.3: the decoded key gives the documented signature; keying with the whsec_
    text gives the other one, which does not verify."""
    signer = StandardWebhooks.from_secrets([TEST_SECRET])
    assert signer.signature("msg_01JH5T0K2E", 1735744360, VECTOR_BODY) == VECTOR_SIGNATURE
    mistake = StandardWebhooks([TEST_SECRET.encode("ascii")])
    assert mistake.signature("msg_01JH5T0K2E", 1735744360, VECTOR_BODY) == WHSEC_MISTAKE
    good = {**VECTOR_HEADERS, "webhook-signature": VECTOR_SIGNATURE}
    assert signer.verify(good, VECTOR_BODY, now=1735744360) == "msg_01JH5T0K2E"
    with pytest.raises(BadSignature):
        signer.verify({**good, "webhook-signature": WHSEC_MISTAKE}, VECTOR_BODY, now=1735744360)


async def test_the_test_vector_body_is_an_answered_receipt(
    provider: CallWebhookProvider,
) -> None:
    """The vector's body reads as `delivered` for task ct_01JH5Q8W3M, keyed on webhook-id;
    with real time, its 2025 timestamp is refused as stale."""
    receipt = provider.parse("msg_01JH5T0K2E", VECTOR_BODY)
    assert (receipt.status, receipt.attempt_id) == (ReceiptStatus.DELIVERED, "ct_01JH5Q8W3M")
    assert receipt.receipt_id == "msg_01JH5T0K2E"
    headers = {**VECTOR_HEADERS, "webhook-signature": VECTOR_SIGNATURE}
    with pytest.raises(BadSignature, match="old"):
        await provider.receive(WebhookRequest("POST", "http://x/r/calls", headers, VECTOR_BODY))


@pytest.mark.parametrize(
    ("outcome", "final", "status", "code"),
    [
        ("answered", True, ReceiptStatus.DELIVERED, None),
        ("no_answer", True, ReceiptStatus.FAILED, "no_answer"),
        ("no_answer", False, ReceiptStatus.SENT, "no_answer"),
        ("wrong_number", True, ReceiptStatus.FAILED, "wrong_number"),
    ],
)
async def test_each_outcome(
    centre: CallCentreEmulator,
    provider: CallWebhookProvider,
    fake_clock: FakeClock,
    outcome: str,
    final: bool,
    status: ReceiptStatus,
    code: str | None,
) -> None:
    """answered is delivered; no_answer failed only when final (else recorded, `sent`);
    wrong_number failed with its code (which `gone_on` turns into a bad number)."""
    centre.script(PHONE, "no_receipt")
    await provider.send(call_request(fake_clock))
    [hook] = await centre.event(outcome, PHONE, final=final)
    inbound = await feed(provider, hook)
    [receipt] = inbound.receipts
    assert (receipt.status, receipt.code, receipt.attempt_id) == (status, code, "ct_1")
    assert "wrong_number" in CallWebhookProvider.gone_on


@pytest.mark.parametrize("how", ["bad_signature", "whsec_key", "stale", "tampered"])
async def test_forged_callbacks_are_refused(
    centre: CallCentreEmulator, provider: CallWebhookProvider, fake_clock: FakeClock, how: str
) -> None:
    """A bad signature, the whsec_ text as key, a 6-minute-old timestamp and a body changed
    after signing all fail verification."""
    centre.script(PHONE, "no_receipt")
    await provider.send(call_request(fake_clock))
    [hook] = await centre.event("forged", PHONE, how=how, outcome="no_answer")
    with pytest.raises(BadSignature):
        await feed(provider, hook)


async def test_malformed_callbacks(provider: CallWebhookProvider) -> None:
    """A verified body with an unknown outcome, no task id or another type is malformed."""
    for data in (
        {"type": "call_task.completed", "data": {"task_id": "ct_1", "outcome": "maybe"}},
        {"type": "call_task.completed", "data": {"outcome": "answered"}},
        {"type": "call_task.created", "data": {"task_id": "ct_1", "outcome": "answered"}},
        {"type": "call_task.completed", "data": {"task_id": "ct_1", "outcome": "no_answer",
                                                 "final": "yes"}},
    ):  # fmt: skip
        with pytest.raises(ValueError):  # noqa: PT011  (the message differs per mistake)
            provider.parse("msg_x", json.dumps(data).encode())


# through the notifier and the receipts endpoint

POLICY = """
providers:
  calls: {settings}
policies:
  default:
    ttl: 1d
    steps:
      - {{channel: call, providers: [calls], wait_for: delivered, timeout: 2h}}
"""


def policy(centre: CallCentreEmulator) -> str:
    return POLICY.format(settings=json.dumps(centre.settings()))


@pytest.mark.parametrize(
    ("script", "status", "outcomes"),
    [
        ("deliver", DeliveryStatus.DELIVERED, ["answered"]),
        ("read", DeliveryStatus.DELIVERED, ["no_answer", "answered"]),
        ("fail_receipt", DeliveryStatus.EXHAUSTED, ["no_answer"]),
        ("duplicate_receipts", DeliveryStatus.DELIVERED, ["answered", "answered"]),
        ("out_of_order", DeliveryStatus.DELIVERED, ["answered", "no_answer"]),
    ],
)
async def test_callbacks_through_the_endpoint(
    centre: CallCentreEmulator,
    fake_clock: FakeClock,
    script: str,
    status: DeliveryStatus,
    outcomes: list[str],
) -> None:
    """Callbacks posted to the receipts endpoint end the step: a first try with nobody
    there keeps it waiting, a duplicate (same webhook-id) changes nothing, and a no_answer
    arriving after answered is recorded but does not undo it."""
    async with served(policy(centre), fake_clock) as (notifier, receipts):
        centre.webhook_url = f"{receipts}/calls"
        centre.script(PHONE, script)
        delivery = await notifier.send(Recipient(id="anna", call=PHONE), Message(text="hi"))
        await answered(notifier, fake_clock, [delivery.id])
        await run_until_final(notifier, fake_clock, [delivery.id])
        await fake_clock.advance(5)  # a duplicate or a late one still comes in
        delivery = await notifier.get(delivery.id)
    assert delivery.status is status
    assert [h.kind for h in centre.webhooks] == outcomes
    assert all(h.delivered for h in centre.webhooks)
    [attempt] = delivery.attempts
    unique = len({h.headers["webhook-id"] for h in centre.webhooks})
    assert len(attempt.receipts) == unique
    if script == "fail_receipt":
        assert attempt.code is None and attempt.receipts[-1].code == "no_answer"


async def test_forged_callbacks_are_answered_401_and_change_nothing(
    centre: CallCentreEmulator, fake_clock: FakeClock
) -> None:
    """Over HTTP, each forgery gets 401 and the task stays open."""
    async with served(policy(centre), fake_clock) as (notifier, receipts):
        centre.webhook_url = f"{receipts}/calls"
        centre.script(PHONE, "no_receipt")
        delivery = await notifier.send(Recipient(id="anna", call=PHONE), Message(text="hi"))
        await answered(notifier, fake_clock, [delivery.id])
        for how in ("bad_signature", "whsec_key", "stale", "tampered"):
            [hook] = await centre.event("forged", PHONE, how=how)
            assert [a.status for a in hook.attempts] == [401]
        delivery = await notifier.get(delivery.id)
    assert delivery.status is DeliveryStatus.PENDING
    assert delivery.attempts[0].status is AttemptStatus.ACCEPTED
    assert delivery.attempts[0].receipts == []


async def test_a_wrong_number_is_bad_on_every_phone_channel(
    centre: CallCentreEmulator, fake_clock: FakeClock
) -> None:
    """wrong_number fails the call, and the next cascade to that number skips SMS,
    WhatsApp and the call with reason address_gone."""
    text = (
        policy(centre)
        + """
  phones:
    steps:
      - {channel: sms, providers: [sms], wait_for: accepted}
      - {channel: call, providers: [calls]}
"""
    ).replace(
        "providers:\n",
        "default_policy: default\nproviders:\n  sms: {type: fake, channel: sms}\n",
        1,
    )
    async with served(text, fake_clock) as (notifier, receipts):
        centre.webhook_url = f"{receipts}/calls"
        centre.script(PHONE, {"do": "fail_receipt", "detail": "wrong_number"})
        first = await notifier.send(Recipient(id="anna", call=PHONE), Message(text="hi"))
        await answered(notifier, fake_clock, [first.id])
        [first] = await run_until_final(notifier, fake_clock, [first.id])
        # every address of the next send is that number, gone on each phone channel:
        # no step can reach the customer, so send() refuses and stores nothing
        with pytest.raises(RecipientError) as refused:
            await notifier.send(
                Recipient(id="anna", call=PHONE, sms=PHONE), Message(text="hi"), policy="phones"
            )
    assert first.status is DeliveryStatus.EXHAUSTED
    assert first.attempts[0].receipts[0].code == "wrong_number"
    assert "sms: the address is gone: wrong_number" in str(refused.value)
    assert "call: the address is gone: wrong_number" in str(refused.value)


def test_registered_and_loaded_from_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """`type: call_webhook` is built in; its secret may come from `${ENV}`; a policy that
    waits for `read` on it is refused at load time."""
    assert registry.get("call_webhook") is CallWebhookProvider
    monkeypatch.setenv("CALL_SECRET", TEST_SECRET)
    config = load_config(
        """
providers:
  calls: {type: call_webhook, url: "https://crm.example/hooks", secret: "${CALL_SECRET}"}
policies:
  p:
    steps: [{channel: call, providers: [calls]}]
"""
    )
    assert config.providers["calls"].channel == "call"

    with pytest.raises(PolicyError, match="read"):
        load_config(
            """
providers:
  calls: {type: call_webhook, url: "https://crm.example/hooks", secret: "${CALL_SECRET}"}
policies:
  p:
    steps: [{channel: call, providers: [calls], wait_for: read}]
"""
        )


async def test_a_task_nobody_closed_by_its_deadline_is_cancelled(
    centre: CallCentreEmulator, fake_clock: FakeClock
) -> None:
    """The step's deadline passes with the task open: the cascade ends exhausted, and the
    task is withdrawn (`call_task.cancelled`, reason expired) so nobody calls too late."""
    async with served(policy(centre), fake_clock) as (notifier, receipts):
        centre.webhook_url = f"{receipts}/calls"
        centre.script(PHONE, "no_receipt")
        delivery = await notifier.send(Recipient(id="anna", call=PHONE), Message(text="hi"))
        await answered(notifier, fake_clock, [delivery.id])
        [delivery] = await run_until_final(notifier, fake_clock, [delivery.id])
    assert delivery.status is DeliveryStatus.EXHAUSTED
    [attempt] = delivery.attempts
    assert (attempt.status, attempt.error) == (AttemptStatus.WITHDRAWN, "withdrawn: expired")
    assert centre.cancelled == [attempt.id]
    cancel = centre.requests[-1].json()["data"]
    assert cancel == {"task_id": attempt.id, "reason": "expired"}


async def test_cancelling_the_delivery_cancels_the_task(
    centre: CallCentreEmulator, fake_clock: FakeClock
) -> None:
    """notifier.cancel() with the task open sends call_task.cancelled, reason cancelled."""
    async with served(policy(centre), fake_clock) as (notifier, _):
        centre.script(PHONE, "no_receipt")
        delivery = await notifier.send(Recipient(id="anna", call=PHONE), Message(text="hi"))
        await answered(notifier, fake_clock, [delivery.id])
        delivery = await notifier.cancel(delivery.id)
    assert delivery.status is DeliveryStatus.CANCELLED
    assert centre.cancelled == [delivery.attempts[0].id]
    assert centre.requests[-1].json()["data"]["reason"] == "cancelled"
