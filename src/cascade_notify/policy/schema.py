"""The policy file's shape: pydantic models of its sections, and the validated
`Config`, `Policy` and `ProviderConfig` a load returns."""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from cascade_notify._duration import Duration
from cascade_notify.errors import PolicyIssue
from cascade_notify.models import Priority, Step, WaitFor
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
    withdraw_superseded: bool | None = None  # None: the policy's
    on_too_long: Literal["split", "truncate", "skip"] = "skip"
    max_segments: int | None = Field(default=None, ge=1, le=255)
    transliterate: bool = False


class _Policy(_Strict):
    ttl: Duration = Field(default=86400.0, gt=0)
    withdraw_superseded: bool = False
    brakes: BrakeSettings = BrakeSettings()
    priority: Priority = Priority.NORMAL
    #: A send scheduled (`at=`) into the quiet hours of the step it would start on
    #: starts when they end.
    respect_quiet_hours: bool = False


def _as_secrets(value: object) -> object:
    return [value] if isinstance(value, str | SecretStr) else value


def _check_link_secrets(secrets: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
    for secret in secrets:
        if len(secret.get_secret_value()) < 32:
            raise ValueError(
                "a link secret is at least 32 characters (e.g. `openssl rand -hex 32`)"
            )
    return secrets


class LinkSettings(_Strict):
    """`links:` at the top of a policy: how deep links to the bots are signed.

    `secret` signs every link token (a list: the first signs, all are checked, for
    rotation); `ttl` is how long a link made now links (at most 366 days)."""

    secret: Annotated[
        tuple[SecretStr, ...],
        BeforeValidator(_as_secrets),
        Field(min_length=1),
        AfterValidator(_check_link_secrets),
    ]
    ttl: Duration = Field(default=7 * 86400.0, gt=0, le=366 * 86400.0)

    @property
    def keys(self) -> tuple[bytes, ...]:
        return tuple(secret.get_secret_value().encode() for secret in self.secret)


class SupportSettings(_Strict):
    """`support:` at the top of a policy: what the support page (`notifier.support_app`)
    shows of a delivery's message."""

    show_text: bool = Field(
        default=True,
        description="Show message texts (and subjects) on the support page; false hides "
        "them for every delivery.",
    )
    hide_text_for: tuple[Annotated[str, Field(min_length=1)], ...] = Field(
        default=(),
        description="Message categories whose texts the support page hides even when "
        "show_text is true (e.g. [medical, legal]).",
    )

    def shows(self, category: str) -> bool:
        """Whether a message of `category` has its text shown."""
        return self.show_text and category not in self.hide_text_for


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
    default_region: Country | None = None
    links: LinkSettings | None = None
    support: SupportSettings = SupportSettings()


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
    """A named cascade: its time to live in seconds, its resolved steps, the brakes
    on its sms and call steps, its deliveries' priority, and whether a scheduled send
    waits out the recipient's quiet hours."""

    name: str
    ttl: float
    steps: tuple[Step, ...]
    brakes: BrakeSettings = DEFAULT_BRAKES
    priority: Priority = Priority.NORMAL
    respect_quiet_hours: bool = False


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
    #: Where a phone number written without its country code is read (ISO, e.g. RU).
    default_region: str | None = None
    #: What the load found doubtful but not wrong (the file is used as it is).
    warnings: tuple[PolicyIssue, ...] = ()
    links: LinkSettings | None = None
    #: What the support page shows of messages.
    support: SupportSettings = SupportSettings()  # noqa: RUF009 - frozen, shared safely
