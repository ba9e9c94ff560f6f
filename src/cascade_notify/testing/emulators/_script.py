"""Scripts: what an emulator answers to one address, request by request.

An entry is a name (`"deliver"`, `"read"`, `"rate_limited"`, `"slow"`…) or a mapping
with `do` and its options (`{"do": "slow", "seconds": 3, "then": "read"}`,
`{"do": "read", "delivered": 5, "read": 30}`). A script is one entry or a list, one
entry per request; the last entry repeats once the list is used up.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

#: Answers every emulator knows: the message is accepted, then these receipts follow.
BEHAVIOURS: Final = (
    "deliver",
    "read",
    "read_only",
    "no_receipt",
    "fail_receipt",
    "duplicate_receipts",
    "out_of_order",
)
#: How the answer travels, not what it says.
FLOWS: Final = ("slow", "hang_up")
#: The receipts scripts speak of, and their default delays after the answer, in seconds.
RECEIPT_DELAYS: Final[Mapping[str, float]] = {
    "sent": 0.0,
    "delivered": 1.0,
    "read": 2.0,
    "failed": 1.0,
}
DUPLICATE_GAP: Final = 0.5
DEFAULT_SLOW: Final = 10.0
_OPTIONS: Final = frozenset({"do", "seconds", "then", "retry_after", "code", "detail"})

ScriptSpec: TypeAlias = (
    "str | Mapping[str, Any] | Entry | Sequence[str | Mapping[str, Any] | Entry]"
)


@dataclass(frozen=True)
class Entry:
    """One scripted answer.

    `seconds` is how long `slow` waits; `then` what `slow` answers and what a `hang_up`
    still did (`None`: the message was lost); `delays` override receipt delays;
    `retry_after`, `code` and `detail` refine a named error or a `fail_receipt`.
    """

    do: str
    seconds: float = DEFAULT_SLOW
    then: Entry | None = None
    delays: Mapping[str, float] = field(default_factory=dict)
    retry_after: int | None = None
    code: int | None = None
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"do": self.do}
        if self.do == "slow":
            out["seconds"] = self.seconds
        if self.then is not None:
            out["then"] = self.then.as_json()
        out.update(self.delays)
        for key in ("retry_after", "code", "detail"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


def parse_entry(value: str | Mapping[str, Any] | Entry, errors: Collection[str]) -> Entry:
    """An `Entry` from its name or mapping; ValueError naming what is wrong."""
    if isinstance(value, Entry):
        _check_name(value.do, errors)
        return value
    if isinstance(value, str):
        _check_name(value, errors)
        if value == "slow":
            return Entry("slow", then=Entry("deliver"))
        return Entry(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"a script entry is a name or a mapping, not {type(value).__name__}")
    options = dict(value)
    name = options.pop("do", None)
    if not isinstance(name, str):
        raise ValueError("a script entry mapping needs 'do': the answer's name")
    _check_name(name, errors)
    delays: dict[str, float] = {}
    for key in list(options):
        if key in RECEIPT_DELAYS:
            delays[key] = _seconds(key, options.pop(key))
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        known = sorted((_OPTIONS - {"do"}) | set(RECEIPT_DELAYS))
        raise ValueError(f"unknown script option {unknown[0]!r}; known: {', '.join(known)}")
    then_spec = options.get("then", "deliver" if name == "slow" else None)
    then = None if then_spec is None else parse_entry(then_spec, errors)
    if then is not None and then.do in FLOWS:
        raise ValueError(f"'then' of {name!r} must be an answer, not {then.do!r}")
    if then is not None and name not in FLOWS:
        raise ValueError(f"'then' belongs to slow and hang_up, not {name!r}")
    return Entry(
        do=name,
        seconds=_seconds("seconds", options.get("seconds", DEFAULT_SLOW)),
        then=then,
        delays=delays,
        retry_after=_optional_int("retry_after", options.get("retry_after")),
        code=_optional_int("code", options.get("code")),
        detail=None if options.get("detail") is None else str(options["detail"]),
    )


def parse_script(spec: ScriptSpec, errors: Collection[str]) -> list[Entry]:
    """A script as a list of entries (at least one)."""
    if isinstance(spec, str | Mapping | Entry):
        return [parse_entry(spec, errors)]
    entries = [parse_entry(item, errors) for item in spec]
    if not entries:
        raise ValueError("a script list needs at least one entry")
    return entries


def receipt_plan(entry: Entry, supported: Mapping[str, str]) -> list[tuple[float, str]]:
    """`(delay, provider status)` pairs the entry's receipts are posted at, in order.

    `supported` maps the script's receipt names (`sent`, `delivered`, `read`, `failed`)
    to the provider's own; a provider without one simply never sends it.
    """
    delay = {**RECEIPT_DELAYS, **entry.delays}
    statuses = {
        "deliver": ["sent", "delivered"],
        "read": ["sent", "delivered", "read"],
        "read_only": ["sent", "read"],
        "fail_receipt": ["sent", "failed"],
        "duplicate_receipts": ["sent", "delivered"],
        "out_of_order": ["sent", "delivered", "read"],
    }.get(entry.do, [])
    plan = [(delay[s], supported[s]) for s in statuses if s in supported]
    if entry.do == "duplicate_receipts":
        plan = sorted(
            plan + [(t + DUPLICATE_GAP, s) for t, s in plan if s != supported.get("sent")]
        )
    if entry.do == "out_of_order":
        times = sorted(t for t, _ in plan)
        plan = list(zip(times, [s for _, s in reversed(plan)], strict=True))
    return plan


class Scripts:
    """Per-address scripts, with `"*"` as the default for unscripted addresses; each
    address walks its script on its own, the default one included."""

    def __init__(self) -> None:
        self._scripts: dict[str, list[Entry]] = {}
        self._used: dict[tuple[str, str], int] = {}

    def set(self, address: str, entries: list[Entry]) -> None:
        self._scripts[address] = entries
        self._used = {k: n for k, n in self._used.items() if k[0] != address}

    def next(self, address: str) -> Entry:
        key = address if address in self._scripts else "*"
        entries = self._scripts.get(key)
        if not entries:
            return Entry("deliver")
        used = self._used.get((key, address), 0)
        self._used[key, address] = used + 1
        return entries[min(used, len(entries) - 1)]

    def as_json(self) -> dict[str, list[dict[str, Any]]]:
        return {a: [e.as_json() for e in entries] for a, entries in self._scripts.items()}

    def clear(self) -> None:
        self._scripts.clear()
        self._used.clear()


def _check_name(name: str, errors: Collection[str]) -> None:
    if name not in BEHAVIOURS and name not in FLOWS and name not in errors:
        known = ", ".join([*BEHAVIOURS, *FLOWS, *sorted(errors)])
        raise ValueError(f"unknown script entry {name!r}; known: {known}")


def _seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _optional_int(key: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, not {value!r}")
    return value
