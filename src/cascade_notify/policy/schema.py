"""The policy file's shape: pydantic models of its sections, and the validated
`Config`, `Policy` and `ProviderConfig` a load returns."""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
)

from cascade_notify._duration import Duration
from cascade_notify.errors import PolicyIssue
from cascade_notify.models import Priority, Step, WaitFor
from cascade_notify.providers._signing import decode_whsec
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
from cascade_notify.routing import Rule

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
    start: _Minutes = Field(
        description="When the quiet hours begin, in the recipient's time zone (UTC when unknown)."
    )
    end: _Minutes = Field(
        description="When they end; an end before the start runs past midnight (22:00 to 08:00)."
    )
    wait: bool = Field(
        default=False,
        description="`true`: wait for their end instead of skipping the step (skipped all the "
        "same when the delivery would expire first; a call task needs 30 minutes left).",
    )


class _Refs(BaseModel):
    """What a step refers to, read on its own so a typo elsewhere in the step hides nothing."""

    channel: _Channel = Field(
        description="The channel this step sends on (`whatsapp`, `telegram`, `sms`, ...: a "
        "lower-case letter, then up to 31 lower-case letters, digits or `_`); the recipient's "
        "address for it is used, and each channel appears once in a policy."
    )
    providers: list[str] = Field(
        min_length=1,
        description="Names under `providers:` to try in this order; each must send on the "
        "step's channel. A provider that cannot be reached or whose breaker is open hands "
        "over to the next at once.",
    )
    wait_for: WaitFor = Field(
        default=WaitFor.DELIVERED,
        description="The receipt that makes the step succeed; a provider that can never "
        "report it is refused at load time.",
    )


class _Step(_Refs):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: Duration = Field(
        default=600.0,
        gt=0,
        description="How long to wait for the `wait_for` receipt after each send (and the "
        "longest a retry may wait); then the step's next provider, or the next step.",
    )
    retry: RetrySettings = Field(
        default=RetrySettings(),
        description="Transient errors within the step; keys not given here come from the "
        "`retry:` of the step's first provider that has one.",
    )
    quiet_hours: _QuietHours | None = Field(
        default=None,
        description="Hours of the recipient's day in which the step is skipped (or waited out).",
    )
    categories: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        min_length=1,
        description="The message categories this step sends (`transactional`, `marketing`); "
        "a message of another category skips it. `null`: every category.",
    )
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per provider of the step, by name: the provider type's options (see its "
        "options under Provider types), checked at load time; `Message.overrides` win.",
    )
    withdraw_superseded: bool | None = Field(
        default=None,
        description="Take back this step's unconfirmed messages once another step succeeds, "
        "where the provider can; `null`: the policy's `withdraw_superseded`.",
    )
    on_too_long: Literal["split", "truncate", "skip"] = Field(
        default="skip",
        description="A text over the step's limit: `skip` the step (reason `too_long`), "
        "`truncate` it, or `split` it into several messages.",
    )
    max_segments: int | None = Field(
        default=None,
        ge=1,
        le=255,
        description="sms steps only: the most segments a text may be billed as.",
    )
    transliterate: bool = Field(
        default=False,
        description="Write Cyrillic in Latin letters first, so an SMS fits GSM-7 (160 "
        "characters a segment, not 70).",
    )
    keep_place: bool = Field(
        default=False,
        description="With the policy's `order: learned`: this step stays where it is (an "
        "SMS or call fallback that must not move first once it has reached someone); the "
        "other steps are reordered around it.",
    )


class _Policy(_Strict):
    ttl: Duration = Field(
        default=86400.0,
        gt=0,
        description="How long a delivery may take in all; then it ends `expired`.",
    )
    withdraw_superseded: bool = Field(
        default=False,
        description="The default of every step's `withdraw_superseded`: once a step succeeds, "
        "take back the other steps' messages that were sent but never confirmed.",
    )
    brakes: BrakeSettings = Field(
        default=BrakeSettings(),
        description="Limits on this policy's sms and call steps against SMS pumping and "
        "runaway cost.",
    )
    priority: Priority = Field(
        default=Priority.NORMAL,
        description="The priority of this policy's deliveries: workers take due deliveries "
        "of a higher priority first.",
    )
    respect_quiet_hours: bool = Field(
        default=False,
        description="A send scheduled (`at=`) into the quiet hours of the step it would "
        "start on starts when they end.",
    )
    order: Literal["fixed", "learned"] = Field(
        default="fixed",
        description="`fixed`: the steps run as written. `learned`: the same steps, with the "
        "channel that last reached the recipient first (a read counts more than a delivery, "
        "recent more than old) and one that failed them last, from the store's history of "
        "each recipient; the written order for recipients never seen and for ties.",
    )


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
    ] = Field(
        description="Signs link tokens; at least 32 characters. One, or a list: the first "
        "signs new links, all are accepted (rotation)."
    )
    ttl: Duration = Field(
        default=7 * 86400.0,
        gt=0,
        le=366 * 86400.0,
        description="How long a link made now links (at most 366 days).",
    )

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


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


_Values = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]],
    BeforeValidator(_as_list),
    Field(min_length=1),
]


class RouteWhen(_Strict):
    """`when:` of a route: each key takes one value or a list (any of them matches), and
    every key given must match; none given matches every send."""

    country: list[Country] | None = Field(
        default=None,
        min_length=1,
        description="ISO 3166 codes (RU, KZ): the country of the recipient's first phone "
        "number (whatsapp, sms, call)",
    )
    region: _Values | None = Field(
        default=None,
        description="regions (Moscow, St Petersburg), case aside: the recipient's region, or "
        "where it has none, the area the phonenumbers geocoder gives its number's range",
    )
    locale: _Values | None = Field(
        default=None,
        description="locales (ru, ru-RU), case and -/_ aside; a language alone matches every "
        "locale of it",
    )
    tags: _Values | None = Field(
        default=None, description="tags: the recipient has at least one of them"
    )
    category: _Values | None = Field(
        default=None, description="message categories (transactional, marketing)"
    )
    channels: list[_Channel] | None = Field(
        default=None,
        min_length=1,
        description="channels: the recipient has an address on at least one, not opted out",
    )

    @field_validator("country", "channels", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return _as_list(value)


class RouteEntry(_Strict):
    """One entry of `routes:`: the policy a send gets when its `when` holds."""

    when: RouteWhen = Field(
        default_factory=RouteWhen, description="the conditions; all must hold (none: always)"
    )
    policy: str = Field(min_length=1, description="the policy (a name under policies:)")


class WorkerSettings(_Strict):
    """How a worker leases due deliveries: lease length (seconds), parallel sends, batch size."""

    lease: Duration = Field(
        default=30.0,
        gt=0,
        description="How long a worker holds a delivery it took; another worker takes it "
        "over when the lease runs out unrenewed (a dead worker).",
    )
    concurrency: int = Field(
        default=100, ge=1, description="Deliveries one worker advances at once."
    )
    batch: int = Field(
        default=100, ge=1, description="Most due deliveries a worker leases in one store call."
    )


EventKind = Literal["finished", "attempt", "receipt", "skipped"]


def _check_whsec(secret: SecretStr) -> SecretStr:
    decode_whsec(secret.get_secret_value())
    return secret


def _check_url(url: str) -> str:
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValueError("must be an http:// or https:// URL")
    return url


class EventsSettings(_Strict):
    """`events:` at the top of a policy file: outcome webhooks to the business's backend,
    posted from the store's outbox, Standard-Webhooks-signed, at least once, in order per
    delivery."""

    url: Annotated[str, AfterValidator(_check_url)] = Field(
        description="Where each event is POSTed (http:// or https://)."
    )
    secret: Annotated[SecretStr, AfterValidator(_check_whsec)] = Field(
        description="The Standard Webhooks secret that signs each event: `whsec_` and the "
        "key in base64 (24 to 64 random bytes); the receiver verifies with the same one."
    )
    kinds: tuple[EventKind, ...] = Field(
        default=("finished", "attempt", "receipt", "skipped"),
        min_length=1,
        description="Which events are posted: `finished` (the cascade ended), `attempt` "
        "(a provider call's outcome), `receipt` (a provider's report), `skipped` (a step "
        "passed over, and why).",
    )
    timeout: Duration = Field(
        default=10.0, gt=0, description="How long one POST may take before it is retried."
    )


class _Top(_Strict):
    store: str = Field(
        default=DEFAULT_STORE,
        min_length=1,
        description="Where deliveries, attempts, receipts and timers live: a store URL "
        "(see Store URLs below).",
    )
    default_policy: str | None = Field(
        default=None,
        description="The policy `send()` uses when it names none; required when there are "
        "several policies.",
    )
    worker: WorkerSettings = Field(
        default=WorkerSettings(), description="How workers lease and advance due deliveries."
    )
    sender_country: Country | None = Field(
        default=None,
        description="The sender's own country: every policy's default "
        "`brakes.allowed_countries`, so sms and call steps send only to its numbers.",
    )
    default_region: Country | None = Field(
        default=None,
        description="Where a phone number written without its country code is read "
        "(`8 916 123 45 67` with `RU`); without it such a number is refused at `send()`.",
    )
    links: LinkSettings | None = Field(
        default=None,
        description="How deep links that link a customer's messenger account are signed; "
        "needed by `cascade-notify link` and `Notifier.link`.",
    )
    # checked apart, route by route, so one broken route hides nothing of the others
    routes: list[RouteEntry] = Field(
        default_factory=list,
        description="Which policy a send gets: the first route whose `when` holds, else "
        "`default_policy`; `send(policy=)` overrides (see Routing).",
    )
    events: EventsSettings | None = Field(
        default=None,
        description="Outcome webhooks: the workers post what happens to each delivery to "
        "this URL, durably (see Events).",
    )
    support: SupportSettings = Field(
        default=SupportSettings(),
        description="What the support page (`notifier.support_app`) shows of messages: "
        "`show_text`, `hide_text_for`.",
    )


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
    #: `fixed` or `learned` (the steps reordered per recipient by the store's history).
    order: str = "fixed"


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
    #: `routes:`, compiled, in order.
    routes: tuple[Rule, ...] = ()
    #: `events:`, the outcome webhooks (None: none are posted).
    events: EventsSettings | None = None
