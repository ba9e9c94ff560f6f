"""`cascade-notify breaker list|open|close`: circuit breakers by hand, for a known block.

The state goes through the policy file's store, so every worker on it sees
the change within a second. That needs a store that shares guard state
(`cascade_notify.resilience.SharedState`); with any other (`memory://` lives
and dies with one process) `open` and `close` refuse, since they would change
nothing a running worker sees: use `notifier.breakers` in that process.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from cascade_notify._duration import parse_duration
from cascade_notify.cli._output import err, out
from cascade_notify.errors import CascadeError, PolicyError
from cascade_notify.notifier import Notifier
from cascade_notify.policy import Config, load_config
from cascade_notify.resilience.circuit import BreakerInfo

breaker_app = typer.Typer(
    help="List, open and close circuit breakers, shared with every worker through the store.",
    no_args_is_help=True,
    add_completion=False,
)
PolicyOption = Annotated[Path, typer.Option("--policy", "-p", help="The cascade policy YAML.")]
NameArgument = Annotated[str, typer.Argument(help="The provider's name in the policy file.")]


def _config(path: Path) -> Config:
    try:
        return load_config(path)
    except PolicyError as exc:
        for issue in exc.issues:
            err.print(f"[red]error[/red] {escape(str(issue))}")
        raise typer.Exit(1) from None


async def _run(
    config: Config, verb: str, name: str | None, seconds: float, reason: str | None
) -> list[BreakerInfo]:
    notifier = Notifier(config, worker=False)
    async with notifier:
        # the memory store shares state only among notifiers in one process, never this one's
        in_process = config.store.startswith("memory") or not notifier.breakers.shared
        where = config.store.split("?")[0]
        if in_process and verb == "list":
            err.print(
                f"[yellow]note[/yellow] the store {where} does not share breaker state between "
                "processes: these are the breakers of this command alone, not of any worker"
            )
        elif in_process:
            err.print(
                f"[red]error[/red] the store {where} does not share breaker state between "
                "processes, so a running worker would never see this; use `notifier.breakers` "
                "inside that process, or a store that shares it"
            )
            raise typer.Exit(1)
        if verb == "open":
            assert name is not None
            return [await notifier.breakers.open(name, seconds, reason=reason)]
        if verb == "close":
            assert name is not None
            return [await notifier.breakers.close(name, reason=reason)]
        return await notifier.breakers.list()


def _do(
    policy: Path,
    verb: str,
    name: str | None = None,
    seconds: float = 0.0,
    reason: str | None = None,
) -> None:
    config = _config(policy)
    try:
        shown = asyncio.run(_run(config, verb, name, seconds, reason))
    except CascadeError as exc:
        err.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    rows: list[list[str | Text]] = [
        [Text(c, style="bold") for c in ("provider", "state", "until", "reason")]
    ]
    for info in shown:
        until = "" if info.until is None else _when(info.until)
        state = f"{info.state} (by hand)" if info.manual else info.state
        rows.append([info.provider, state, until, info.reason])
    out.rows(rows)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@breaker_app.command("list")
def list_breakers(policy: PolicyOption) -> None:
    """Show every provider's breaker: closed, open (until when, why) or half-open."""
    _do(policy, "list")


@breaker_app.command("open")
def open_breaker(
    name: NameArgument,
    policy: PolicyOption,
    duration: Annotated[str, typer.Option("--for", help="How long, e.g. 90m, 2h, 1d.")] = "1h",
    reason: Annotated[str | None, typer.Option(help="Why, for the others.")] = None,
) -> None:
    """Open a provider's breaker for a while: no worker sends there until it probes again."""
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        err.print(f"[red]error[/red] --for: {exc}")
        raise typer.Exit(2) from None
    _do(policy, "open", name, seconds, reason)


@breaker_app.command("close")
def close_breaker(
    name: NameArgument,
    policy: PolicyOption,
    reason: Annotated[str | None, typer.Option(help="Why, for the others.")] = None,
) -> None:
    """Close a provider's breaker now: sends go to it again."""
    _do(policy, "close", name, reason=reason)
