"""The engine's decision function, tested as the pure function it is."""

from __future__ import annotations

from cascade_notify import (
    Attempt,
    AttemptStatus,
    Delivery,
    DeliveryStatus,
    Message,
    Recipient,
    Step,
    WaitFor,
)
from cascade_notify.engine import Poll, Send, Withdraw, decide, tries
from cascade_notify.outcomes import outcome


class Traits:
    def __init__(
        self,
        idempotent: bool = False,
        poll: float | None = None,
        withdraws: bool = False,
        always: bool = False,
    ) -> None:
        self.idempotent_sends = idempotent
        self.poll_interval = poll
        self.withdraws = withdraws
        self.withdraw_always = always


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
    change, action = decide(delivery(), 0, TRAITS, ids=lambda: "new")
    assert isinstance(action, Send) and (action.attempt.provider, change.step) == ("gw1", 0)
    assert change.attempts == [action.attempt] and action.attempt.id == "new"
    assert action.attempt.status is AttemptStatus.SENDING and change.release is False


def test_accepted_waits_until_its_deadline():
    """An accepted attempt waits, and the wake-up is its deadline."""
    change, action = decide(delivery(attempt(AttemptStatus.ACCEPTED, deadline_ts=60)), 10, TRAITS)
    assert (action, change.wake_ts) == (None, 60)


def test_deadline_passed_times_out_and_tries_next_provider():
    """At the deadline the attempt is closed as timed_out and the next provider is chosen."""
    change, action = decide(delivery(attempt(AttemptStatus.ACCEPTED, deadline_ts=60)), 60, TRAITS)
    assert isinstance(action, Send) and action.attempt.provider == "gw2"
    assert [u.status for u in change.attempts if u is not action.attempt] == [
        AttemptStatus.TIMED_OUT
    ]


def test_last_steps_deadline_is_timed_out_not_abandoned():
    """The last step's plain deadline closes its attempt `timed_out` with the reason, as
    earlier steps' deadlines do; the cascade ends exhausted."""
    last = Attempt(
        id="a-smtp", delivery_id="d", step=1, channel="email", provider="smtp",
        status=AttemptStatus.ACCEPTED, started_ts=0, deadline_ts=60,
    )  # fmt: skip
    steps = (STEPS[0], Step(channel="email", providers=("smtp",), timeout=60))
    pending = delivery(attempt(AttemptStatus.FAILED, finished_ts=1), last)
    pending.steps = steps
    change, action = decide(pending, 60, TRAITS)
    assert action is None and change.status is DeliveryStatus.EXHAUSTED
    closed = [u for u in change.attempts if u.id == "a-smtp"]
    assert [(u.status, u.error) for u in closed] == [
        (AttemptStatus.TIMED_OUT, "no delivered receipt in time")
    ]


def test_crash_mid_request_is_unknown_not_resent():
    """`sending` left by a dead worker becomes unknown and waits; it is not resent."""
    change, action = decide(delivery(attempt(AttemptStatus.SENDING)), 5, TRAITS)
    assert action is None and change.wake_ts == 60
    assert change.attempts[0].status is AttemptStatus.UNKNOWN


def test_crash_mid_request_is_resent_with_same_id_when_idempotent():
    """An idempotent provider gets the same attempt again, same id."""
    traits = {**TRAITS, "gw1": Traits(idempotent=True)}
    _, action = decide(delivery(attempt(AttemptStatus.SENDING)), 5, traits)
    assert isinstance(action, Send) and action.resend
    assert action.attempt.id == "a-gw1"


def test_polling_provider_is_polled_after_its_interval():
    """A provider with poll_interval is asked for receipts once the interval has passed."""
    traits = {**TRAITS, "gw1": Traits(poll=30)}
    waiting = attempt(AttemptStatus.ACCEPTED, deadline_ts=60, provider_message_id="m")
    assert decide(delivery(waiting), 10, traits).action is None
    change, action = decide(delivery(waiting), 31, traits)
    assert isinstance(action, Poll) and change.wake_ts == 60 and change.release


def test_a_polled_attempt_is_the_pollers_then_its_timer_is_a_safety_net():
    """Once handed to the poller, the delivery comes due again only every
    REARM_INTERVALS intervals (or at its deadline): the poller asks in between."""
    from cascade_notify.engine import REARM_INTERVALS

    traits = {**TRAITS, "gw1": Traits(poll=30)}
    waiting = attempt(AttemptStatus.ACCEPTED, deadline_ts=3600, provider_message_id="m")
    change, action = decide(delivery(waiting), 10, traits)
    assert action is None and change.wake_ts == 30  # first due one interval after the send
    change, action = decide(delivery(waiting), 31, traits)
    assert isinstance(action, Poll) and change.wake_ts == 31 + REARM_INTERVALS * 30


def test_finish_is_a_transition_with_no_action():
    """A receipt that meets the step ends the cascade: the status is in the transition."""
    done = attempt(AttemptStatus.DELIVERED, deadline_ts=60)
    change, action = decide(delivery(done), 10, TRAITS)
    assert action is None and change.status is not None and change.status.value == "delivered"
    assert (change.channel, change.finished_ts, change.wake_ts) == ("sms", 10, None)


def test_quiet_hours_that_wait_defer_the_step():
    """A step reached in quiet hours with `wait` is deferred to their end, not skipped."""
    quiet = Step(channel="sms", providers=("gw1",), quiet_hours=(22 * 60, 9 * 60), quiet_wait=True)
    subject = delivery()
    subject.steps = (quiet,)
    subject.expires_ts = 86400 * 2
    change, action = decide(subject, 23 * 3600, TRAITS)  # 23:00 UTC
    assert action is None and change.wake_ts == 86400 + 9 * 3600 and not change.skipped


def test_outcome_is_one_pure_classification():
    """The call's answer becomes the attempt's outcome; retries are counted in one place."""
    from cascade_notify import SendResult, TransientError

    sent = attempt(AttemptStatus.SENDING)
    accepted = outcome(sent, SendResult("m1"), STEPS[0], 1, 10)
    assert (accepted.status, accepted.provider_message_id, accepted.deadline_ts) == (
        AttemptStatus.ACCEPTED,
        "m1",
        70,
    )
    retry = outcome(sent, TransientError("busy", retry_after=30), STEPS[0], 1, 10)
    assert retry.status is AttemptStatus.TRANSIENT and retry.retry_ts is not None
    assert retry.retry_ts >= 40 and sent.status is AttemptStatus.SENDING
    assert tries(delivery(sent, attempt(AttemptStatus.FAILED, "gw2")), 0, "gw1") == 1


def test_step_whose_address_is_gone_is_skipped_with_the_reason():
    """A channel known unusable when the delivery was made is skipped as `address_gone`,
    with the reason it was recorded with; the next step is tried."""
    subject = delivery()
    subject.unusable = {"sms": "the recipient blocked the sender (sms, 2026-01-01 00:00 UTC)"}
    change, action = decide(subject, 0, TRAITS)
    assert isinstance(action, Send) and (action.attempt.provider, change.step) == ("smtp", 1)
    assert [(s.step, s.channel, s.reason, s.detail) for s in change.skipped] == [
        (0, "sms", "address_gone", subject.unusable["sms"])
    ]


def test_decide_does_not_change_its_input():
    """decide() is pure: the delivery it reads is left as it was."""
    subject = delivery(attempt(AttemptStatus.ACCEPTED, deadline_ts=60))
    before = subject.copy()
    decide(subject, 100, TRAITS)
    assert subject == before


def _superseding(first: AttemptStatus, **kw: object) -> Delivery:
    """An sms attempt left `first`, then e-mail accepted (which meets its step)."""
    mail = Attempt(
        id="a-smtp", delivery_id="d", step=1, channel="email", provider="smtp",
        status=AttemptStatus.ACCEPTED, started_ts=70,
    )  # fmt: skip
    return delivery(attempt(first, provider_message_id="m1", **kw), mail)


def test_a_success_withdraws_what_it_superseded_before_finishing():
    """With a provider that always withdraws, the success first writes the stale attempt as
    `withdrawing` and asks for the withdrawal; the delivery is not finished yet."""
    traits = {**TRAITS, "gw1": Traits(withdraws=True, always=True)}
    change, action = decide(_superseding(AttemptStatus.TIMED_OUT), 80, traits)
    assert isinstance(action, Withdraw) and action.winner.provider == "smtp"
    [intent] = action.attempts
    assert (intent.id, intent.status) == ("a-gw1", AttemptStatus.WITHDRAWING)
    assert change.attempts == [intent] and change.status is None and change.release is False


def test_withdrawn_or_confirmed_attempts_are_left_alone():
    """Once withdrawn, the success finishes the delivery; a provider that cannot withdraw,
    or a step without withdraw_superseded, is not asked."""
    always = {**TRAITS, "gw1": Traits(withdraws=True, always=True)}
    change, action = decide(_superseding(AttemptStatus.WITHDRAWN), 80, always)
    assert action is None and change.status is not None
    for traits in (TRAITS, {**TRAITS, "gw1": Traits(withdraws=True)}):
        change, action = decide(_superseding(AttemptStatus.TIMED_OUT), 80, traits)
        assert action is None and change.status is not None


def test_a_crash_during_withdrawal_withdraws_again():
    """`withdrawing` left by a dead worker is withdrawn again (taking back twice is
    harmless), never sent again."""
    traits = {**TRAITS, "gw1": Traits(withdraws=True, always=True)}
    _, action = decide(_superseding(AttemptStatus.WITHDRAWING), 80, traits)
    assert isinstance(action, Withdraw)
    assert [a.status for a in action.attempts] == [AttemptStatus.WITHDRAWING]


def test_an_exhausted_delivery_withdraws_what_is_always_withdrawn():
    """With no success, only providers that always withdraw (call tasks) are asked, for
    reason expired; the delivery finishes after."""
    always = {**TRAITS, "smtp": Traits(withdraws=True, always=True)}
    mail = Attempt(
        id="a-smtp", delivery_id="d", step=1, channel="email", provider="smtp",
        status=AttemptStatus.ACCEPTED, started_ts=70, deadline_ts=80, provider_message_id="m",
    )  # fmt: skip
    steps = (STEPS[0], Step(channel="email", providers=("smtp",), wait_for=WaitFor.DELIVERED))
    late = delivery(attempt(AttemptStatus.FAILED), mail)
    late.steps = steps
    change, action = decide(late, 700, always)
    assert isinstance(action, Withdraw) and action.winner is None and action.reason == "expired"
    assert [(a.id, a.status) for a in change.attempts] == [("a-smtp", AttemptStatus.WITHDRAWING)]
    assert change.status is None
    change, action = decide(late, 700, TRAITS)
    assert action is None and change.status is not None
