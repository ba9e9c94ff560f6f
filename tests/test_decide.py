"""The engine's decision function, tested as the pure function it is."""

from __future__ import annotations

from cascade_notify import Attempt, AttemptStatus, Delivery, Message, Recipient, Step, WaitFor
from cascade_notify.engine import Action, decide


class Traits:
    def __init__(self, idempotent: bool = False, poll: float | None = None) -> None:
        self.idempotent_sends = idempotent
        self.poll_interval = poll


STEPS = (
    Step(channel="sms", providers=("gw1", "gw2"), wait_for=WaitFor.DELIVERED, timeout=60),
    Step(channel="email", providers=("smtp",), wait_for=WaitFor.ACCEPTED),
)


def delivery(*attempts: Attempt) -> Delivery:
    return Delivery(
        id="d",
        policy="p",
        steps=STEPS,
        created_ts=0,
        expires_ts=3600,
        recipient=Recipient(id="r", sms="+79161234567", email="r@example.com"),
        message=Message(text="hi"),
        attempts=list(attempts),
        step=attempts[-1].step if attempts else 0,
    )


def attempt(status: AttemptStatus, provider: str = "gw1", **kw: object) -> Attempt:
    return Attempt(
        id=f"a-{provider}",
        delivery_id="d",
        step=0,
        channel="sms",
        provider=provider,
        status=status,
        started_ts=0,
        **kw,
    )  # type: ignore[arg-type]


TRAITS = {"gw1": Traits(), "gw2": Traits(), "smtp": Traits()}


def test_first_move_is_to_send_on_the_first_provider():
    """A new delivery sends on the first provider of the first step."""
    decision = decide(delivery(), 0, TRAITS)
    assert (decision.action, decision.provider, decision.step) == (Action.SEND, "gw1", 0)


def test_accepted_waits_until_its_deadline():
    """An accepted attempt waits, and the wake-up is its deadline."""
    decision = decide(delivery(attempt(AttemptStatus.ACCEPTED, deadline_ts=60)), 10, TRAITS)
    assert (decision.action, decision.wake_ts) == (Action.WAIT, 60)


def test_deadline_passed_times_out_and_tries_next_provider():
    """At the deadline the attempt is closed as timed_out and the next provider is chosen."""
    decision = decide(delivery(attempt(AttemptStatus.ACCEPTED, deadline_ts=60)), 60, TRAITS)
    assert decision.action is Action.SEND and decision.provider == "gw2"
    assert [u.status for u in decision.updates] == [AttemptStatus.TIMED_OUT]


def test_crash_mid_request_is_unknown_not_resent():
    """`sending` left by a dead worker becomes unknown and waits; it is not resent."""
    decision = decide(delivery(attempt(AttemptStatus.SENDING)), 5, TRAITS)
    assert decision.action is Action.WAIT and decision.wake_ts == 60
    assert decision.updates[0].status is AttemptStatus.UNKNOWN


def test_crash_mid_request_is_resent_with_same_id_when_idempotent():
    """An idempotent provider gets the same attempt again, same id."""
    traits = {**TRAITS, "gw1": Traits(idempotent=True)}
    decision = decide(delivery(attempt(AttemptStatus.SENDING)), 5, traits)
    assert decision.action is Action.SEND
    assert decision.resend is not None and decision.resend.id == "a-gw1"


def test_polling_provider_is_polled_after_its_interval():
    """A provider with poll_interval is asked for receipts once the interval has passed."""
    traits = {**TRAITS, "gw1": Traits(poll=30)}
    waiting = attempt(AttemptStatus.ACCEPTED, deadline_ts=60, provider_message_id="m")
    assert decide(delivery(waiting), 10, traits).action is Action.WAIT
    decision = decide(delivery(waiting), 31, traits)
    assert decision.action is Action.POLL and decision.wake_ts == 60


def test_step_whose_address_is_gone_is_skipped_with_the_reason():
    """A channel known unusable when the delivery was made is skipped as `address_gone`,
    with the reason it was recorded with; the next step is tried."""
    subject = delivery()
    subject.unusable = {"sms": "the recipient blocked the sender (sms, 2026-01-01 00:00 UTC)"}
    decision = decide(subject, 0, TRAITS)
    assert (decision.action, decision.provider, decision.step) == (Action.SEND, "smtp", 1)
    assert [(s.step, s.channel, s.reason, s.detail) for s in decision.skipped] == [
        (0, "sms", "address_gone", subject.unusable["sms"])
    ]


def test_decide_does_not_change_its_input():
    """decide() is pure: the delivery it reads is left as it was."""
    subject = delivery(attempt(AttemptStatus.ACCEPTED, deadline_ts=60))
    before = subject.copy()
    decide(subject, 100, TRAITS)
    assert subject == before
