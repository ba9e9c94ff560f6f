"""State the guards of every worker on one store share: the protocol a store offers for
it (`SharedState`), and `SharedTable`, the in-process table used when it offers none
(and by the memory store)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class SharedState(Protocol):
    """What a store offers so the guards of all its workers share one state.

    Numbers (rate-limit slots, brake counts) and versioned texts (breaker
    states) under string keys. Each write keeps its key `ttl` seconds past
    `now`; an expired key reads as absent and may be deleted at any time.
    Every call is atomic on its key; nothing else is asked.
    """

    async def shared_bump(
        self, key: str, add: float, *, floor: float, now: float, ttl: float
    ) -> float:
        """Set the number at `key` to max(it, floor) + add (absent: floor + add); return it."""
        ...

    async def shared_get(self, prefix: str, now: float) -> dict[str, tuple[int, str]]:
        """Every live text whose key starts with `prefix`: key -> (version, text)."""
        ...

    async def shared_put(
        self, key: str, value: str, *, version: int, now: float, ttl: float
    ) -> int | None:
        """Write `value` if the key's version is still `version` (0: absent), or whatever
        `version` says if the key expired; return the new version (one past the stored
        one), or None when another writer got there first."""
        ...


class SharedTable:
    """Numbers and versioned texts under keys, each forgotten `ttl` seconds after its last
    write: what workers share for circuit breakers, rate limits and brakes
    (`cascade_notify.resilience.SharedState`), kept in this process."""

    def __init__(self) -> None:
        self._numbers: dict[str, tuple[float, float]] = {}  # key -> (value, expires)
        self._texts: dict[str, tuple[int, str, float]] = {}  # key -> (version, text, expires)
        self._sweep_ts = 0.0

    def bump(self, key: str, add: float, *, floor: float, now: float, ttl: float) -> float:
        """Set the number at `key` to max(it, floor) + add (absent: floor + add); return it."""
        self._sweep(now)
        found = self._numbers.get(key)
        value = max(found[0] if found is not None and found[1] > now else floor, floor) + add
        self._numbers[key] = (value, now + ttl)
        return value

    async def shared_bump(
        self, key: str, add: float, *, floor: float, now: float, ttl: float
    ) -> float:
        return self.bump(key, add, floor=floor, now=now, ttl=ttl)

    async def shared_get(self, prefix: str, now: float) -> dict[str, tuple[int, str]]:
        return {
            key: (version, text)
            for key, (version, text, expires) in self._texts.items()
            if key.startswith(prefix) and expires > now
        }

    async def shared_put(
        self, key: str, value: str, *, version: int, now: float, ttl: float
    ) -> int | None:
        found = self._texts.get(key)
        current = found[0] if found is not None else 0
        expired = found is not None and found[2] <= now
        if current != version and not expired:
            return None
        self._texts[key] = (current + 1, value, now + ttl)
        return current + 1

    def _sweep(self, now: float) -> None:
        if now < self._sweep_ts:
            return
        self._sweep_ts = now + 60.0
        for key in [k for k, (_, expires) in self._numbers.items() if expires <= now]:
            del self._numbers[key]


__all__ = ["SharedState", "SharedTable"]
