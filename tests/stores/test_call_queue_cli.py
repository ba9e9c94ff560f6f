"""`type: call_queue` end to end on SQLite and PostgreSQL: a call step queues the task in
the store, and people work it through `notifier.calls` and `cascade-notify calls`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade_notify import AttemptStatus, DeliveryStatus, Message, Notifier, Recipient
from cascade_notify.calls import CallNotFound, CallNotOpen
from cascade_notify.cli.calls import calls_app
from cascade_notify.models import CallStatus, Receipt, ReceiptStatus
from cascade_notify.testing import FakeClock, run_until_final

PHONE = "+79161234567"
POLICY = """
store: "{store}"
providers:
  sms: {{type: fake, channel: sms, behavior: fail_receipt}}
  calls: {{type: call_queue}}
policies:
  default:
    ttl: 1d
    steps:
      - {{channel: sms, providers: [sms], wait_for: delivered, timeout: 10m}}
      - {{channel: call, providers: [calls], timeout: 4h}}
"""
runner = CliRunner()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'calls.db'}"
    dsn = request.getfixturevalue("pg_dsn")
    schema = request.getfixturevalue("pg_schema")
    return f"{dsn}?schema={schema}"


@pytest.fixture
def policy(store_url: str, tmp_path: Path) -> Path:
    path = tmp_path / "cascade.yaml"
    path.write_text(POLICY.format(store=store_url))
    return path


@pytest.fixture
async def notifier(policy: Path) -> AsyncIterator[tuple[Notifier, FakeClock]]:
    clock = FakeClock()
    async with Notifier.from_yaml(policy, clock=clock) as running:
        yield running, clock


async def queued(notifier: Notifier, clock: FakeClock, text: str = "Ваша посылка прибыла.") -> str:
    """Send a message whose SMS fails, so its call is queued; the delivery id."""
    delivery = await notifier.send(Recipient(id="anna", sms=PHONE, call=PHONE), Message(text=text))
    for _ in range(200):
        await clock.advance(5)
        if len((await notifier.get(delivery.id)).attempts) == 2:
            break
        await asyncio.sleep(0.005)
    return delivery.id


async def test_the_api_lists_claims_and_closes(notifier: tuple[Notifier, FakeClock]) -> None:
    """The call step puts the whole task in the store; claim takes it, done delivers."""
    app, clock = notifier
    delivery_id = await queued(app, clock)
    [call] = await app.calls.list()
    attempt = (await app.get(delivery_id)).attempts[1]
    assert call.task_id == attempt.id and attempt.status is AttemptStatus.ACCEPTED
    assert (call.phone, call.status, call.text) == (PHONE, CallStatus.OPEN, "Ваша посылка прибыла.")
    assert call.summary.startswith("SMS: ")
    assert call.task["attempts"][0]["channel"] == "sms"
    taken = await app.calls.claim("irina")
    assert taken is not None and taken.operator == "irina"
    assert await app.calls.claim("oleg") is None
    closed = await app.calls.done(call.task_id, note="reached her")
    assert closed.status is CallStatus.DONE
    [delivery] = await run_until_final(app, clock, [delivery_id])
    assert (delivery.status, delivery.channel) == (DeliveryStatus.DELIVERED, "call")
    assert [r.code for r in delivery.attempts[1].receipts] == ["done"]
    with pytest.raises(CallNotOpen, match="done already") as twice:
        await app.calls.done(call.task_id)
    assert twice.value.call.status is CallStatus.DONE
    assert await app.calls.list() == []
    with pytest.raises(CallNotFound):
        await app.calls.done("nope")


async def test_no_answer_and_again(notifier: tuple[Notifier, FakeClock]) -> None:
    """no_answer with again puts the call back and keeps the step waiting; without, the
    step fails and the cascade is exhausted."""
    app, clock = notifier
    delivery_id = await queued(app, clock)
    [call] = await app.calls.list()
    requeued = await app.calls.no_answer(call.task_id, "voicemail", again=True)
    assert (requeued.status, requeued.note) == (CallStatus.OPEN, "voicemail")
    await clock.advance(1)
    assert not (await app.get(delivery_id)).final
    await app.calls.no_answer(call.task_id)
    [delivery] = await run_until_final(app, clock, [delivery_id])
    assert delivery.status is DeliveryStatus.EXHAUSTED
    codes = [r.code for r in delivery.attempts[1].receipts]
    assert codes == ["no_answer", "no_answer"]


async def test_the_cli(policy: Path, notifier: tuple[Notifier, FakeClock]) -> None:
    """`cascade-notify calls list`, `claim`, `done` against the policy's store, from
    another notifier than the one whose worker runs the cascade."""
    app, clock = notifier
    delivery_id = await queued(app, clock, text="Parcel A-1234 arrived")
    [call] = await app.calls.list()

    def cli(*args: str) -> str:
        result = runner.invoke(calls_app, [*args, "--policy", str(policy)])
        assert result.exit_code == 0, result.output
        return result.output

    listed = await asyncio.to_thread(cli, "list")
    assert call.task_id in listed and PHONE in listed and "open" in listed
    claimed = await asyncio.to_thread(cli, "claim", "--operator", "irina")
    assert "irina" in claimed and "Text: Parcel A-1234 arrived" in claimed
    assert await asyncio.to_thread(cli, "done", call.task_id, "--note", "reached") == (
        f"{call.task_id}: done\n"
    )
    again = await asyncio.to_thread(
        runner.invoke, calls_app, ["done", call.task_id, "--policy", str(policy)]
    )
    assert again.exit_code == 1 and "done already" in again.output
    [delivery] = await run_until_final(app, clock, [delivery_id])
    assert (delivery.status, delivery.channel) == (DeliveryStatus.DELIVERED, "call")
    everything = await asyncio.to_thread(cli, "list", "--all")
    assert "done" in everything
    nothing = await asyncio.to_thread(
        runner.invoke, calls_app, ["claim", "--operator", "x", "--policy", str(policy)]
    )
    assert nothing.exit_code == 1
    missing = await asyncio.to_thread(
        runner.invoke, calls_app, ["done", "nope", "--policy", str(policy)]
    )
    assert missing.exit_code == 1 and "no queued call" in missing.output


async def test_a_late_success_cancels_the_queued_call(store_url: str) -> None:
    """The SMS's late `delivered` withdraws the queued call: it ends cancelled."""
    clock = FakeClock()
    text = POLICY.format(store=store_url).replace("fail_receipt", "no_receipt")
    async with Notifier.from_yaml(text, clock=clock) as app:
        delivery_id = await queued(app, clock)
        [call] = await app.calls.list()
        sms = (await app.get(delivery_id)).attempts[0]
        await app.record_receipts(
            [
                Receipt(
                    provider="sms", provider_message_id=sms.provider_message_id or "",
                    status=ReceiptStatus.DELIVERED, ts=clock.now(),
                )
            ]
        )  # fmt: skip
        [delivery] = await run_until_final(app, clock, [delivery_id])
        [after] = await app.calls.list(None)
    assert (delivery.status, delivery.channel) == (DeliveryStatus.DELIVERED, "sms")
    assert delivery.attempts[1].status is AttemptStatus.WITHDRAWN
    assert (after.task_id, after.status) == (call.task_id, CallStatus.CANCELLED)
    assert after.note == "cancelled: delivered on sms"


async def test_cancelling_the_delivery_cancels_its_queued_call(
    notifier: tuple[Notifier, FakeClock],
) -> None:
    """notifier.cancel() ends the open call too: nobody works a cancelled delivery's call."""
    app, clock = notifier
    delivery_id = await queued(app, clock)
    [call] = await app.calls.list()
    cancelled = await app.cancel(delivery_id)
    assert cancelled.status is DeliveryStatus.CANCELLED
    [after] = await app.calls.list(None)
    assert (after.task_id, after.status) == (call.task_id, CallStatus.CANCELLED)
    assert after.note == "cancelled: the delivery was cancelled"
    assert await app.calls.list() == []
