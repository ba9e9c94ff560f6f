"""`cascade-notify simulate`: a policy through a scenario on fake time, before the outage."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cascade_notify.errors import CascadeError, PolicyError
from cascade_notify.policy import Config, load_config
from cascade_notify.simulate import Report, ScenarioError, load_scenario
from cascade_notify.simulate import simulate as run
from cascade_notify.simulate.chart import ChartError, draw_chart

_out = Console(highlight=False)
_err = Console(stderr=True, highlight=False)


class _Placeholders(Mapping[str, str]):
    """The environment, with a placeholder for every variable it lacks: a simulation calls
    no real API, so a production policy's `${TOKEN}`s need not be set."""

    def __getitem__(self, key: str) -> str:
        return os.environ.get(key) or "simulated"

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


def _policy(path: Path) -> Config:
    if not path.is_file():
        _err.print(f"[red]error[/red] {path}: no such file")
        raise typer.Exit(1)
    try:
        return load_config(path, env=_Placeholders())
    except PolicyError as exc:
        for issue in exc.issues:
            _err.print(f"[red]error[/red] {escape(str(issue))}")
        raise typer.Exit(1) from None


def _table(report: Report) -> Table:
    table = Table(title=f"{report.scenario} · seed {report.seed}", title_justify="left")
    table.add_column("")
    for policy in report.policies:
        table.add_column(f"{policy.label} ({policy.policy})")
    for label, cells in report.rows():
        table.add_row(label, *cells)
    return table


def simulate(
    policy_file: Annotated[Path, typer.Argument(help="The policy file to simulate.")],
    scenario: Annotated[
        Path, typer.Option("--scenario", "-s", help="The scenario YAML (traffic, outages...).")
    ],
    compare: Annotated[
        Path | None,
        typer.Option("--compare", help="A second policy file, run on the same scenario and seed."),
    ] = None,
    seed: Annotated[int, typer.Option(help="The seed of every random draw.")] = 0,
    policy_name: Annotated[
        str | None, typer.Option("--policy-name", help="The policy to run (default: the file's).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Write a PNG of time to delivery over time.")
    ] = None,
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline/--no-baseline",
            help="Also run with every breaker off, to report what the breakers saved.",
        ),
    ] = True,
) -> None:
    """Run a policy through a scenario on fake time: delivery rate, time to delivery, cost."""
    config = _policy(policy_file)
    other = _policy(compare) if compare is not None else None
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        for issue in exc.issues:
            _err.print(f"[red]error[/red] {escape(str(issue))}")
        raise typer.Exit(1) from None
    library = logging.getLogger("cascade_notify")
    level = library.level
    library.setLevel(logging.ERROR)  # a breaker opening is the point here, not news
    try:
        report = run(
            config, loaded, seed=seed, compare=other, policy=policy_name, breaker_baseline=baseline
        )
    except ScenarioError as exc:
        for issue in exc.issues:
            _err.print(f"[red]error[/red] {escape(str(issue))}")
        raise typer.Exit(1) from None
    except CascadeError as exc:
        _err.print(f"[red]error[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    finally:
        library.setLevel(level)
    if chart is not None:
        try:
            draw_chart(report, loaded, chart)
        except ChartError as exc:
            _err.print(f"[red]error[/red] {escape(str(exc))}")
            raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _out.print(_table(report))
        if chart is not None:
            _out.print(f"chart: {chart}")
