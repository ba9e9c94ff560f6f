"""The command line: `send --at` and `send-many FILE.csv|FILE.jsonl`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cascade_notify import DeliveryStatus, Priority, ScheduleError
from cascade_notify.cli import app
from cascade_notify.cli.bulk import parse_at
from cascade_notify.stores.sqlite import SQLiteStore

runner = CliRunner()


def policy(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(f"""
store: sqlite:///{tmp_path / "cascade.db"}
providers:
  sms: {{type: fake, channel: sms}}
policies:
  p: {{steps: [{{channel: sms, providers: [sms]}}]}}
""")
    return path


def stored(tmp_path: Path) -> list:  # type: ignore[type-arg]
    """Every delivery in the policy's SQLite store."""

    async def read() -> list:  # type: ignore[type-arg]
        store = SQLiteStore(tmp_path / "cascade.db")
        await store.open()
        try:
            with sqlite3.connect(tmp_path / "cascade.db") as conn:
                ids = [row[0] for row in conn.execute("SELECT id FROM deliveries")]
            return [await store.get(i) for i in ids]
        finally:
            await store.close()

    return asyncio.run(read())


def test_parse_at_takes_iso_times_with_an_offset_and_plus_durations() -> None:
    now = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)
    assert parse_at("+2h", now) == now + timedelta(hours=2)
    assert parse_at("+90m", now) == now + timedelta(minutes=90)
    assert parse_at("2026-05-01T09:00+03:00") == now
    assert parse_at("2026-05-01T06:00Z") == now
    with pytest.raises(ScheduleError, match="no offset"):
        parse_at("2026-05-01T09:00")
    with pytest.raises(ScheduleError, match="not a time"):
        parse_at("tomorrow")
    with pytest.raises(ScheduleError, match="not a duration"):
        parse_at("+soon")


def test_send_at_schedules_and_returns(tmp_path: Path) -> None:
    """`send --at +2h` stores a scheduled delivery and says when it starts."""
    path = policy(tmp_path)
    result = runner.invoke(
        app, ["send", "--policy", str(path), "--to-sms", "+79161234567", "--at", "+2h", "Hi"]
    )
    assert result.exit_code == 0, result.output
    assert "scheduled for" in result.output


def test_send_at_refuses_a_time_without_offset(tmp_path: Path) -> None:
    path = policy(tmp_path)
    result = runner.invoke(
        app,
        [
            "send",
            "--policy",
            str(path),
            "--to-sms",
            "+79161234567",
            "--at",
            "2026-05-01T09:00",
            "Hi",
        ],
    )
    assert result.exit_code == 2 and "no offset" in result.output


def test_send_many_from_csv_stores_the_good_rows_and_names_the_bad_by_line(tmp_path: Path) -> None:
    """A CSV with a bad number on line 3: the other rows are stored, the summary names
    line 3 and why, and the exit code is 1; run again, nothing new is stored."""
    path = policy(tmp_path)
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "id,sms,text,idempotency_key,priority\n"
        "c1,+79161234567,Your parcel is on its way,k1,bulk\n"
        "c2,+7 12,Your parcel is on its way,k2,\n"
        "c3,+79161234569,Your parcel is on its way,k3,\n"
    )
    result = runner.invoke(app, ["send-many", str(rows), "--policy", str(path), "--batch", "2"])
    assert result.exit_code == 1, result.output
    assert "2 of 3 rows stored (2 new" in result.output
    assert f"{rows}:3:" in result.output and "Recipient.sms" in result.output
    again = runner.invoke(app, ["send-many", str(rows), "--policy", str(path)])
    assert "(0 new, 2 already known" in again.output
    made = stored(tmp_path)
    assert sorted(d.recipient.id for d in made) == ["c1", "c3"]
    assert {d.recipient.id: d.priority for d in made}["c1"] is Priority.BULK


def test_send_many_from_jsonl_with_at(tmp_path: Path) -> None:
    """JSON Lines, `--at` for rows that give none: every row stored as scheduled."""
    path = policy(tmp_path)
    rows = tmp_path / "rows.jsonl"
    lines = [
        {"id": "c1", "sms": "+79161234567", "text": "Tomorrow at 10:00", "metadata": {"n": 1}},
        {"id": "c2", "sms": "+79161234568", "text": "Tomorrow at 11:00", "at": "+3h"},
    ]
    rows.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = runner.invoke(app, ["send-many", str(rows), "--policy", str(path), "--at", "+1h"])
    assert result.exit_code == 0, result.output
    assert "2 of 2 rows stored" in result.output
    made = stored(tmp_path)
    assert {d.status for d in made} == {DeliveryStatus.SCHEDULED}
    starts = sorted(d.wake_ts for d in made)
    assert 7000 < starts[1] - starts[0] < 7400  # +1h and +3h
    assert {d.recipient.id for d in made} == {"c1", "c2"}


def test_send_many_refuses_an_unknown_column_or_file_type(tmp_path: Path) -> None:
    path = policy(tmp_path)
    rows = tmp_path / "rows.csv"
    rows.write_text("id,phone,text\nc1,+79161234567,Hi\n")
    result = runner.invoke(app, ["send-many", str(rows), "--policy", str(path)])
    assert result.exit_code == 2 and "unknown column 'phone'" in result.output
    other = tmp_path / "rows.xlsx"
    other.write_text("")
    result = runner.invoke(app, ["send-many", str(other), "--policy", str(path)])
    assert result.exit_code == 2 and ".csv or .jsonl" in result.output
