"""The policy file's shape: pydantic models of its sections, and the validated
`Config`, `Policy` and `ProviderConfig` a load returns."""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from cascade_notify._duration import Duration
from cascade_notify.models import Step, WaitFor
from cascade_notify.providers.base import Provider, ProviderSettings
from cascade_notify.resilience.settings import (
    DEFAULT_BRAKES,
    DEFAULT_BREAKER,
    BrakeSettings,
    BreakerSettings,
    Country,
    RateLimitSettings,
    RetrySettings,
)

Loc = tuple[str | int, ...]
_CHANNEL: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_HHMM: Final = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _channel_name(value: str) -> str:
    if not _CHANNEL.match(value):
        raise ValueError(
            f"{value!r} is not a channel name (a lower-case letter, then up to 31 "
            "lower-case letters, digits or _)"
        )
    return value


def _minutes(value: object) -> int:
    if isinstance(value, str) and (match := _HHMM.match(value.strip())):
        return int(match[1]) * 60 + int(match[2])
    raise ValueError(f'{value!r} is not a time of day; write HH:MM, e.g. "22:00"')


_Channel = Annotated[str, AfterValidator(_channel_name)]
_Minutes = Annotated[int, BeforeValidator(_minutes)]


#: The store a policy without `store:` gets: an SQLite file beside the process.
DEFAULT_STORE: Final = "sqlite:///cascade.db"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _QuietHours(_Strict):
    start: _Minutes
    end: _Minutes
    wait: bool = False  # wait for their end instead of skipping the step


class _Refs(BaseModel):
    """What a step refers to, read on its own so a typo elsewhere in the step hides nothing."""

    channel: _Channel
    providers: list[str] = Field(min_length=1)
    wait_for: WaitFor = WaitFor.DELIVERED


class _Step(_Refs):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: Duration = Field(default=600.0, gt=0)
    retry: RetrySettings = RetrySettings()
    quiet_hours: _QuietHours | None = None
    categories: list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, min_length=1)
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    on_too_long: Literal["split", "truncate", "skip"] = "skip"
    max_segments: int | None = Field(default=None, ge=1, le=255)
    transliterate: bool = False


class _Policy(_Strict):
    ttl: Duration = Field(default=86400.0, gt=0)
    brakes: BrakeSettings = BrakeSettings()


class WorkerSettings(_Strict):
    """How a worker leases due deliveries: lease length (seconds), parallel sends, batch size."""

    lease: Duration = Field(default=30.0, gt=0)
    concurrency: int = Field(default=100, ge=1)
    batch: int = Field(default=100, ge=1)


class _Top(_Strict):
    store: str = Field(default=DEFAULT_STORE, min_length=1)
    default_policy: str | None = None
    worker: WorkerSettings = WorkerSettings()
    sender_country: Country | None = None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One entry under `providers:`: its class, its validated settings and its channel,
    and the library's resilience settings for it (`breaker` None: no automatic tripping)."""

    name: str
    type: str
    cls: builtins.type[Provider]
    settings: ProviderSettings
    channel: str
    breaker: BreakerSettings | None = DEFAULT_BREAKER
    rate_limit: RateLimitSettings | None = None
    retry: RetrySettings | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """A named cascade: its time to live in seconds, its resolved steps, and the brakes
    on its sms and call steps."""

    name: str
    ttl: float
    steps: tuple[Step, ...]
    brakes: BrakeSettings = DEFAULT_BRAKES


@dataclass(frozen=True, slots=True)
class Config:
    """A whole policy file, validated: providers, policies, store URL and worker settings."""

    providers: Mapping[str, ProviderConfig]
    policies: Mapping[str, Policy]
    default_policy: str
    store: str
    source: str | None
    worker: WorkerSettings
    sender_country: str | None = None
