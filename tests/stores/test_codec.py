"""The SQL stores' encoding knows every field of the records it stores."""

from __future__ import annotations

from dataclasses import fields

from cascade_notify.models import Attempt, Delivery, Receipt, SkippedStep, Step, WaitFor
from cascade_notify.stores._codec import (
    ATTEMPT_COLUMNS,
    DELIVERY_COLUMNS,
    RECEIPT_COLUMNS,
    skipped_from_dict,
    skipped_to_dict,
    step_from_dict,
    step_to_dict,
)


def names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def test_columns_cover_every_field() -> None:
    """A field added to Delivery, Attempt or Receipt without a column fails here."""
    assert set(DELIVERY_COLUMNS) | {"attempts"} == names(Delivery)
    assert set(ATTEMPT_COLUMNS) | {"receipts"} == names(Attempt)
    assert set(RECEIPT_COLUMNS) - {"echoed_attempt_id"} | {"attempt_id"} == names(Receipt)


def test_steps_and_skips_round_trip_whole() -> None:
    """Every field of a step and of a skipped step survives JSON and back."""
    step = Step(
        channel="sms",
        providers=("a", "b"),
        wait_for=WaitFor.READ,
        timeout=5.0,
        retry_attempts=4,
        retry_initial=0.5,
        retry_max=9.0,
        quiet_hours=(1320, 540),
        categories=frozenset({"transactional"}),
    )
    assert set(step_to_dict(step)) == names(Step)
    assert step_from_dict(step_to_dict(step)) == step
    skip = SkippedStep(step=1, channel="sms", reason="opted_out", ts=1.5, detail="why")
    assert set(skipped_to_dict(skip)) == names(SkippedStep)
    assert skipped_from_dict(skipped_to_dict(skip)) == skip
