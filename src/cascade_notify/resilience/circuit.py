"""One provider's circuit breaker: a pure state machine over the times it is told.

```
closed ── `failures` in a row, or `rate` of ≥ `min_calls` calls in `window` ──► open
open ── `cool_down` passes ──► half-open: up to `probes` sends go through
half-open ── a success ──► closed        half-open ── a probe fails ──► open
```

An operator may open it for a while (it then goes half-open like any other)
or close it. What counts as a failure, a success or neither is the caller's
business (`resilience.Protection` decides from attempts and receipts); this
class only counts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from cascade_notify.resilience.settings import DEFAULT_BREAKER, BreakerSettings

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"
_BUCKETS: Final = 10  # the failure-rate window slides in tenths


@dataclass(frozen=True, slots=True)
class BreakerInfo:
    """A breaker as an operator sees it. `until`: when an open breaker turns half-open."""

    provider: str
    state: str
    since: float
    until: float | None
    manual: bool
    reason: str
    failures_in_row: int


class Circuit:
    """The breaker of one provider. `settings` None: it never opens by itself."""

    def __init__(self, provider: str, settings: BreakerSettings | None) -> None:
        self.provider = provider
        self.settings = settings
        # without settings it never opens by itself, but probes like the default after a
        # hand-set opening runs out
        self._tuning = settings or DEFAULT_BREAKER
        self._state: str = CLOSED
        self.since = 0.0
        self.until = 0.0
        self.manual = False
        self.reason = ""
        self.run = 0
        self._window: deque[list[float]] = deque()  # [bucket, failures, calls]
        self._probes: dict[str, float] = {}  # holder (delivery id) -> when the slot lapses
        self.version = 0  # of the shared copy this one matches
        self.changed = False  # a transition not yet shared

    # reads

    def state(self, now: float) -> str:
        """closed, open or half_open at `now` (an open breaker turns half-open by the clock)."""
        if self._state == OPEN and now >= self.until:
            return HALF_OPEN
        return self._state

    def allows(self, now: float, holder: str | None = None) -> bool:
        """Whether a send may go to the provider now (for `holder`, if it holds a probe).

        The one rule `take_probe` also reads: closed lets everything through, open
        nothing; half-open (by the clock too) lets through a holder of a live probe slot,
        and anyone else while fewer than `probes` slots are live."""
        state = self.state(now)
        if state != HALF_OPEN:
            return state == CLOSED
        # half-open by the clock: the slots of the last half-open spell lapsed with it
        probes = self._probes if self._state == HALF_OPEN else {}
        if holder is not None and probes.get(holder, 0.0) > now:
            return True
        return sum(1 for lapse in probes.values() if lapse > now) < self._tuning.probes

    def info(self, now: float) -> BreakerInfo:
        """The breaker as an operator sees it at `now`."""
        state = self.state(now)
        return BreakerInfo(
            provider=self.provider,
            state=state,
            since=self.until if state == HALF_OPEN and self._state == OPEN else self.since,
            until=self.until if state == OPEN else None,
            manual=self.manual and state == OPEN,
            reason=self.reason,
            failures_in_row=self.run,
        )

    # what happened

    def take_probe(self, now: float, holder: str, lapse: float) -> bool:
        """Let `holder` send: always while closed; in half-open only within the probe budget."""
        if not self.allows(now, holder):
            return False
        self._tick(now)
        if self._state == CLOSED:
            return True
        self._probes = {h: t for h, t in self._probes.items() if t > now}
        self._probes[holder] = lapse
        return True

    def failure(self, now: float, started: float | None = None, holder: str | None = None) -> bool:
        """A failed call (started at `started`); True if the breaker opened. A call started
        before the current state began (a time-out of a send from before the breaker closed)
        says nothing about the provider now, unless `holder` holds a probe."""
        self._tick(now)
        probing = holder is not None and holder in self._probes
        if started is not None and started < self.since and not probing:
            return False
        if self._state == CLOSED:
            self.run += 1
            failures, calls = self._count(now, failed=True)
            settings = self.settings
            if settings is None:
                return False
            if self.run >= settings.failures:
                return self._open(now, f"{self.run} failures in a row")
            if calls >= settings.min_calls and failures >= settings.rate * calls:
                return self._open(now, f"{failures} of the last {calls} calls failed")
            return False
        if self._state == HALF_OPEN:
            return self._open(now, "a probe failed")
        return False

    def success(self, now: float) -> bool:
        """A call that worked; True if it closed a half-open breaker."""
        self._tick(now)
        if self._state == CLOSED:
            self.run = 0
            self._count(now, failed=False)
            return False
        if self._state == HALF_OPEN:
            self._set(CLOSED, now, 0.0, "a probe succeeded")
            return True
        return False

    def neutral(self, now: float, holder: str | None = None) -> None:
        """A call the provider answered without a verdict on itself (recipient unreachable,
        rejected message): it breaks a run of failures, and frees its probe slot."""
        self._tick(now)
        if self._state == CLOSED:
            self.run = 0
            self._count(now, failed=False)
        elif holder is not None:
            self._probes.pop(holder, None)

    def release(self, holder: str) -> None:
        """`holder` will not use its probe slot after all (its delivery ended)."""
        self._probes.pop(holder, None)

    def trip(self, now: float, reason: str) -> bool:
        """Open now, whatever the counts say (the provider refused our account); it
        probes again after the cool-down. True if that changed the state."""
        self._tick(now)
        if self._state == OPEN:
            return False
        return self._open(now, reason)

    def force_open(self, now: float, seconds: float, reason: str) -> None:
        """Open it by hand for `seconds`; then it probes like any other."""
        self._set(OPEN, now, now + seconds, reason)
        self.manual = True

    def force_close(self, now: float, reason: str) -> None:
        """Close it by hand, now."""
        self._set(CLOSED, now, 0.0, reason)

    # sharing

    def snapshot(self) -> dict[str, Any]:
        """The part other workers adopt: the state, not the counts behind it."""
        state = CLOSED if self._state == CLOSED else OPEN
        return {
            "state": state,
            "since": self.since,
            "until": self.until,
            "manual": self.manual,
            "reason": self.reason,
        }

    def adopt(self, shared: dict[str, Any], version: int) -> bool:
        """Take another worker's state; True if it differs from ours."""
        state = OPEN if shared.get("state") == OPEN else CLOSED
        until = float(shared.get("until", 0.0))
        differs = state != (CLOSED if self._state == CLOSED else OPEN) or until != self.until
        self._set(state, float(shared.get("since", 0.0)), until, str(shared.get("reason", "")))
        self.manual = bool(shared.get("manual", False))
        self.version = version
        self.changed = False
        return differs

    # inside

    def _tick(self, now: float) -> None:
        if self._state == OPEN and now >= self.until:
            self._state = HALF_OPEN
            self.since = self.until
            self._probes.clear()

    def _open(self, now: float, reason: str) -> bool:
        self._set(OPEN, now, now + self._tuning.cool_down, reason)
        return True

    def _set(self, state: str, now: float, until: float, reason: str) -> None:
        self._state = state
        self.since = now
        self.until = until
        self.reason = reason
        self.manual = False
        self.run = 0
        self._window.clear()
        self._probes.clear()
        self.changed = True

    def _count(self, now: float, *, failed: bool) -> tuple[int, int]:
        """Add one call to the sliding window; return (failures, calls) within it."""
        width = self._tuning.window / _BUCKETS
        bucket = float(now // width)
        window = self._window
        while window and window[0][0] <= bucket - _BUCKETS:
            window.popleft()
        if not window or window[-1][0] != bucket:
            window.append([bucket, 0.0, 0.0])
        window[-1][1] += failed
        window[-1][2] += 1
        return int(sum(b[1] for b in window)), int(sum(b[2] for b in window))
