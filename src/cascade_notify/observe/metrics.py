"""Metrics from the events: what each event adds, defined once for every backend.

`Metrics` is an event listener (`notifier.subscribe(metrics)`) that turns events into
counts, observations and gauge values on a `Sink`: OpenTelemetry's meter
(`observe.otel`) or a Prometheus registry (`observe.prometheus`). The engine knows
nothing of either; this module imports neither.

Labels are the policy's own names and the library's vocabulary only (channel,
provider, outcome, status, reason): never a recipient, an address or a delivery id,
so a label's values stay few and carry nothing personal.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from cascade_notify.errors import CascadeError
from cascade_notify.events import Event

Kind = Literal["counter", "histogram", "gauge"]


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric: its name (dotted, as OpenTelemetry names it), what it measures."""

    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...]
    unit: str = ""
    buckets: tuple[float, ...] = ()


ATTEMPTS: Final = Metric(
    "cascade_notify.attempts", "counter", "Provider calls started", ("channel", "provider")
)
OUTCOMES: Final = Metric(
    "cascade_notify.attempt.outcomes",
    "counter",
    "Attempt outcomes recorded (a call's result, and later a timeout or a receipt's end)",
    ("channel", "provider", "outcome"),
)
ATTEMPT_DURATION: Final = Metric(
    "cascade_notify.attempt.duration",
    "histogram",
    "How long a provider call took",
    ("channel", "provider", "outcome"),
    unit="s",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
RECEIPTS: Final = Metric(
    "cascade_notify.receipts",
    "counter",
    "Receipts taken in for a known delivery",
    ("channel", "provider", "status"),
)
SKIPS: Final = Metric(
    "cascade_notify.skips", "counter", "Steps skipped, by reason", ("channel", "reason")
)
FINISHED: Final = Metric(
    "cascade_notify.deliveries.finished",
    "counter",
    "Deliveries that ended, by how and on which channel",
    ("status", "channel"),
)
TIME_TO_DELIVERY: Final = Metric(
    "cascade_notify.time_to_delivery",
    "histogram",
    "From send() to the receipt that ended the delivery as delivered",
    ("channel",),
    unit="s",
    buckets=(1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0),
)
BREAKER_STATE: Final = Metric(
    "cascade_notify.breaker.state",
    "gauge",
    "A provider's circuit breaker: 0 closed, 1 half-open, 2 open",
    ("provider",),
)
UNFINISHED: Final = Metric(
    "cascade_notify.deliveries.unfinished",
    "gauge",
    "Deliveries not final in the store, by status (scheduled, pending)",
    ("status",),
)
#: Every metric, in the order the backends create them.
METRICS: Final = (
    ATTEMPTS,
    OUTCOMES,
    ATTEMPT_DURATION,
    RECEIPTS,
    SKIPS,
    FINISHED,
    TIME_TO_DELIVERY,
    BREAKER_STATE,
    UNFINISHED,
)
BREAKER_VALUES: Final = {"closed": 0.0, "half_open": 1.0, "half-open": 1.0, "open": 2.0}
#: How many calls in flight are remembered (their start), for the call's duration.
MAX_IN_FLIGHT: Final = 100_000


class TelemetryError(CascadeError, RuntimeError):
    """Metrics or traces asked for without the package they need (says which extra)."""


class Sink(Protocol):
    """Where `Metrics` writes: one backend's instruments, by `Metric`."""

    def add(self, metric: Metric, labels: Mapping[str, str], value: float = 1.0) -> None: ...

    def record(self, metric: Metric, labels: Mapping[str, str], value: float) -> None: ...

    def set(self, metric: Metric, labels: Mapping[str, str], value: float) -> None: ...


class Breakers(Protocol):
    async def list(self) -> Sequence[object]: ...


class Counted(Protocol):
    async def unfinished(self) -> dict[str, int]: ...


def _label(value: object) -> str:
    return "" if value is None else str(value)


class Metrics:
    """An event listener that keeps `METRICS` on `sinks` (one or several backends)."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks
        #: attempt id -> (channel, provider) of calls started in this process
        self._calls: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def _add(self, metric: Metric, labels: Mapping[str, str], value: float = 1.0) -> None:
        for sink in self.sinks:
            sink.add(metric, labels, value)

    def _record(self, metric: Metric, labels: Mapping[str, str], value: float) -> None:
        for sink in self.sinks:
            sink.record(metric, labels, value)

    def _set(self, metric: Metric, labels: Mapping[str, str], value: float) -> None:
        for sink in self.sinks:
            sink.set(metric, labels, value)

    def __call__(self, event: Event) -> None:
        kind = event.kind
        channel, provider = _label(event.channel), _label(event.provider)
        if kind == "sending":
            self._add(ATTEMPTS, {"channel": channel, "provider": provider})
            if event.attempt_id is not None:
                self._calls[event.attempt_id] = (channel, provider)
                if len(self._calls) > MAX_IN_FLIGHT:
                    self._calls.popitem(last=False)
        elif kind == "outcome":
            outcome = _label(event.status)
            labels = {"channel": channel, "provider": provider, "outcome": outcome}
            self._add(OUTCOMES, labels)
            call = self._calls.pop(event.attempt_id, None) if event.attempt_id else None
            if call is not None and event.since is not None:
                self._record(ATTEMPT_DURATION, labels, max(0.0, event.ts - event.since))
        elif kind == "receipt":
            status = _label(event.status)
            self._add(RECEIPTS, {"channel": channel, "provider": provider, "status": status})
        elif kind == "skipped":
            self._add(SKIPS, {"channel": channel, "reason": _label(event.status)})
        elif kind == "finished":
            self._add(FINISHED, {"status": _label(event.status), "channel": channel})
            if event.status == "delivered" and event.since is not None:
                self._record(
                    TIME_TO_DELIVERY, {"channel": channel}, max(0.0, event.ts - event.since)
                )
        elif kind == "breaker" and event.status in BREAKER_VALUES:
            self._set(BREAKER_STATE, {"provider": provider}, BREAKER_VALUES[event.status])

    def in_flight(self, attempt_id: str) -> bool:
        """Whether this process started the call `attempt_id` and has not heard its end."""
        return attempt_id in self._calls

    async def refresh(self, store: Counted | None = None, breakers: Breakers | None = None) -> None:
        """Read what no event says: the unfinished deliveries in `store` (another
        process's sends count too) and every breaker's state now."""
        if store is not None:
            for status, count in (await store.unfinished()).items():
                self._set(UNFINISHED, {"status": status}, float(count))
        if breakers is not None:
            for info in await breakers.list():
                state = getattr(info, "state", None)
                if state in BREAKER_VALUES:
                    provider = _label(getattr(info, "provider", ""))
                    self._set(BREAKER_STATE, {"provider": provider}, BREAKER_VALUES[state])


Refresh = Callable[[], Awaitable[None]]

__all__ = [
    "ATTEMPTS",
    "ATTEMPT_DURATION",
    "BREAKER_STATE",
    "FINISHED",
    "METRICS",
    "OUTCOMES",
    "RECEIPTS",
    "SKIPS",
    "TIME_TO_DELIVERY",
    "UNFINISHED",
    "Metric",
    "Metrics",
    "Refresh",
    "Sink",
    "TelemetryError",
]
