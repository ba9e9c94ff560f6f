"""The learned channel order: what a recipient's history says of each channel, and a
policy's steps ordered by it (`order: learned`, docs/routing.md).

The store keeps, per recipient and channel, a `Seen`: the `rank` of its best success
(the time it last reached them, a `read` counting as one `READ_BONUS` later), when it
last reached them, and when it last failed them (unreachable, a `failed` receipt).
Ranking by `rank` is ranking by a score that halves every `READ_BONUS` of age and
starts at 1 for a delivery and 2 for a read, with no arithmetic but `max`: so every
store keeps it with one upsert, whatever order the receipts come in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from cascade_notify.models import Order, Step

#: A read counts as a delivery this much later (the score's half-life): a read three
#: days ago outranks a delivery today, a read ten days ago does not.
READ_BONUS: Final = 7 * 86400.0
#: The most channels a store keeps per recipient (the oldest goes first).
HISTORY_LIMIT: Final = 16


def _later(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None or a >= b else b


@dataclass(frozen=True, slots=True)
class Seen:
    """What the store knows of one channel for one recipient (None: never)."""

    rank: float | None = None
    reached_ts: float | None = None
    failed_ts: float | None = None

    @property
    def failing(self) -> bool:
        """It failed them since it last reached them: it goes last."""
        return self.failed_ts is not None and (
            self.reached_ts is None or self.failed_ts > self.reached_ts
        )

    @property
    def last_ts(self) -> float:
        """When anything was last heard (the oldest channel is dropped past the limit)."""
        return max(self.reached_ts or 0.0, self.failed_ts or 0.0)

    def merged(self, other: Seen) -> Seen:
        return Seen(
            _later(self.rank, other.rank),
            _later(self.reached_ts, other.reached_ts),
            _later(self.failed_ts, other.failed_ts),
        )

    def known(self) -> tuple[str, float] | None:
        """What counts of it: (`failed`, when) if it is failing, else (`read` or `reached`,
        when) of its best success; None: nothing."""
        if self.failing:
            assert self.failed_ts is not None
            return "failed", self.failed_ts
        if self.rank is not None and self.reached_ts is not None:
            if self.rank > self.reached_ts:  # its best was a read
                return "read", self.rank - READ_BONUS
            return "reached", self.reached_ts
        return None


@dataclass(frozen=True, slots=True)
class Lesson:
    """What one outcome or receipt teaches: `seen` merged into (recipient, channel)."""

    recipient_id: str
    channel: str
    seen: Seen


def reached(recipient_id: str, channel: str, ts: float, *, read: bool) -> Lesson:
    rank = ts + READ_BONUS if read else ts
    return Lesson(recipient_id, channel, Seen(rank=rank, reached_ts=ts))


def failed(recipient_id: str, channel: str, ts: float) -> Lesson:
    return Lesson(recipient_id, channel, Seen(failed_ts=ts))


def reorder(steps: Sequence[Step], seen: Mapping[str, Seen]) -> tuple[tuple[Step, ...], Order]:
    """`steps` in the learned order for a recipient whose history is `seen` (channel ->
    what is known): the channels that reached them first, best `rank` first; then those
    never heard of, in the policy's order; then those that failed them since they last
    reached them. Ties, and steps with `keep_place`, keep the policy's order."""
    movable = [i for i, step in enumerate(steps) if not step.keep_place]

    def key(index: int) -> tuple[int, float, int]:
        known = seen.get(steps[index].channel)
        if known is None or (known.rank is None and not known.failing):
            return (1, 0.0, index)
        if known.failing:
            return (2, 0.0, index)
        assert known.rank is not None
        return (0, -known.rank, index)

    placed = list(steps)
    for slot, index in zip(movable, sorted(movable, key=key), strict=True):
        placed[slot] = steps[index]
    channels = tuple(dict.fromkeys(step.channel for step in placed))
    policy = tuple(dict.fromkeys(step.channel for step in steps))
    reasons = []
    for channel in channels:
        known = seen[channel].known() if channel in seen else None
        if known is not None:
            reasons.append((channel, *known))
    order = Order(channels=channels, moved=channels != policy, reasons=tuple(reasons))
    return tuple(placed), order


__all__ = ["HISTORY_LIMIT", "READ_BONUS", "Lesson", "Seen", "failed", "reached", "reorder"]
