"""Surviving outages: circuit breakers, rate limits, brakes and retry backoff.

- `guard`: `Protection`, the `Guard` the engine consults, and `Breakers` (by hand);
- `circuit`: one circuit breaker; `limits`: token buckets and brakes;
- `settings`: their pydantic settings, as the policy file writes them;
- `shared`: the `SharedState` protocol a store offers so workers share that state,
  and the in-process `SharedTable`.

Nothing here imports a store: a store offers `SharedState`, and `Protection` uses it.
"""

from cascade_notify.resilience.circuit import BreakerInfo
from cascade_notify.resilience.guard import (
    BRAKE_REASONS,
    Breakers,
    Guard,
    Protection,
    backoff,
)
from cascade_notify.resilience.settings import (
    BrakeSettings,
    BreakerSettings,
    RateLimitSettings,
    RetrySettings,
)
from cascade_notify.resilience.shared import SharedState, SharedTable

__all__ = [
    "BRAKE_REASONS",
    "BrakeSettings",
    "BreakerInfo",
    "BreakerSettings",
    "Breakers",
    "Guard",
    "Protection",
    "RateLimitSettings",
    "RetrySettings",
    "SharedState",
    "SharedTable",
    "backoff",
]
