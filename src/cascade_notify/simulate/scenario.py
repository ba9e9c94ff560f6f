"""A scenario file: traffic, recipients, outages, receipt delays and prices, validated
with the policy loader's machinery so every mistake names its file, line and field."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from cascade_notify._duration import Duration
from cascade_notify.errors import CascadeError, PolicyError, PolicyIssue
from cascade_notify.policy.checks import Check
from cascade_notify.policy.marked import read_yaml

Loc = tuple[str | int, ...]
Failure = Literal["refused", "5xx", "silent"]
Blocked = Literal["silent", "unreachable"]

#: Channels whose providers report `read` in the simulation unless a scenario says otherwise.
READ_RECEIPTS: Final = frozenset({"whatsapp", "telegram", "viber", "max", "vk", "app"})
_Z95: Final = 1.6448536269514722  # the standard normal's 95th percentile
_MAX_DELIVERIES: Final = 10_000_000


class ScenarioError(CascadeError):
    """A scenario was refused. `issues` lists every problem, each with file, line and field."""

    def __init__(self, issues: list[PolicyIssue]) -> None:
        self.issues = list(issues)
        count = len(self.issues)
        head = f"{count} error{'s' if count != 1 else ''} in simulation scenario"
        super().__init__(head + "\n" + "\n".join(f"  {issue}" for issue in self.issues))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _shorthand(value: object) -> object:
    return value if isinstance(value, Mapping) else {"fixed": value}


class _Delay(_Strict):
    """A delay distribution: `fixed`; `mean` (exponential); `median` and `p95` (log-normal);
    or `min` and `max` (uniform). A bare duration is `fixed`."""

    fixed: Duration | None = None
    mean: Duration | None = Field(default=None, gt=0)
    median: Duration | None = Field(default=None, gt=0)
    p95: Duration | None = Field(default=None, gt=0)
    min: Duration | None = None
    max: Duration | None = None

    @model_validator(mode="after")
    def _one_form(self) -> _Delay:
        given = {k for k, v in self.__dict__.items() if v is not None}
        forms = [{"fixed"}, {"mean"}, {"median", "p95"}, {"min", "max"}]
        if given not in forms:
            raise ValueError(
                "give one of: a duration (fixed), {mean} (exponential), "
                "{median, p95} (log-normal) or {min, max} (uniform)"
            )
        if self.median is not None and self.p95 is not None and self.p95 < self.median:
            raise ValueError("p95 must not be shorter than median")
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError("max must not be shorter than min")
        return self

    def sample(self, rng: random.Random) -> float:
        if self.fixed is not None:
            return self.fixed
        if self.mean is not None:
            return rng.expovariate(1.0 / self.mean)
        if self.median is not None and self.p95 is not None:
            mu = math.log(self.median)
            sigma = (math.log(self.p95) - mu) / _Z95
            return rng.lognormvariate(mu, sigma) if sigma > 0 else self.median
        assert self.min is not None and self.max is not None
        return rng.uniform(self.min, self.max)


Delay = Annotated[_Delay, BeforeValidator(_shorthand)]
_Share = Annotated[float, Field(ge=0, le=1)]
_Name = Annotated[str, Field(min_length=1)]


class _Channel(_Strict):
    delivered: Delay = _Delay(fixed=5.0)  # from acceptance to the `delivered` receipt
    lost: _Share = 0.0  # share of accepted messages whose receipt never comes
    reads: bool | None = None  # does it report `read`? default: messengers yes, others no


class _Segment(_Strict):
    name: _Name
    share: float = Field(gt=0)
    channels: list[_Name] = Field(min_length=1)
    region: str | None = None
    tags: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="the recipients' tags (Recipient.tags), for routes:"
    )
    phone_prefix: str = Field(default="+7916", pattern=r"^\+\d{1,8}$")
    reads: _Share = 0.8  # share of recipients who read the message
    read_after: Delay = _Delay(fixed=60.0)  # from the `delivered` receipt to `read`
    blocked: dict[str, Blocked] = Field(default_factory=dict)  # channel -> how it fails


class _Outage(_Strict):
    provider: _Name | None = None
    channel: _Name | None = None
    start: datetime | None = None
    after: Duration | None = None  # from the traffic's start
    duration: Duration = Field(gt=0)
    fails: Failure = "refused"

    @model_validator(mode="after")
    def _one_each(self) -> _Outage:
        if (self.provider is None) == (self.channel is None):
            raise ValueError("name either provider: or channel: (one of them)")
        if (self.start is None) == (self.after is None):
            raise ValueError("give either start: (a date and time) or after: (a duration)")
        return self


class _Traffic(_Strict):
    deliveries: int = Field(ge=1, le=_MAX_DELIVERIES)
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    window: Duration = Field(gt=0)
    hourly: list[Annotated[float, Field(ge=0)]] | None = Field(
        default=None, min_length=24, max_length=24
    )
    recipients: int | None = Field(
        default=None,
        ge=1,
        le=_MAX_DELIVERIES,
        description="How many different customers the deliveries go to, each drawn at "
        "random for each delivery (a customer keeps one segment); default: a new "
        "customer for every delivery. Repeat customers are what `order: learned` learns from.",
    )

    @model_validator(mode="after")
    def _some_hour(self) -> _Traffic:
        if self.hourly is not None and not any(self.hourly):
            raise ValueError("hourly: at least one hour must have traffic")
        return self


class _Scenario(_Strict):
    name: str | None = None
    description: str | None = None
    traffic: _Traffic
    segments: list[_Segment] = Field(min_length=1)
    channels: dict[str, _Channel] = Field(default_factory=dict)
    outages: list[_Outage] = Field(default_factory=list)
    prices: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    currency: str = ""
    run_for: Duration | None = Field(default=None, gt=0)  # after the window; default: max ttl


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True, slots=True)
class Outage:
    """One provider's (or channel's) outage: [start_ts, end_ts), failing as `fails`."""

    provider: str | None
    channel: str | None
    start_ts: float
    end_ts: float
    fails: Failure
    index: int


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario. Times are Unix seconds; `where` maps field paths to lines."""

    name: str
    description: str
    model: _Scenario
    start_ts: float
    outages: tuple[Outage, ...]
    source: str | None = None
    where: Mapping[Loc, tuple[int, int]] = field(default_factory=dict)

    def issue(self, loc: Loc, message: str) -> PolicyIssue:
        """A located issue for a field of this scenario (for checks against a policy)."""
        line, column = None, None
        for i in range(len(loc), -1, -1):
            if loc[:i] in self.where:
                line, column = self.where[loc[:i]]
                break
        path = ""
        for part in loc:
            path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
        return PolicyIssue(path, message, self.source, line, column)


def _build(model: _Scenario, check: Check, name: str) -> Scenario:
    start = _epoch(model.traffic.start)
    outages = tuple(
        Outage(
            o.provider,
            o.channel,
            (s := _epoch(o.start) if o.start is not None else start + (o.after or 0.0)),
            s + o.duration,
            o.fails,
            i,
        )
        for i, o in enumerate(model.outages)
    )
    where = {loc: (m.line + 1, m.column + 1) for loc, m in check.marks.items()}
    return Scenario(
        name=model.name or name,
        description=model.description or "",
        model=model,
        start_ts=start,
        outages=outages,
        source=check.source,
        where=where,
    )


def load_scenario(source: str | os.PathLike[str]) -> Scenario:
    """Load a scenario file (a path) or YAML text; raise `ScenarioError` listing every
    problem with its file, line and field."""
    text: str
    if isinstance(source, str) and ("\n" in source or not source.endswith((".yaml", ".yml"))):
        check, text, name = Check(None), source, "scenario"
    else:
        path = Path(source)
        check, name = Check(str(path)), path.stem
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ScenarioError([PolicyIssue("", f"cannot read it: {reason}", str(path))]) from exc
    try:
        data: Any = read_yaml(text, check)
        if not isinstance(data, Mapping):
            check.add((), "the scenario must be a mapping with traffic: and segments:")
            check.raise_if_any()
        model = check.validate(_Scenario, data, ())
        check.raise_if_any()
    except PolicyError as exc:
        raise ScenarioError(exc.issues) from None
    assert model is not None
    return _build(model, check, name)
