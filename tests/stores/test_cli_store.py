"""`cascade-notify store migrate|purge` and `cascade-notify worker`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cascade_notify.cli.store import store_app
from cascade_notify.cli.worker import worker
from cascade_notify.models import AttemptStatus, DeliveryStatus, Step, WaitFor
from cascade_notify.stores.base import Transition
from cascade_notify.stores.sqlite import SQLiteStore, schema

from .conftest import delivery

app = typer.Typer()
app.add_typer(store_app, name="store")
app.command()(worker)
runner = CliRunner()

POLICY = """
store: sqlite:///{db}
worker: {{lease: 5s}}
providers:
  sms: {{type: fake, channel: sms, latency: {latency}}}
policies:
  p: {{steps: [{{channel: sms, providers: [sms], wait_for: accepted}}]}}
"""


def policy(tmp_path: Path, latency: str = "0s") -> Path:
    path = tmp_path / "cascade.yaml"
    path.write_text(POLICY.format(db=tmp_path / "c.db", latency=latency))
    return path


def test_migrate_creates_then_reports_current(tmp_path: Path) -> None:
    """migrate on an empty database creates the schema; run again, it has nothing to do."""
    file = policy(tmp_path)
    first = runner.invoke(app, ["store", "migrate", "--policy", str(file)])
    assert first.exit_code == 0, first.output
    assert f"schema created at version {schema.current_version()}" in first.output
    again = runner.invoke(app, ["store", "migrate", "-p", str(file)])
    assert f"already at version {schema.current_version()}" in again.output


def test_purge_deletes_only_old_finished_deliveries(tmp_path: Path) -> None:
    """purge --older-than 30d deletes a delivery finished 40 days ago, keeps a pending one."""
    file = policy(tmp_path)

    async def prepare() -> None:
        store = SQLiteStore(tmp_path / "c.db")
        await store.open()
        now = time.time()
        old, _ = await store.create(delivery(now=now - 40 * 86400))
        await store.create(delivery(now=now))
        [claim] = await store.claim(now - 40 * 86400, limit=1, lease=5)
        assert claim.delivery.id == old.id
        await store.commit(
            claim, Transition(status=DeliveryStatus.EXHAUSTED, finished_ts=now - 40 * 86400)
        )
        await store.close()

    asyncio.run(prepare())
    result = runner.invoke(app, ["store", "purge", "--older-than", "30d", "-p", str(file)])
    assert result.exit_code == 0, result.output
    assert "deleted 1 delivery finished more than 30d ago" in result.output


def test_purge_refuses_a_bad_age(tmp_path: Path) -> None:
    """--older-than takes a duration, and says so."""
    result = runner.invoke(
        app, ["store", "purge", "--older-than", "a month", "-p", str(policy(tmp_path))]
    )
    assert result.exit_code == 2
    assert "not a duration" in result.output


def test_worker_refuses_the_memory_store(tmp_path: Path) -> None:
    """A worker on memory:// could never see what others send: refused with the reason."""
    file = tmp_path / "mem.yaml"
    file.write_text(POLICY.format(db="x", latency="0s").replace("sqlite:///x", "memory://"))
    result = runner.invoke(app, ["worker", "--policy", str(file)])
    assert result.exit_code == 2
    assert "lives in one process" in result.output


def test_worker_refuses_an_unknown_outbox_mode(tmp_path: Path) -> None:
    """`--outbox` is post, no or only; anything else is refused before the store opens."""
    result = runner.invoke(app, ["worker", "--policy", str(policy(tmp_path)), "--outbox", "x"])
    assert result.exit_code == 2
    assert "use post, no or only" in result.output


WORKER = "import typer; from cascade_notify.cli.worker import worker; typer.run(worker)"


@pytest.mark.slow
def test_worker_finishes_the_transition_in_hand_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM during a provider call: the worker records the call's outcome, then exits 0."""
    file = policy(tmp_path, latency="1.5s")

    async def send() -> str:
        store = SQLiteStore(tmp_path / "c.db")
        await store.open()
        sms = (Step(channel="sms", providers=("sms",), wait_for=WaitFor.ACCEPTED),)
        created, _ = await store.create(delivery(now=time.time(), steps=sms))
        await store.close()
        return created.id

    delivery_id = asyncio.run(send())
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, "--policy", str(file)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 15
        log = ""
        assert proc.stderr is not None
        while "worker" not in log and time.monotonic() < deadline:
            log += proc.stderr.readline()
        time.sleep(0.5)  # real time: the fake provider's call (1.5 s) is in flight now
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, log + rest
    assert "finishing the transitions in hand" in rest

    async def check() -> None:
        store = SQLiteStore(tmp_path / "c.db")
        await store.open()
        got = await store.get(delivery_id)
        await store.close()
        assert got is not None
        [attempt] = got.attempts
        assert attempt.status in (AttemptStatus.ACCEPTED, AttemptStatus.DELIVERED)
        assert got.status is DeliveryStatus.DELIVERED

    asyncio.run(check())
