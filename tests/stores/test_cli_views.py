"""`cascade-notify status`, `deliveries`, `stats` (and `--chart`) on a store filled by
the known scenario of `test_views`."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade_notify import Message, Notifier
from cascade_notify.cli import app
from cascade_notify.testing import FakeClock, run_until_final

from .conftest import NOW
from .test_views import POLICY, everyone

runner = CliRunner()
SINCE = ["--since", "2025-12-31T23:00:00", "--until", "2026-01-03T00:00:00+00:00"]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    import asyncio

    folder = tmp_path_factory.mktemp("views")
    policy = folder / "policy.yaml"
    policy.write_text(f"store: sqlite:///{folder / 'cascade.db'}\n{POLICY}", encoding="utf-8")

    async def fill() -> dict[str, str]:
        clock = FakeClock(start=NOW)
        ids: dict[str, str] = {}
        async with Notifier.from_yaml(policy, clock=clock) as notifier:
            for recipient, name in everyone():
                sent = await notifier.send(recipient, Message(text="hi"), policy=name)
                ids[recipient.id] = sent.id
            await run_until_final(notifier, clock, list(ids.values()))
        return ids

    return policy, asyncio.run(fill())


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal wide enough for the whole table (CliRunner's is 80 columns)."""
    from rich.console import Console

    from cascade_notify.cli import observe

    monkeypatch.setattr(observe, "_out", Console(highlight=False, soft_wrap=True, width=200))


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_status_shows_the_timeline_in_the_recipients_zone(
    filled: tuple[Path, dict[str, str]],
) -> None:
    policy, ids = filled
    shown = invoke("status", ids["r1"], "--policy", str(policy))
    assert "delivered on whatsapp" in shown
    assert "times in Asia/Tokyo" in shown
    assert "created 2026-01-01 09:00:00" in shown  # midnight UTC, in Tokyo
    assert "09:00:05" in shown  # the read receipt
    assert "receipt read" in shown
    data = json.loads(invoke("status", ids["r4"], "--policy", str(policy), "--json"))
    assert data["status"] == "delivered" and data["channel"] == "sms"
    kinds = [(e["kind"], e["channel"], e["status"]) for e in data["entries"]]
    assert kinds[:3] == [
        ("created", None, None),
        ("skipped", "whatsapp", "no_address"),
        ("skipped", "telegram", "no_address"),
    ]
    assert data["entries"][-1]["offset_seconds"] == 10.0
    assert data["cost"] == 0.05


def test_status_of_an_unknown_delivery_fails(filled: tuple[Path, dict[str, str]]) -> None:
    policy, _ = filled
    result = runner.invoke(app, ["status", "nope", "--policy", str(policy)])
    assert result.exit_code == 1
    assert "no delivery 'nope'" in result.output


def test_store_must_be_named_once(filled: tuple[Path, dict[str, str]]) -> None:
    result = runner.invoke(app, ["deliveries"])
    assert result.exit_code == 2
    assert "--policy FILE or --store URL" in result.output


def test_deliveries_pages_and_filters(filled: tuple[Path, dict[str, str]]) -> None:
    policy, ids = filled
    db = policy.parent / "cascade.db"
    seen: list[str] = []
    cursor: list[str] = []
    while True:
        data = json.loads(
            invoke("deliveries", "--store", f"sqlite:///{db}", "--limit", "4", "--json", *cursor)
        )
        seen.extend(d["id"] for d in data["deliveries"])
        if data["cursor"] is None:
            break
        cursor = ["--cursor", data["cursor"]]
    assert seen == sorted(ids.values(), reverse=True)
    data = json.loads(
        invoke("deliveries", "-p", str(policy), "--recipient", "r5", "--status", "exhausted",
               "--json")
    )  # fmt: skip
    assert [d["id"] for d in data["deliveries"]] == [ids["r5"]]
    shown = invoke("deliveries", "-p", str(policy), "--policy-name", "alerts", *SINCE)
    assert ids["r6"] in shown and ids["r1"] not in shown
    bad = runner.invoke(app, ["deliveries", "-p", str(policy), "--status", "lost"])
    assert bad.exit_code == 2 and "status: 'lost'" in bad.output


def test_stats_table_and_json(filled: tuple[Path, dict[str, str]]) -> None:
    policy, _ = filled
    data = json.loads(invoke("stats", "-p", str(policy), *SINCE, "--json"))
    assert data["deliveries"] == 6
    rows = {r["channel"]: r for r in data["rows"]}
    assert rows["sms"]["p95_seconds"] == pytest.approx(28.0)
    assert rows["telegram"]["rescues"] == 1
    assert rows["whatsapp"]["skipped"] == {"no_address": 1}
    shown = invoke("stats", "-p", str(policy), *SINCE, "--by", "policy,step")
    assert "service" in shown and "alerts" in shown
    assert "6 deliveries" in shown
    bad = runner.invoke(app, ["stats", "-p", str(policy), "--by", "hour"])
    assert bad.exit_code == 2 and "by: 'hour'" in bad.output


def test_stats_chart_is_a_png_of_the_expected_size(
    filled: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    policy, _ = filled
    target = tmp_path / "report.png"
    invoke("stats", "-p", str(policy), *SINCE, "--chart", str(target))
    head = target.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    assert struct.unpack(">II", head[16:24]) == (1500, 450)
    svg = tmp_path / "report.svg"
    invoke("stats", "-p", str(policy), *SINCE, "--chart", str(svg))
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_chart_without_matplotlib_names_the_extra(
    filled: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    policy, _ = filled
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(app, ["stats", "-p", str(policy), "--chart", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    assert "cascade-notify[charts]" in result.output
