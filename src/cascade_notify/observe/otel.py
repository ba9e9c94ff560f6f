"""OpenTelemetry spans and metrics from the events (the optional extra `otel`).

    from cascade_notify.observe.otel import Telemetry

    telemetry = Telemetry()            # the global tracer and meter providers, or yours
    notifier.subscribe(telemetry)

Spans, each made when what it covers has ended, with its real start time:

- `cascade_notify.attempt`: one provider call, from the intent to its result;
  attributes `cascade_notify.channel`, `cascade_notify.provider`,
  `cascade_notify.outcome` (and the delivery, step and attempt ids); status ERROR
  when the call failed;
- `cascade_notify.receipt`: a receipt taken in (its provider, channel and status);
- `cascade_notify.send`: the delivery, from `send()` to its end (status, channel).

Every span of one delivery is in one trace, whichever process made it (the sender, a
worker on another host, the receipt endpoint): the trace id and the parent span id
are derived from the delivery id, so no context travels through the store. The
parent is that derived id, not a span of its own; viewers group the trace under it.
Sampling is by delivery (`sample=`), the same decision in every process; the parent
is marked sampled, so the provider's own parent-based sampler records what we keep.

Metrics are those of `observe.metrics` on OpenTelemetry instruments (the meter
`cascade_notify`): the same names, units and labels as the Prometheus endpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from cascade_notify.events import Event
from cascade_notify.observe.metrics import METRICS, Metric, Metrics, TelemetryError

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

SCOPE: Final = "cascade_notify"
#: Attempt outcomes that mean the call did not get the message through.
FAILED_OUTCOMES: Final = frozenset({"transient", "permanent", "unreachable", "unknown"})


def _otel() -> tuple[Any, Any]:
    try:
        from opentelemetry import metrics, trace
    except ImportError as exc:
        raise TelemetryError(
            "OpenTelemetry spans and metrics need opentelemetry-api: "
            f"pip install 'cascade-notify[otel]' ({exc})"
        ) from None
    return trace, metrics


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cascade-notify")
    except PackageNotFoundError:  # run from a source tree
        return "0"


class OtelSink:
    """`observe.metrics` instruments on an OpenTelemetry meter."""

    def __init__(self, meter: Any) -> None:
        self._instruments: dict[str, Any] = {}
        for metric in METRICS:
            if metric.kind == "counter":
                made = meter.create_counter(metric.name, metric.unit, metric.description)
            elif metric.kind == "histogram":
                made = meter.create_histogram(
                    metric.name,
                    metric.unit,
                    metric.description,
                    explicit_bucket_boundaries_advisory=list(metric.buckets),
                )
            else:
                made = meter.create_gauge(metric.name, metric.unit, metric.description)
            self._instruments[metric.name] = made

    def add(self, metric: Metric, labels: Mapping[str, str], value: float = 1.0) -> None:
        self._instruments[metric.name].add(value, dict(labels))

    def record(self, metric: Metric, labels: Mapping[str, str], value: float) -> None:
        self._instruments[metric.name].record(value, dict(labels))

    def set(self, metric: Metric, labels: Mapping[str, str], value: float) -> None:
        self._instruments[metric.name].set(value, dict(labels))


def trace_ids(delivery_id: str) -> tuple[int, int]:
    """The trace id and parent span id of every span of `delivery_id` (never zero)."""
    digest = hashlib.sha256(delivery_id.encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return trace_id, span_id


def _ns(ts: float) -> int:
    return int(ts * 1e9)


class Telemetry:
    """An event listener that makes OpenTelemetry spans and metrics.

    `tracer_provider` and `meter_provider` default to the global ones (what the
    OpenTelemetry SDK or an auto-instrumentation set up); `TelemetryError` naming the
    `otel` extra if opentelemetry-api is not installed. `sample` is the share of
    deliveries traced (all their spans or none, decided by the delivery id in every
    process alike); metrics count every delivery."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        sample: float = 1.0,
    ) -> None:
        if not 0.0 <= sample <= 1.0:
            raise TelemetryError(f"sample: {sample!r} is not a share between 0 and 1")
        trace, metrics = _otel()
        self._threshold = int(sample * 2**64)
        self._trace = trace
        version = _version()
        self.tracer = trace.get_tracer(SCOPE, version, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, version, meter_provider=meter_provider)
        self.metrics = Metrics(OtelSink(meter))

    def __call__(self, event: Event) -> None:
        kind = event.kind
        ended_call = (
            kind == "outcome"
            and event.attempt_id is not None
            and self.metrics.in_flight(event.attempt_id)
        )
        self.metrics(event)
        if ended_call:
            self._span("cascade_notify.attempt", event, event.since, outcome=event.status)
        elif kind == "receipt":
            self._span("cascade_notify.receipt", event, event.ts, status=event.status)
        elif kind == "finished":
            self._span("cascade_notify.send", event, event.since, status=event.status)

    def _span(self, name: str, event: Event, start: float | None, **more: str | None) -> None:
        trace_id, parent_id = trace_ids(event.delivery_id)
        if (trace_id & 0xFFFFFFFFFFFFFFFF) >= self._threshold:
            return  # not sampled: no span at all, in any process
        trace = self._trace
        parent = trace.set_span_in_context(
            trace.NonRecordingSpan(
                trace.SpanContext(
                    trace_id, parent_id, is_remote=True,
                    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
                )
            )
        )  # fmt: skip
        attributes: dict[str, str | int] = {"cascade_notify.delivery_id": event.delivery_id}
        for key, value in (
            ("channel", event.channel),
            ("provider", event.provider),
            ("attempt_id", event.attempt_id),
            *more.items(),
        ):
            if value is not None:
                attributes[f"cascade_notify.{key}"] = value
        if event.step is not None:
            attributes["cascade_notify.step"] = event.step
        begin = event.ts if start is None else min(start, event.ts)
        span = self.tracer.start_span(
            name, context=parent, start_time=_ns(begin), attributes=attributes
        )
        failed = (name == "cascade_notify.attempt" and event.status in FAILED_OUTCOMES) or (
            name == "cascade_notify.send" and event.status in ("exhausted", "expired")
        )
        if failed:
            span.set_status(trace.Status(trace.StatusCode.ERROR, event.status))
        span.end(end_time=_ns(event.ts))


__all__ = ["FAILED_OUTCOMES", "SCOPE", "OtelSink", "Telemetry", "trace_ids"]
