"""The resilience keys of a policy file, as pydantic models.

They sit beside `type:` in a provider entry (`breaker:`, `rate_limit:`,
`retry:`) and in a policy (`brakes:`); `policy.py` validates them apart from
the provider type's own `Settings`, which never sees them.
"""

from __future__ import annotations

from typing import Annotated, Any

import phonenumbers
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from cascade_notify._duration import Duration

#: Keys of a provider entry that belong to the library, never to the provider type.
PROVIDER_KEYS = ("type", "breaker", "rate_limit", "retry")


def _country(value: str) -> str:
    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value!r} is not an ISO 3166 country code (e.g. RU, KZ, GB)")
    return code


def _off(raw: Any) -> Any:
    return None if raw is False else raw


Country = Annotated[str, AfterValidator(_country)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySettings(_Strict):
    """Transient errors: how many calls in all, and the backoff between them."""

    attempts: int = Field(
        default=3,
        ge=1,
        description="Calls to one provider in all for a transient error (timeout, 5xx, 429), "
        "the first included; then the step's next provider.",
    )
    backoff: Duration = Field(
        default=1.0,
        description="The first wait before a retry; it grows exponentially, with jitter "
        "(a provider's Retry-After is honoured).",
    )
    max_backoff: Duration = Field(
        default=60.0, description="The longest wait between two tries; not below `backoff`."
    )


class BreakerSettings(_Strict):
    """A provider's circuit breaker.

    It opens after `failures` failed calls in a row, or when at least `rate`
    of the calls in the last `window` failed and there were at least
    `min_calls` of them; after `cool_down` it lets `probes` sends through, and
    closes on the first success.
    """

    failures: int = Field(
        default=5,
        ge=1,
        description="Failed calls in a row that open it (transient errors, unknown outcomes, "
        "receipts that never came).",
    )
    rate: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="The share of failed calls within `window` that opens it.",
    )
    window: Duration = Field(
        default=60.0, gt=0, description="The span the failure `rate` is measured over."
    )
    min_calls: int = Field(
        default=20,
        ge=1,
        description="Calls within `window` needed before the `rate` is judged.",
    )
    cool_down: Duration = Field(
        default=30.0,
        gt=0,
        description="How long it stays open (the provider is skipped) before it lets probes "
        "through.",
    )
    probes: int = Field(
        default=3,
        ge=1,
        description="Sends let through once half-open; the first success closes it, a "
        "failure opens it again.",
    )


class RateLimitSettings(_Strict):
    """Sends a second to the provider overall and to one address; `burst` sends may go at once."""

    per_second: float | None = Field(
        default=None,
        gt=0,
        description="Sends a second to this provider, overall; a send over it waits for "
        "the next free slot.",
    )
    per_recipient_per_second: float | None = Field(
        default=None, gt=0, description="Sends a second to one address through this provider."
    )
    burst: int = Field(default=1, ge=1, description="Sends that may go at once, above the rate.")

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimitSettings:
        if self.per_second is None and self.per_recipient_per_second is None:
            raise ValueError("set per_second, per_recipient_per_second, or both")
        return self


class BrakeSettings(_Strict):
    """Limits on a policy's sms and call steps against SMS pumping and runaway cost.

    Counts are per clock hour. `null` turns a limit off. `allowed_countries`
    left unset means the file's `sender_country`, or every country when that
    is unset too.
    """

    sms_per_recipient_per_hour: int | None = Field(
        default=5,
        ge=0,
        description="SMS to one number in a clock hour (counted across policies); over it, "
        "the step is skipped (`brake_recipient`).",
    )
    calls_per_recipient_per_hour: int | None = Field(
        default=2, ge=0, description="Call steps for one number in a clock hour."
    )
    sms_per_prefix_per_hour: int | None = Field(
        default=None,
        ge=0,
        description="SMS to numbers sharing their first `prefix_digits` digits, in a clock "
        "hour (`brake_prefix`).",
    )
    calls_per_prefix_per_hour: int | None = Field(
        default=None, ge=0, description="The same for call steps."
    )
    prefix_digits: int = Field(
        default=7,
        ge=1,
        le=15,
        description="Digits after `+` that make a prefix (`+7 916 555`: a Moscow mobile block).",
    )
    allowed_countries: list[Country] | None = Field(
        default=None,
        min_length=1,
        description="The only countries sms and call steps send to (`brake_country`); "
        "unset: `[sender_country]`, or every country when that is unset too.",
    )
    cost_per_hour: float | None = Field(
        default=None,
        ge=0,
        description="Money this policy's sms and call steps may spend in a clock hour, by the "
        "costs providers report (`brake_cost`).",
    )


class ProviderResilience(_Strict):
    """The library's own keys in a provider entry, read apart from the type's settings;
    `breaker: false` turns automatic tripping off (operators can still open it by hand)."""

    breaker: Annotated[BreakerSettings | None, BeforeValidator(_off)] = Field(
        default=BreakerSettings(),
        description="This provider's circuit breaker; `false` (or `null`) turns automatic "
        "tripping off (it can still be opened by hand).",
    )
    rate_limit: RateLimitSettings | None = Field(
        default=None, description="Sends a second to this provider; `null`: no limit."
    )
    retry: RetrySettings | None = Field(
        default=None,
        description="Retry settings for the steps that list this provider: a step takes "
        "the `retry:` of its first provider that has one, for the keys it does not set itself.",
    )


#: Shared defaults: the models are frozen, so one instance serves every entry.
DEFAULT_BREAKER = BreakerSettings()
DEFAULT_BRAKES = BrakeSettings()
