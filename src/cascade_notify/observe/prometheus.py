"""Prometheus text at `/-/metrics` (prometheus-client, in the optional extra `otel`).

`Prometheus()` is an event listener with a registry of its own holding the metrics of
`observe.metrics`, named the Prometheus way (`cascade_notify_attempts_total`,
`cascade_notify_time_to_delivery_seconds`…). `render()` refreshes what no event says
(unfinished deliveries in the store, every breaker's state) and returns the text.
`metrics_route()` puts it at `/-/metrics` in front of an ASGI app (`cascade-notify
serve`); `serve_metrics()` is a small HTTP server of its own (`cascade-notify worker
--metrics-port`). No label holds recipient data (see `observe.metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final

from cascade_notify import _logmask
from cascade_notify.events import Event
from cascade_notify.observe.metrics import METRICS, Metric, Metrics, TelemetryError

log = _logmask.logger("cascade_notify.metrics")

METRICS_PATH: Final = "/-/metrics"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
Refresh = Callable[[Metrics], Awaitable[None]]


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise TelemetryError(
            f"Prometheus metrics need prometheus-client: pip install 'cascade-notify[otel]' ({exc})"
        ) from None
    return prometheus_client


def prometheus_name(metric: Metric) -> str:
    """`cascade_notify.attempt.duration` (s) as `cascade_notify_attempt_duration_seconds`;
    a counter's `_total` is added by the client."""
    name = metric.name.replace(".", "_")
    return f"{name}_seconds" if metric.unit == "s" else name


class PrometheusSink:
    """`observe.metrics` instruments in a prometheus-client registry."""

    def __init__(self, registry: Any, client: Any) -> None:
        self._instruments: dict[str, Any] = {}
        for metric in METRICS:
            name, labels = prometheus_name(metric), list(metric.labels)
            if metric.kind == "counter":
                made = client.Counter(name, metric.description, labels, registry=registry)
            elif metric.kind == "histogram":
                made = client.Histogram(
                    name, metric.description, labels, registry=registry, buckets=metric.buckets
                )
            else:
                made = client.Gauge(name, metric.description, labels, registry=registry)
            self._instruments[metric.name] = made

    def _labelled(self, metric: Metric, labels: Mapping[str, str]) -> Any:
        return self._instruments[metric.name].labels(
            **{k: labels.get(k, "") for k in metric.labels}
        )

    def add(self, metric: Metric, labels: Mapping[str, str], value: float = 1.0) -> None:
        self._labelled(metric, labels).inc(value)

    def record(self, metric: Metric, labels: Mapping[str, str], value: float) -> None:
        self._labelled(metric, labels).observe(value)

    def set(self, metric: Metric, labels: Mapping[str, str], value: float) -> None:
        self._labelled(metric, labels).set(value)


class Prometheus:
    """An event listener keeping the library's metrics in a registry of its own;
    `TelemetryError` naming the `otel` extra if prometheus-client is not installed."""

    def __init__(self) -> None:
        self._client = _client()
        self.registry = self._client.CollectorRegistry(auto_describe=True)
        self.metrics = Metrics(PrometheusSink(self.registry, self._client))

    def __call__(self, event: Event) -> None:
        self.metrics(event)

    async def render(self, refresh: Refresh | None = None) -> bytes:
        """The Prometheus text, after `refresh(metrics)` read the store and breakers
        (a failing refresh is logged: the counters are still worth serving)."""
        if refresh is not None:
            try:
                await refresh(self.metrics)
            except Exception:
                log.warning("metrics: reading the store or the breakers failed", exc_info=True)
        text: bytes = self._client.generate_latest(self.registry)
        return text


Scope = MutableMapping[str, Any]
App = Callable[[Scope, Any, Any], Awaitable[None]]


def metrics_route(app: App, exporter: Prometheus, refresh: Refresh | None = None) -> App:
    """`app` with `GET /-/metrics` answered by `exporter` in front of it."""

    async def routed(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != METRICS_PATH:
            await app(scope, receive, send)
            return
        if str(scope.get("method", "GET")).upper() not in ("GET", "HEAD"):
            status, body, kind = 405, b"GET only\n", "text/plain; charset=utf-8"
        else:
            status, body, kind = 200, await exporter.render(refresh), CONTENT_TYPE
        headers = [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return routed


@contextlib.asynccontextmanager
async def serve_metrics(
    exporter: Prometheus, host: str, port: int, refresh: Refresh | None = None
) -> AsyncIterator[int]:
    """A small HTTP/1.1 server answering `GET /-/metrics` (404 elsewhere) on `host`:
    `port` (0: a free one) while the block runs; yields the port it listens on."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if path.split("?", 1)[0] != METRICS_PATH:
                status, body, kind = "404 Not Found", b"not found\n", "text/plain"
            elif method not in ("GET", "HEAD"):
                status, body, kind = "405 Method Not Allowed", b"GET only\n", "text/plain"
            else:
                status, body, kind = "200 OK", await exporter.render(refresh), CONTENT_TYPE
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n".encode("latin-1")
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass  # not an HTTP request we can answer: close
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, host, port)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


__all__ = [
    "CONTENT_TYPE",
    "METRICS_PATH",
    "Prometheus",
    "PrometheusSink",
    "metrics_route",
    "prometheus_name",
    "serve_metrics",
]
