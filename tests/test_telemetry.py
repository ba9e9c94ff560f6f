"""Metrics and traces: OpenTelemetry spans and metrics checked with the SDK's in-memory
exporter and reader, and the Prometheus text at `/-/metrics` read by prometheus-client's
own parser, for `serve`'s route and the worker's port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.parser import text_string_to_metric_families

from cascade_notify import DeliveryStatus, Message, Notifier, Recipient
from cascade_notify.cli import _metrics
from cascade_notify.observe.metrics import TelemetryError
from cascade_notify.observe.otel import Telemetry, trace_ids
from cascade_notify.observe.prometheus import Prometheus, metrics_route, serve_metrics
from cascade_notify.testing import FakeClock, run_until_final

PHONE = "+79161234567"
EMAIL = "anna.petrova@example.com"
POLICY = """
providers:
  gw:   {type: fake, channel: sms, behavior: unreachable}
  wa:   {type: fake, channel: whatsapp, behavior: deliver, receipt_delay: 30s}
policies:
  service:
    steps:
      - {channel: sms, providers: [gw]}
      - {channel: whatsapp, providers: [wa], wait_for: delivered, timeout: 10m}
"""
ANNA = Recipient(id="anna-42", sms=PHONE, whatsapp=PHONE, email=EMAIL)


@pytest.fixture
def otel() -> Iterator[tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield (
        Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider),
        spans,
        reader,
    )
    meter_provider.shutdown()
    tracer_provider.shutdown()


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


async def test_spans_and_metrics_of_a_cascade(
    fake_clock: FakeClock, otel: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]
) -> None:
    """SMS unreachable, e-mail delivered 30 s later: an attempt span per call with its
    channel, provider and outcome, a receipt span, a send span over the whole delivery,
    all in the delivery's trace; the counters and the time to delivery agree."""
    telemetry, spans, reader = otel
    notifier = Notifier.from_yaml(POLICY, clock=fake_clock, store="memory://")
    notifier.subscribe(telemetry)
    async with notifier:
        sent = await notifier.send(ANNA, Message(text="Your parcel is here."))
        [done] = await run_until_final(notifier, fake_clock, [sent.id])
    assert (done.status, done.channel) == (DeliveryStatus.DELIVERED, "whatsapp")
    finished = spans.get_finished_spans()
    attempts = [s for s in finished if s.name == "cascade_notify.attempt"]
    assert [
        (
            s.attributes["cascade_notify.channel"],
            s.attributes["cascade_notify.provider"],
            s.attributes["cascade_notify.outcome"],
        )
        for s in attempts
        if s.attributes is not None
    ] == [("sms", "gw", "unreachable"), ("whatsapp", "wa", "accepted")]
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[1].status.status_code is StatusCode.UNSET
    [receipt] = [s for s in finished if s.name == "cascade_notify.receipt"]
    assert receipt.attributes is not None
    assert receipt.attributes["cascade_notify.status"] == "delivered"
    [send] = [s for s in finished if s.name == "cascade_notify.send"]
    assert send.attributes is not None and send.attributes["cascade_notify.status"] == "delivered"
    assert send.start_time is not None and send.end_time is not None
    assert (send.end_time - send.start_time) / 1e9 == pytest.approx(30.0, abs=0.01)
    trace_id, parent = trace_ids(sent.id)
    for span in finished:
        assert span.context is not None and span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == parent
        values = [str(v) for v in (span.attributes or {}).values()]
        assert not any(PHONE in v or EMAIL in v or "anna-42" in v for v in values)

    points = _points(reader)
    attempts_by = {
        (p.attributes["channel"], p.attributes["provider"]): p.value
        for p in points["cascade_notify.attempts"]
    }
    assert attempts_by == {("sms", "gw"): 1, ("whatsapp", "wa"): 1}
    outcomes = {
        (p.attributes["provider"], p.attributes["outcome"]): p.value
        for p in points["cascade_notify.attempt.outcomes"]
    }
    assert outcomes[("gw", "unreachable")] == 1 and outcomes[("wa", "accepted")] == 1
    [ttd] = points["cascade_notify.time_to_delivery"]
    assert ttd.attributes == {"channel": "whatsapp"} and ttd.count == 1
    assert ttd.sum == pytest.approx(30.0, abs=0.01)
    [ended] = points["cascade_notify.deliveries.finished"]
    assert ended.attributes == {"status": "delivered", "channel": "whatsapp"} and ended.value == 1


async def test_prometheus_text_from_the_serve_route(fake_clock: FakeClock) -> None:
    """`GET /-/metrics` in front of the receipts app answers Prometheus text that its
    parser reads: attempts and outcomes by channel and provider, time to delivery, the
    breakers, unfinished deliveries; no label holds recipient data; other paths pass."""
    notifier = Notifier.from_yaml(POLICY, clock=fake_clock, store="memory://")
    prometheus = _metrics.exporter(notifier)
    app = metrics_route(notifier.asgi_app(), prometheus, _metrics.refresher(notifier))
    async with notifier:
        sent = await notifier.send(ANNA, Message(text="Your parcel is here."))
        await run_until_final(notifier, fake_clock, [sent.id])
        bob = Recipient(id="bob", sms="+79160000001", whatsapp="+79160000001")
        await notifier.send(bob, Message(text="Hi"))
        await fake_clock.settle()  # bob's SMS refused, WhatsApp accepted: waiting
        await notifier.breakers.open("gw", 600, reason="by hand")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answer = await client.get("/-/metrics")
            health = await client.get("/receipts/-/health")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert health.status_code == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }
    assert samples[("cascade_notify_attempts_total", (("channel", "sms"), ("provider", "gw")))] == 2
    outcome = (("channel", "whatsapp"), ("outcome", "accepted"), ("provider", "wa"))
    assert samples[("cascade_notify_attempt_outcomes_total", outcome)] == 2  # anna, bob
    assert (
        samples[("cascade_notify_time_to_delivery_seconds_count", (("channel", "whatsapp"),))] == 1
    )
    assert samples[
        ("cascade_notify_time_to_delivery_seconds_sum", (("channel", "whatsapp"),))
    ] == pytest.approx(30.0, abs=0.01)
    assert samples[("cascade_notify_breaker_state", (("provider", "gw"),))] == 2
    assert samples[("cascade_notify_breaker_state", (("provider", "wa"),))] == 0
    assert samples[("cascade_notify_deliveries_unfinished", (("status", "pending"),))] == 1
    labels = [value for _, pairs in samples for _, value in pairs]
    assert not any(PHONE[1:] in v or "0000001" in v or "@" in v or "anna" in v for v in labels)


async def test_worker_port_serves_metrics_and_404_elsewhere(fake_clock: FakeClock) -> None:
    """The worker's metrics server answers `/-/metrics` with text the parser reads,
    404 on any other path, on a port of its own."""
    notifier = Notifier.from_yaml(POLICY, clock=fake_clock, store="memory://")
    prometheus = _metrics.exporter(notifier)
    async with notifier, serve_metrics(prometheus, "127.0.0.1", 0) as port:
        sent = await notifier.send(ANNA, Message(text="Your parcel is here."))
        await run_until_final(notifier, fake_clock, [sent.id])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            answer = await client.get("/-/metrics")
            elsewhere = await client.get("/metrics")
    assert (answer.status_code, elsewhere.status_code) == (200, 404)
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    assert {"cascade_notify_attempts", "cascade_notify_time_to_delivery_seconds"} <= names


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


WORKER = "from cascade_notify.cli import main; main()"


@pytest.mark.slow
def test_cascade_notify_worker_metrics_port(tmp_path: Path) -> None:
    """`cascade-notify worker --metrics-port` serves `/-/metrics` until SIGTERM, then
    exits 0."""
    policy = tmp_path / "cascade.yaml"
    policy.write_text(POLICY + f"store: sqlite:///{tmp_path / 'cascade.db'}\n")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", WORKER, "worker", "-p", str(policy)]
    worker = subprocess.Popen(
        [*command, "--metrics-port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        pending = None
        for _ in range(600):  # real time: the worker is another process starting up
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/-/metrics").text
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            samples = [
                s
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "cascade_notify_deliveries_unfinished"
                and s.labels == {"status": "pending"}
            ]
            if samples:  # the store is open: the scrape read it
                [pending] = samples
                break
            time.sleep(0.05)
        assert pending is not None, "the worker's metrics never showed the store's count"
        assert pending.value == 0
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, out.decode()
    assert "/-/metrics" in out.decode()


def test_missing_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without prometheus-client or opentelemetry-api, the error names the `otel` extra."""
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(TelemetryError, match=r"pip install 'cascade-notify\[otel\]'"):
        Prometheus()
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(TelemetryError, match=r"opentelemetry-api: pip install 'cascade-notify"):
        Telemetry()


async def test_sampling_keeps_or_drops_whole_deliveries(fake_clock: FakeClock) -> None:
    """`sample=0` makes no span while the metrics still count; `sample=1` traces all."""
    for share, expect_spans in ((0.0, False), (1.0, True)):
        spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        telemetry = Telemetry(
            tracer_provider=tracer_provider, meter_provider=meter_provider, sample=share
        )
        notifier = Notifier.from_yaml(POLICY, clock=fake_clock, store="memory://")
        notifier.subscribe(telemetry)
        async with notifier:
            sent = await notifier.send(ANNA, Message(text="Your parcel is here."))
            await run_until_final(notifier, fake_clock, [sent.id])
        assert bool(spans.get_finished_spans()) is expect_spans
        assert sum(p.value for p in _points(reader)["cascade_notify.attempts"]) == 2
        meter_provider.shutdown()
        tracer_provider.shutdown()
    with pytest.raises(TelemetryError, match="between 0 and 1"):
        Telemetry(sample=1.5)


def test_the_overhead_benchmark_runs() -> None:
    """`python -m benchmarks.telemetry_overhead` at a tiny size prints a ratio for each
    mode (run from the checkout's root, as the other benchmark smoke runs are: the
    `benchmarks` folder is not an installed package)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.telemetry_overhead", "100", "1", "memory"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("memory: ") and all(f"  {m} " in out for m in ("prometheus", "otel"))
    assert out.count("ratio ") == 4
