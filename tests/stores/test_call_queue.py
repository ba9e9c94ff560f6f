"""The CallQueue contract: every store (memory, SQLite, PostgreSQL) passes every test here."""

from __future__ import annotations

import asyncio

import pytest

from cascade_notify.models import CallStatus, QueuedCall
from cascade_notify.stores import Store
from cascade_notify.stores.base import CallQueue

from .conftest import NOW, StoreFactory, durable


def call(task_id: str = "ct_1", *, due: float = NOW + 3600, not_before: float = NOW) -> QueuedCall:
    return QueuedCall(
        task_id=task_id, provider="queue", delivery_id="dl_1", recipient_id="anna",
        phone="+79161234567", text="Ваша посылка прибыла.", summary="SMS: 103.",
        not_before=not_before, due_by=due, created_ts=NOW,
        task={"task_id": task_id, "window": {"due_by": "2026-01-01T01:00:00Z"}},
    )  # fmt: skip


def queue(store: Store) -> CallQueue:
    assert isinstance(store, CallQueue)
    return store


async def test_every_store_keeps_calls(store: Store) -> None:
    """Every store is a call queue; a call comes back as it was put, every field."""
    calls = queue(store)
    assert await calls.put_call(call()) is True
    [back] = await calls.calls()
    assert back == call()


async def test_put_is_idempotent_on_the_task_id(store: Store) -> None:
    """Putting a known task id again changes nothing and says so."""
    calls = queue(store)
    await calls.put_call(call())
    changed = call()
    changed.text = "other"
    assert await calls.put_call(changed) is False
    assert [c.text for c in await calls.calls()] == ["Ваша посылка прибыла."]


async def test_listed_soonest_due_first_by_status(store: Store) -> None:
    """calls() lists soonest due first, filtered by status, at most `limit`."""
    calls = queue(store)
    for task_id, due in (("late", NOW + 900), ("soon", NOW + 60), ("mid", NOW + 300)):
        await calls.put_call(call(task_id, due=due))
    assert [c.task_id for c in await calls.calls()] == ["soon", "mid", "late"]
    assert [c.task_id for c in await calls.calls(limit=1)] == ["soon"]
    await calls.close_call("mid", CallStatus.DONE, NOW)
    assert [c.task_id for c in await calls.calls([CallStatus.OPEN])] == ["soon", "late"]
    assert [c.task_id for c in await calls.calls([CallStatus.DONE])] == ["mid"]


async def test_claim_takes_the_soonest_open_call_whose_window_began(store: Store) -> None:
    """claim without a task id: the open call due soonest, not one still in its quiet hours."""
    calls = queue(store)
    await calls.put_call(call("morning", due=NOW + 60, not_before=NOW + 30))
    await calls.put_call(call("now", due=NOW + 600))
    taken = await calls.claim_call("irina", NOW)
    assert taken is not None
    assert (taken.task_id, taken.status, taken.operator, taken.claimed_ts) == (
        "now", CallStatus.CLAIMED, "irina", NOW,
    )  # fmt: skip
    assert await calls.claim_call("oleg", NOW) is None
    later = await calls.claim_call("oleg", NOW + 30)
    assert later is not None and later.task_id == "morning"


async def test_claim_by_task_id(store: Store) -> None:
    """A named open call can be claimed; one claimed by somebody else cannot; one's own can."""
    calls = queue(store)
    await calls.put_call(call())
    assert (await calls.claim_call("irina", NOW, "ct_1")) is not None
    assert await calls.claim_call("oleg", NOW, "ct_1") is None
    again = await calls.claim_call("irina", NOW + 5, "ct_1")
    assert again is not None and again.claimed_ts == NOW + 5
    assert await calls.claim_call("irina", NOW, "nope") is None


async def test_close_ends_a_call_once(store: Store) -> None:
    """close_call ends an open or claimed call with its note; a final call stays as it ended."""
    calls = queue(store)
    await calls.put_call(call())
    await calls.claim_call("irina", NOW)
    done, changed = await calls.close_call("ct_1", CallStatus.DONE, NOW + 60, "reached her")
    assert changed and done is not None
    assert (done.status, done.finished_ts, done.note) == (CallStatus.DONE, NOW + 60, "reached her")
    after, changed = await calls.close_call("ct_1", CallStatus.CANCELLED, NOW + 90)
    assert not changed and after is not None and after.status is CallStatus.DONE
    assert await calls.close_call("nope", CallStatus.DONE, NOW) == (None, False)


async def test_reopen_releases_the_claim(store: Store) -> None:
    """Closing as `open` (nobody answered, try again) puts the call back for anyone."""
    calls = queue(store)
    await calls.put_call(call())
    await calls.claim_call("irina", NOW)
    reopened, changed = await calls.close_call("ct_1", CallStatus.OPEN, NOW + 5, "no answer")
    assert changed and reopened is not None
    assert (reopened.status, reopened.operator, reopened.note) == (
        CallStatus.OPEN, None, "no answer",
    )  # fmt: skip
    taken = await calls.claim_call("oleg", NOW + 6)
    assert taken is not None and taken.operator == "oleg"


async def test_two_operators_claiming_at_once_get_different_calls(store: Store) -> None:
    """Concurrent claims never hand one call to two operators."""
    calls = queue(store)
    for i in range(4):
        await calls.put_call(call(f"ct_{i}", due=NOW + 60 * i))
    taken = await asyncio.gather(*(calls.claim_call(f"op{i}", NOW) for i in range(6)))
    ids = [c.task_id for c in taken if c is not None]
    assert sorted(ids) == ["ct_0", "ct_1", "ct_2", "ct_3"]


async def test_calls_outlive_the_process(store_factory: StoreFactory, store: Store) -> None:
    """A queued call is there after the store is reopened."""
    durable(store)
    await queue(store).put_call(call())
    await store.close()
    again = store_factory()
    await again.open()
    try:
        assert [c.task_id for c in await queue(again).calls()] == ["ct_1"]
    finally:
        await again.close()
        await store.open()


def test_claimed_is_not_a_way_to_close() -> None:
    """close_call(..., CLAIMED) is a mistake, said so (claims go through claim_call)."""
    from cascade_notify.stores import _calls

    with pytest.raises(ValueError, match="claim_call"):
        _calls.closed(call(), CallStatus.CLAIMED, NOW, None)


async def test_one_call_by_task_id_says_who_took_it(store: Store) -> None:
    """call(task_id) reads one call as it stands (the support page's "who called")."""
    calls = queue(store)
    await calls.put_call(call())
    await calls.claim_call("irina", NOW)
    await calls.close_call("ct_1", CallStatus.DONE, NOW + 60, "reached her")
    found = await calls.call("ct_1")
    assert found is not None
    assert (found.operator, found.status, found.note) == ("irina", CallStatus.DONE, "reached her")
    assert await calls.call("nope") is None
