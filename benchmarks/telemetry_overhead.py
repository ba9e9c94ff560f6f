"""What the OpenTelemetry and Prometheus listeners cost the engine: deliveries per
second send → fake → final, with and without them.

The policy and the loop are `bench_stores`'s (one step, a fake WhatsApp that accepts
and reports `delivered` at once, sends 100 at a time). Both runs have the same
counting listener (it is how a run knows it is done, and it makes the engine build
its events either way); the `otel` run adds `Telemetry` on the SDK's tracer and meter
providers (spans to a batch processor whose exporter drops them, metrics to an
in-memory reader) and a `Prometheus` exporter. Runs alternate, and the median of
each is compared.

    python -m benchmarks.telemetry_overhead [N] [REPEATS] [memory|sqlite]...

Modes: `none` (the counting listener only), `prometheus`, `otel` (spans and OTel
metrics), `otel_10%` (one delivery in ten traced, every one counted), `both`.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.bench_stores import POLICY, RECIPIENT
from cascade_notify import Message, Notifier, load_config
from cascade_notify.events import Event

MODES = ("none", "prometheus", "otel", "otel_10%", "both")


def _telemetry(mode: str) -> list[object]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from cascade_notify.observe.otel import Telemetry
    from cascade_notify.observe.prometheus import Prometheus

    class Drop(SpanExporter):
        def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
            return SpanExportResult.SUCCESS

    if mode == "prometheus":
        return [Prometheus()]
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    share = 0.1 if mode == "otel_10%" else 1.0
    telemetry = Telemetry(
        tracer_provider=tracer_provider, meter_provider=meter_provider, sample=share
    )
    return [telemetry, Prometheus()] if mode == "both" else [telemetry]


async def once(store: str, n: int, *, mode: str) -> float:
    """Deliveries per second for `n` sends on `store`."""
    notifier = Notifier(load_config(POLICY.format(store=store, behavior="deliver")))
    seen = 0
    done = asyncio.Event()

    def count(event: Event) -> None:
        nonlocal seen
        if event.kind == "finished":
            seen += 1
            if seen == n:
                done.set()

    notifier.subscribe(count)
    if mode != "none":
        for listener in _telemetry(mode):
            notifier.subscribe(listener)  # type: ignore[arg-type]
    async with notifier:
        started = time.perf_counter()
        for first in range(0, n, 100):
            chunk = range(first, min(n, first + 100))
            await asyncio.gather(*(notifier.send(RECIPIENT, Message(text=f"#{i}")) for i in chunk))
        await done.wait()
        return n / (time.perf_counter() - started)


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 1000
    repeats = int(argv[1]) if len(argv) > 1 else 3
    stores = argv[2:] or ["memory", "sqlite"]
    for kind in stores:
        rates: dict[str, list[float]] = {mode: [] for mode in MODES}
        for i in range(repeats):
            for mode in MODES:
                with tempfile.TemporaryDirectory() as tmp:
                    url = "memory://" if kind == "memory" else f"sqlite:///{Path(tmp) / f'{i}.db'}"
                    rates[mode].append(asyncio.run(once(url, n, mode=mode)))
        base = statistics.median(rates["none"])
        runs = [round(r) for r in rates["none"]]
        print(f"{kind}: {base:,.0f} deliveries/s without telemetry {runs}")
        for mode in MODES[1:]:
            rate = statistics.median(rates[mode])
            added = (1 / rate - 1 / base) * 1e6
            print(
                f"  {mode:<10} {rate:,.0f}/s  ratio {rate / base:.2f}  "
                f"+{added:,.0f} µs per delivery  {[round(r) for r in rates[mode]]}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
