"""What a simulation found, per policy: figures, a side-by-side table, JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cascade_notify.models import AttemptStatus, Delivery, DeliveryStatus

#: Attempt statuses that count as a failed provider call.
FAILED_CALLS = frozenset(
    {
        AttemptStatus.TRANSIENT,
        AttemptStatus.FAILED,
        AttemptStatus.UNREACHABLE,
        AttemptStatus.TIMED_OUT,
        AttemptStatus.UNKNOWN,
    }
)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile of sorted `values`: the smallest value with at least
    `p` % of them at or below it; None when there are none."""
    if not values:
        return None
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


@dataclass(frozen=True, slots=True)
class ChannelFigures:
    """One channel's provider calls: `calls` made, `sends` the provider accepted (the
    messages that went out), `failed` calls (errors and receipts that never came in
    time), and `cost`: the sum of the accepted sends' prices."""

    channel: str
    calls: int
    sends: int
    failed: int
    cost: float


@dataclass(frozen=True, slots=True)
class BreakerSaving:
    """The same scenario and seed with every breaker off, minus this run: provider calls
    not made, failed calls not made, money not spent, deliveries not expired, and seconds
    off the p95 time to delivery. Positive means the breakers helped."""

    calls: int
    failed_calls: int
    cost: float
    expired: int
    p95: float | None


@dataclass(frozen=True, slots=True)
class PolicyReport:
    """One policy through the scenario. Times are seconds from a delivery's `send` to
    its final `delivered` status; percentiles are nearest-rank over delivered ones."""

    label: str
    policy: str
    deliveries: int
    delivered: int
    exhausted: int
    expired: int
    unfinished: int
    delivery_rate: float
    p50: float | None
    p95: float | None
    p99: float | None
    channels: tuple[ChannelFigures, ...]
    cost: float
    calls_created: int
    breaker_skips: int  # steps passed over because every provider's breaker was open
    breaker_saved: BreakerSaving | None
    #: (seconds after the scenario's start it was sent, seconds to delivery or None)
    samples: tuple[tuple[float, float | None], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("samples")
        return data


@dataclass(frozen=True, slots=True)
class Report:
    """A simulation's report: the scenario, the seed, and one `PolicyReport` per policy."""

    scenario: str
    seed: int
    currency: str
    policies: tuple[PolicyReport, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "currency": self.currency,
            "policies": [p.to_dict() for p in self.policies],
        }

    def rows(self) -> list[tuple[str, list[str]]]:
        """The report as (label, one cell per policy) rows, for a table."""

        def money(amount: float) -> str:
            return f"{amount:,.2f} {self.currency}".strip()

        channels = sorted({c.channel for p in self.policies for c in p.channels})
        rows: list[tuple[str, list[str]]] = [
            ("deliveries", [f"{p.deliveries:,}" for p in self.policies]),
            (
                "delivered",
                [f"{p.delivered:,} ({p.delivery_rate:.2%})" for p in self.policies],
            ),
            ("exhausted", [f"{p.exhausted:,}" for p in self.policies]),
            ("expired", [f"{p.expired:,}" for p in self.policies]),
        ]
        if any(p.unfinished for p in self.policies):
            rows.append(("unfinished at the end", [f"{p.unfinished:,}" for p in self.policies]))
        for name in ("p50", "p95", "p99"):
            rows.append(
                (f"time to delivery {name}", [_seconds(getattr(p, name)) for p in self.policies])
            )
        for channel in channels:
            found = [
                next((c for c in p.channels if c.channel == channel), None) for p in self.policies
            ]
            rows.append(
                (
                    f"{channel} sends (cost)",
                    ["–" if c is None else f"{c.sends:,} ({money(c.cost)})" for c in found],
                )
            )
            rows.append(
                (f"{channel} failed calls", ["–" if c is None else f"{c.failed:,}" for c in found])
            )
        rows.append(("total cost", [money(p.cost) for p in self.policies]))
        rows.append(("calls created", [f"{p.calls_created:,}" for p in self.policies]))
        rows.append(
            ("steps skipped, breaker open", [f"{p.breaker_skips:,}" for p in self.policies])
        )
        saved = [p.breaker_saved for p in self.policies]
        if any(saved):
            rows += [
                ("breaker saved: calls", ["–" if s is None else f"{s.calls:,}" for s in saved]),
                (
                    "breaker saved: failed calls",
                    ["–" if s is None else f"{s.failed_calls:,}" for s in saved],
                ),
                ("breaker saved: cost", ["–" if s is None else money(s.cost) for s in saved]),
                ("breaker saved: expired", ["–" if s is None else f"{s.expired:,}" for s in saved]),
                ("breaker saved: p95", ["–" if s is None else _signed(s.p95) for s in saved]),
            ]
        return rows


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.1f} s"
    if value < 3600:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.2f} h"


def _signed(value: float | None) -> str:
    if value is None:
        return "–"
    return ("-" if value < 0 else "") + _seconds(abs(value))


def tally(
    label: str,
    policy: str,
    deliveries: Sequence[Delivery],
    start_ts: float,
    saved: BreakerSaving | None = None,
) -> PolicyReport:
    """The figures of one run from its final deliveries."""
    counts = dict.fromkeys(DeliveryStatus, 0)
    times: list[float] = []
    samples: list[tuple[float, float | None]] = []
    per_channel: dict[str, list[float]] = {}
    skips = 0
    for delivery in deliveries:
        counts[delivery.status] += 1
        took = None
        if delivery.status is DeliveryStatus.DELIVERED and delivery.finished_ts is not None:
            took = delivery.finished_ts - delivery.created_ts
            times.append(took)
        samples.append((delivery.created_ts - start_ts, took))
        for attempt in delivery.attempts:
            figures = per_channel.setdefault(attempt.channel, [0, 0, 0, 0.0])
            figures[0] += 1
            if attempt.provider_message_id is not None:
                figures[1] += 1
                figures[3] += attempt.cost or 0.0
            if attempt.status in FAILED_CALLS:
                figures[2] += 1
        skips += sum(1 for s in delivery.skipped if s.reason == "circuit_open")
    times.sort()
    channels = tuple(
        ChannelFigures(c, int(f[0]), int(f[1]), int(f[2]), round(f[3], 6))
        for c, f in sorted(per_channel.items())
    )
    total = len(deliveries)
    delivered = counts[DeliveryStatus.DELIVERED]
    return PolicyReport(
        label=label,
        policy=policy,
        deliveries=total,
        delivered=delivered,
        exhausted=counts[DeliveryStatus.EXHAUSTED],
        expired=counts[DeliveryStatus.EXPIRED],
        unfinished=counts[DeliveryStatus.PENDING],
        delivery_rate=delivered / total if total else 0.0,
        p50=percentile(times, 50),
        p95=percentile(times, 95),
        p99=percentile(times, 99),
        channels=channels,
        cost=round(sum(c.cost for c in channels), 6),
        calls_created=next((c.sends for c in channels if c.channel == "call"), 0),
        breaker_skips=skips,
        breaker_saved=saved,
        samples=tuple(samples),
    )


def saving(base: PolicyReport, run: PolicyReport) -> BreakerSaving:
    """What `run` saved against `base`, the same run with breakers off."""
    p95 = None if base.p95 is None or run.p95 is None else base.p95 - run.p95
    return BreakerSaving(
        calls=sum(c.calls for c in base.channels) - sum(c.calls for c in run.channels),
        failed_calls=sum(c.failed for c in base.channels) - sum(c.failed for c in run.channels),
        cost=round(base.cost - run.cost, 6),
        expired=base.expired - run.expired,
        p95=p95,
    )
