"""The poller owns a polled attempt's schedule: it asks every interval in memory until a
poll settles the attempt or its deadline passes, and the engine's re-requests (its
safety-net timer) add no status call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cascade_notify.models import Attempt, AttemptStatus, Receipt, ReceiptStatus
from cascade_notify.polling import Poller
from cascade_notify.testing import FakeClock


class Gateway:
    """A polled provider: records each status call; `answers` maps an id to the status
    its next poll reports (None: still waiting)."""

    poll_interval = 60.0
    poll_batch = 2

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, list[str]]] = []
        self.answers: dict[str, ReceiptStatus] = {}

    async def poll(self, ids: Sequence[str]) -> list[Receipt]:
        self.calls.append((self.clock.now(), list(ids)))
        return [
            Receipt(provider="gw", provider_message_id=i, status=s, ts=self.clock.now())
            for i in ids
            if (s := self.answers.get(i)) is not None
        ]


def waiting(message_id: str, deadline: float | None = None) -> Attempt:
    return Attempt(
        id=f"a-{message_id}", delivery_id=f"d-{message_id}", step=0, channel="sms",
        provider="gw", status=AttemptStatus.ACCEPTED, started_ts=0.0,
        provider_message_id=message_id, deadline_ts=deadline,
    )  # fmt: skip


async def test_asks_every_interval_until_settled_without_being_asked_again(
    fake_clock: FakeClock,
) -> None:
    gateway = Gateway(fake_clock)
    heard: list[Any] = []

    async def door(receipts: Sequence[Receipt]) -> None:
        heard.extend((r.provider_message_id, r.status) for r in receipts)

    poller = Poller({"gw": gateway}, fake_clock, door)  # type: ignore[dict-item]
    for message_id in ("m1", "m2", "m3"):
        poller.request(waiting(message_id))
    await fake_clock.settle()
    # batches of poll_batch, at once
    assert [ids for _, ids in gateway.calls] == [["m1", "m2"], ["m3"]]
    poller.request(waiting("m1"))  # the engine's safety net: already watched, no call
    await fake_clock.advance(59)
    assert len(gateway.calls) == 2
    gateway.answers["m2"] = ReceiptStatus.DELIVERED
    await fake_clock.advance(1)
    assert [ids for t, ids in gateway.calls[2:]] == [["m1", "m2"], ["m3"]]
    assert heard == [("m2", ReceiptStatus.DELIVERED)]
    assert poller.watched("gw") == 2  # m2 settled: not asked about again
    await fake_clock.advance(60)
    assert [ids for _, ids in gateway.calls[4:]] == [["m1", "m3"]]
    await poller.aclose()


async def test_stops_at_the_deadline(fake_clock: FakeClock) -> None:
    gateway = Gateway(fake_clock)

    async def door(receipts: Sequence[Receipt]) -> None:
        return None

    poller = Poller({"gw": gateway}, fake_clock, door)  # type: ignore[dict-item]
    start = fake_clock.now()
    poller.request(waiting("m1", deadline=start + 150))
    await fake_clock.advance(600)
    # at 0, 60 and 120; at 180 its deadline (150) has passed: the engine moves on
    assert [t - start for t, _ in gateway.calls] == [0.0, 60.0, 120.0]
    assert poller.watched("gw") == 0
    await poller.aclose()
