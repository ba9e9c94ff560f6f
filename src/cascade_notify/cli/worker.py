"""`cascade-notify worker`: advance cascades from the policy's store until signalled."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Annotated

import typer

from cascade_notify import _logmask
from cascade_notify._duration import format_duration
from cascade_notify.cli import _metrics
from cascade_notify.cli._output import setup_logging, store_label
from cascade_notify.cli.store import PolicyOption, _config, _fail
from cascade_notify.errors import CascadeError
from cascade_notify.notifier import Notifier
from cascade_notify.policy import Config

log = _logmask.logger("cascade_notify.worker")


def worker(
    policy: PolicyOption,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    outbox: Annotated[
        str,
        typer.Option(
            help="With `events:`: `post` the outcome webhooks here too (default), `no` "
            "(other processes post them), or `only` (post them, advance no cascade)."
        ),
    ] = "post",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus text at GET /-/metrics on this port (needs the otel extra).",
            min=0,
            max=65535,
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address the metrics port listens on.")
    ] = "127.0.0.1",
) -> None:
    """Advance cascades from the policy's store until SIGTERM or SIGINT.

    On the first signal it takes no new work, finishes the transitions in hand and exits 0;
    a second signal exits at once (130): leases make the unfinished work another worker's
    once they expire.
    """
    config = _config(policy)
    if outbox not in ("post", "no", "only"):
        raise _fail(f"--outbox {outbox!r}: use post, no or only", 2)
    if config.store.startswith("memory"):
        raise _fail(
            f"{policy}: store: memory:// lives in one process, so a worker would see nothing "
            "sent elsewhere; set store: sqlite:///... or postgresql://...",
            2,
        )
    setup_logging(log_level)
    try:
        asyncio.run(_work(config, metrics_host, metrics_port, outbox))
    except CascadeError as exc:
        raise _fail(str(exc)) from None


async def _work(
    config: Config,
    metrics_host: str = "",
    metrics_port: int | None = None,
    outbox: str = "post",
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning(
                "%s again: exiting now; unfinished work resumes when its lease expires", name
            )
            os._exit(130)
        log.info("%s: taking no new work, finishing the transitions in hand", name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    notifier = Notifier(config, worker=outbox != "only", outbox=outbox != "no")
    async with contextlib.AsyncExitStack() as stack:
        if metrics_port is not None:
            from cascade_notify.observe.prometheus import METRICS_PATH, serve_metrics

            bound = await stack.enter_async_context(
                serve_metrics(
                    _metrics.exporter(notifier), metrics_host, metrics_port,
                    _metrics.refresher(notifier),
                )
            )  # fmt: skip
            log.info("metrics: GET http://%s:%d%s", metrics_host, bound, METRICS_PATH)
        await _run(notifier, config, stop)


async def _run(notifier: Notifier, config: Config, stop: asyncio.Event) -> None:
    await notifier.start()
    log.info(
        "worker %d on %s: lease %s, up to %d deliveries at once",
        os.getpid(),
        store_label(config.store),
        format_duration(config.worker.lease),
        config.worker.concurrency,
    )
    try:
        await stop.wait()
    finally:
        await notifier.stop()
    log.info("worker %d stopped", os.getpid())


__all__ = ["worker"]
