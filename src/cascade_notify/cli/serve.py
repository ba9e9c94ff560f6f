"""`cascade-notify serve`: the receipts endpoint (and, by default, the worker) under uvicorn.

uvicorn is the optional extra `server` (`pip install 'cascade-notify[server]'`). On
SIGINT or SIGTERM uvicorn stops accepting connections, lets requests in flight finish
(up to `--graceful-timeout`), then sends the lifespan shutdown, on which the receipts
app stops the notifier: the transitions in hand finish and the store is closed; then
the command exits 0, as `cascade-notify worker` does.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from cascade_notify import _logmask
from cascade_notify.cli import _metrics
from cascade_notify.cli._output import setup_logging, store_label
from cascade_notify.errors import CascadeError, PolicyError
from cascade_notify.notifier import Notifier
from cascade_notify.observe.metrics import TelemetryError
from cascade_notify.observe.prometheus import METRICS_PATH, metrics_route
from cascade_notify.policy import Config, load_config
from cascade_notify.support.auth import TOKEN_ENV
from cascade_notify.webhooks import HEALTH_PATH, MAX_BODY, asgi_app

_errors = Console(stderr=True, highlight=False)


log = _logmask.logger("cascade_notify.serve")


def _announce(path: Path, config: Config, notifier: Notifier, prefix: str, worker: bool) -> None:
    """Say what this server serves: the policy, the store, the providers and the routes."""
    policies = ", ".join(
        f"{name} (default)" if name == config.default_policy else name for name in config.policies
    )
    log.info("policy file %s: policies %s", path.resolve(), policies)
    log.info(
        "store %s; worker %s",
        store_label(config.store),
        "on: cascades advance here" if worker else "off: receipts only, workers elsewhere",
    )
    for name, provider in notifier.providers.items():
        kind = config.providers[name].type
        if provider.accepts_webhooks:
            methods = "|".join(sorted(provider.webhook_methods))
            log.info("provider %s (%s, %s): %s %s/%s", name, kind, provider.channel, methods,
                     prefix, name)  # fmt: skip
        else:
            log.info("provider %s (%s, %s): takes no webhooks", name, kind, provider.channel)
    log.info("health: GET %s%s", prefix, HEALTH_PATH)


#: Where `serve --support` puts the support page.
SUPPORT_PATH = "/support"


def with_support(receipts: Any, notifier: Notifier) -> Any:
    """`receipts` with the support page at /support, signed in by the tokens in the
    environment (`cascade_notify.support.env_auth`); lifespan goes to `receipts`."""
    import hashlib
    import os

    from cascade_notify.support import env_auth

    auth = env_auth()
    # every `serve` with the same token signs forms alike, so a balancer may mix them
    secret = hashlib.sha256(b"support csrf\n" + os.environ[TOKEN_ENV].encode()).digest()
    page = notifier.support_app(auth=auth, secret=secret)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (
            path == SUPPORT_PATH or path.startswith(SUPPORT_PATH + "/")
        ):
            if path == SUPPORT_PATH:
                await _moved(send, SUPPORT_PATH + "/")
                return
            await page(
                {**scope, "root_path": scope.get("root_path", "") + SUPPORT_PATH}, receive, send
            )
        else:
            await receipts(scope, receive, send)

    return app


async def _moved(send: Any, location: str) -> None:
    headers = [(b"location", location.encode()), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 308, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


class _Stopped(Exception):
    """SIGTERM, raised again by uvicorn once it has shut down (or before it started)."""


def _stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def serve(
    policy_file: Annotated[Path, typer.Option("--policy", "-p", help="The cascade policy YAML.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    prefix: Annotated[str, typer.Option(help="URL path the receipts routes sit under.")] = (
        "/receipts"
    ),
    public_url: Annotated[
        str | None,
        typer.Option(help="The URL the world reaches this server's root at (behind a proxy)."),
    ] = None,
    max_body: Annotated[int, typer.Option(help="Largest webhook body, in bytes.")] = MAX_BODY,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker/--no-worker",
            help="Also advance cascades here (--no-worker: receipts only, workers elsewhere).",
        ),
    ] = True,
    graceful_timeout: Annotated[
        int, typer.Option(help="Seconds requests in flight get to finish on shutdown.")
    ] = 30,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
    metrics: Annotated[
        bool | None,
        typer.Option(
            "--metrics/--no-metrics",
            help="Prometheus text at GET /-/metrics (default: on when prometheus-client, "
            "the otel extra, is installed).",
        ),
    ] = None,
    support: Annotated[
        bool,
        typer.Option(
            "--support/--no-support",
            help="Also serve the support page at /support (needs CASCADE_NOTIFY_SUPPORT_TOKEN).",
        ),
    ] = False,
) -> None:
    """Take delivery receipts over HTTP at {prefix}/{provider}, until SIGINT or SIGTERM."""
    try:
        import uvicorn
    except ImportError:
        hint = escape("pip install 'cascade-notify[server]'")
        _errors.print(f"[red]error[/red] serve needs uvicorn: {hint}")
        raise typer.Exit(1) from None
    if not policy_file.is_file():
        _errors.print(f"[red]error[/red] {policy_file}: no such file")
        raise typer.Exit(1)
    try:
        config = load_config(policy_file)
    except PolicyError as exc:
        for issue in exc.issues:
            _errors.print(f"[red]error[/red] {escape(str(issue))}")
        raise typer.Exit(1) from None
    setup_logging(log_level)
    notifier = Notifier(config, worker=worker)
    _announce(policy_file, config, notifier, prefix, worker)
    app: Any = asgi_app(notifier, prefix=prefix, max_body=max_body, public_url=public_url)
    if metrics is not False:
        try:
            prometheus = _metrics.exporter(notifier)
        except TelemetryError as exc:
            if metrics:
                _errors.print(f"[red]error[/red] --metrics: {escape(str(exc))}")
                raise typer.Exit(1) from None
            log.info("metrics: off (%s)", exc)
        else:
            app = metrics_route(app, prometheus, _metrics.refresher(notifier))
            log.info("metrics: GET %s", METRICS_PATH)
    if support:
        try:
            app = with_support(app, notifier)
        except CascadeError as exc:
            _errors.print(f"[red]error[/red] --support: {escape(str(exc))}")
            raise typer.Exit(1) from None
        log.info("support page: GET %s/ (token in %s)", SUPPORT_PATH, TOKEN_ENV)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="on",
            log_level=log_level,
            log_config=None,  # uvicorn's loggers go through ours: one format
            timeout_graceful_shutdown=graceful_timeout,
            server_header=False,
        )
    )
    # uvicorn re-raises the signal it handled once it has shut down cleanly: SIGINT as
    # KeyboardInterrupt, SIGTERM through the handler in place before it (ours: the
    # default would end the process with 143, as if it had been killed mid-work)
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        with contextlib.suppress(KeyboardInterrupt, _Stopped):
            server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        _errors.print("[red]error[/red] the server did not start (see the log above)")
        raise typer.Exit(1)
