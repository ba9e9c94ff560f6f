"""Fault tests: worker processes SIGKILLed at every failpoint, on SQLite and PostgreSQL.

Each case runs `crash_app.py` (it sends, then works, the deliveries) with one
failpoint armed, so it dies by SIGKILL there; runs it again unarmed (it sends the
same keys again, as a retrying client would, and works everything to its end);
then the checker sorts every delivery into ok, lost, duplicated or ambiguous.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cascade_notify.models import Delivery
from cascade_notify.stores import open_store
from cascade_notify.stores._failpoints import ENV, FAILPOINTS

from .fault_checker import judge, read_logs

APP = Path(__file__).with_name("crash_app.py")
COUNT = 6
#: (failpoint, which hit of it kills): later hits kill with more deliveries in flight; WhatsApp
#: (hits 1-6 of `attempt`) is an idempotent provider, SMS (later hits) is not
CASES = [
    ("send.before", 3),
    ("send.after", 3),
    ("claim.before", 1),
    ("claim.after", 2),
    ("attempt.before", 4),
    ("attempt.after", 4),
    ("attempt.before", 8),
    ("timer.before", 3),
    ("timer.after", 3),
    ("timer.before", 8),
    ("finish.before", 2),
    ("finish.after", 2),
    ("receipt.before", 2),
    ("receipt.after", 2),
]


def test_every_failpoint_has_a_case() -> None:
    """A failpoint added without a crash case here fails this test."""
    assert {point for point, _ in CASES} == set(FAILPOINTS)


def run_app(url: str, log_dir: Path, failpoint: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if failpoint is not None:
        env[ENV] = failpoint
    return subprocess.run(
        [sys.executable, str(APP), url, str(log_dir), str(COUNT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/faults.db"
    dsn = request.getfixturevalue("pg_dsn")
    return f"{dsn}?schema={request.getfixturevalue('pg_schema')}"


@pytest.mark.slow
@pytest.mark.parametrize(("point", "nth"), CASES, ids=[f"{p}@{n}" for p, n in CASES])
def test_killed_at_failpoint_loses_nothing(
    point: str, nth: int, store_url: str, tmp_path: Path
) -> None:
    """SIGKILL at `point`, restart: every delivery final, none lost, none duplicated;
    a repeated request only where the kill left a request's outcome unrecorded."""
    logs = tmp_path / "logs"
    logs.mkdir()
    crashed = run_app(store_url, logs, f"{point}@{nth}")
    assert crashed.returncode == -signal.SIGKILL, (
        f"the failpoint never fired (exit {crashed.returncode}): {crashed.stderr[-2000:]}"
    )
    finished = run_app(store_url, logs, None)
    assert finished.returncode == 0, finished.stderr[-3000:]
    verdicts = asyncio.run(judge(logs, store_url))
    assert not verdicts.lost and not verdicts.duplicated, verdicts
    assert len(verdicts.ok) + len(verdicts.ambiguous) == COUNT, verdicts


def wait_for_line(log_dir: Path, pid: int, kind: str, timeout: float = 20) -> None:
    """Real waiting: until process `pid` has logged a `kind` record."""
    path = log_dir / f"{pid}.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and f'"kind": "{kind}"' in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} never logged {kind}")


async def snapshot(url: str, log_dir: Path) -> list[Delivery | None]:
    """Every delivery the logs know of, as the store has it now."""
    ids = sorted({r["delivery"] for r in read_logs(log_dir) if r["kind"] == "send_returned"})
    store = open_store(url)
    await store.open()
    try:
        return [await store.get(i) for i in ids]
    finally:
        await store.close()


@pytest.mark.slow
def test_zombie_worker_writes_nothing_over_its_successor(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    """A worker SIGSTOPped mid-request past its lease, resumed after another worker finished
    its deliveries, is fenced out: it writes nothing (PostgreSQL: SQLite admits one
    process, so a successor cannot start while the zombie lives)."""
    url = f"{pg_dsn}?schema={pg_schema}"
    logs = tmp_path / "logs"
    env = {**os.environ, "CRASH_APP_LATENCY": "0.5"}
    env.pop(ENV, None)
    zombie = subprocess.Popen(
        [sys.executable, str(APP), url, str(logs), "2"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_line(logs, zombie.pid, "request")
        zombie.send_signal(signal.SIGSTOP)
        time.sleep(1.5)  # real time: its one-second lease runs out
        successor = run_app(url, logs, None)
        assert successor.returncode == 0, successor.stderr[-3000:]
        settled = asyncio.run(snapshot(url, logs))
        assert all(d is not None and d.final for d in settled)
        zombie.send_signal(signal.SIGCONT)
        _, err = zombie.communicate(timeout=30)
    finally:
        if zombie.poll() is None:
            zombie.kill()  # SIGKILL works on a stopped process too
            zombie.communicate()
    assert zombie.returncode == 0, err[-3000:]
    # it tried, and was refused: fenced out, or its session ended while it was stopped
    assert "was taken over" in err or "PostgreSQL" in err, err[-3000:]
    assert asyncio.run(snapshot(url, logs)) == settled
    verdicts = asyncio.run(judge(logs, url, frozenset({zombie.pid})))
    assert not verdicts.lost and not verdicts.duplicated, verdicts


def storm(url: str, log_dir: Path, *, workers: int, count: int, kills: int) -> int:
    """Run `workers` processes (the first also sends, paced by the storm) while a killer
    SIGKILLs a random one 0.2-2 s after every process is up and restarts it, `kills` times;
    return how many it killed.

    The storm keeps time by the processes, not the wall clock: a process still importing
    is not killed (on a loaded machine start-up outlasts the 0.2-2 s, and a storm of kills
    landing in start-ups left all the work for after it), and the sender sends 1/`kills` of
    the deliveries per kill (the work lasts as long as the storm, on a fast machine too)."""
    rng = random.Random(20261123)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env |= {
        "CRASH_APP_MIXED": "1",
        "CRASH_APP_LEASE": "2",
        "CRASH_APP_LATENCY": "0.05",  # requests in flight when a kill lands
        "CRASH_APP_STORM": str(kills),
    }

    def start(slot: int) -> subprocess.Popen[bytes]:
        role = {"CRASH_APP_ROLE": "all" if slot == 0 else "worker"}
        return subprocess.Popen(
            [sys.executable, str(APP), url, str(log_dir), str(count)],
            env=env | role,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def up(proc: subprocess.Popen[bytes]) -> None:
        """Real waiting: until `proc` logged that it is working, or ended (its work done)."""
        path = log_dir / f"{proc.pid}.jsonl"
        deadline = time.monotonic() + 120
        while proc.poll() is None and not (path.exists() and '"ready"' in path.read_text()):
            assert time.monotonic() < deadline, f"process {proc.pid} did not start in 120 s"
            time.sleep(0.05)

    procs = {slot: start(slot) for slot in range(workers)}
    for proc in procs.values():
        up(proc)
    done = 0
    try:
        while done < kills:
            time.sleep(rng.uniform(0.2, 2.0))  # real time: the storm
            alive = [slot for slot, proc in procs.items() if proc.poll() is None]
            if not alive:
                break
            slot = rng.choice(alive)
            procs[slot].kill()
            procs[slot].wait()
            done += 1
            (log_dir / "kills.tmp").write_text(str(done))
            (log_dir / "kills.tmp").replace(log_dir / "kills")
            procs[slot] = start(slot)
            up(procs[slot])
        for proc in procs.values():
            assert proc.wait(timeout=180) == 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


@pytest.mark.slow
def test_kill_storm(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    """Random receipts, failures and timeouts while workers are SIGKILLed at random (50
    times) and restarted: every delivery final, 0 lost, 0 duplicated outside ambiguous
    requests. PostgreSQL: 3 workers, 5,000 deliveries (SQLite: the test below)."""
    url = f"{pg_dsn}?schema={pg_schema}"
    kills = storm(url, tmp_path / "logs", workers=3, count=5000, kills=50)
    assert kills == 50, f"the work ran out after {kills} kills"
    verdicts = asyncio.run(judge(tmp_path / "logs", url))
    assert not verdicts.lost and not verdicts.duplicated, verdicts
    assert len(verdicts.ok) + len(verdicts.ambiguous) == 5000, verdicts


def process_storm(
    url: str,
    log_dir: Path,
    *,
    senders: int,
    workers: int,
    count: int,
    kills: int,
    checkpoints: bool,
) -> int:
    """`senders` send-only processes (web processes, never killed) share the keys, paced;
    `workers` worker processes are SIGKILLed at random every 0.1-0.9 s and restarted,
    `kills` times; with `checkpoints`, one more process forces TRUNCATE checkpoints all
    along. Return how many kills there were."""
    rng = random.Random(20261124)
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env |= {
        "CRASH_APP_MIXED": "1",
        "CRASH_APP_LEASE": "2",
        "CRASH_APP_LATENCY": "0.05",
        "CRASH_APP_SENDERS": str(senders),
        # paced to last about as long as the storm, so the kills land on work in flight
        "CRASH_APP_RATE": str(count / senders / (kills * 0.5)),
    }

    def start(role: str, index: int = 0) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(APP), url, str(log_dir), str(count)],
            env=env | {"CRASH_APP_ROLE": role, "CRASH_APP_SENDER": str(index)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    log_dir.mkdir(parents=True, exist_ok=True)
    sending = [start("sender", i) for i in range(senders)]
    working = [start("worker") for _ in range(workers)]
    extra = [start("checkpointer")] if checkpoints else []
    done = 0
    try:
        while done < kills:
            time.sleep(rng.uniform(0.1, 0.9))  # real time: the storm
            slot = rng.randrange(workers)
            if working[slot].poll() is not None and all(p.poll() is not None for p in sending):
                break  # the work is over
            working[slot].kill()
            working[slot].wait()
            done += 1
            working[slot] = start("worker")
        for proc in sending + working:
            assert proc.wait(timeout=180) == 0
        (log_dir / "done").touch()
        for proc in extra:
            assert proc.wait(timeout=30) == 0
    finally:
        for proc in sending + working + extra:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


@pytest.mark.slow
@pytest.mark.parametrize("checkpoints", [False, True], ids=["plain", "checkpoints-forced"])
def test_sqlite_kill_storm_many_processes(tmp_path: Path, checkpoints: bool) -> None:
    """One SQLite file, 3 sending processes and 2 worker processes SIGKILLed at random 50
    times over 3,000 deliveries (and TRUNCATE checkpoints forced all along): every delivery
    final, 0 lost, 0 duplicated outside ambiguous requests, and the file intact."""
    path = tmp_path / "storm.db"
    url = f"sqlite:///{path}"
    logs = tmp_path / "logs"
    kills = process_storm(
        url, logs, senders=3, workers=2, count=3000, kills=50, checkpoints=checkpoints
    )
    assert kills == 50, f"the work ran out after {kills} kills"
    verdicts = asyncio.run(judge(logs, url))
    assert not verdicts.lost and not verdicts.duplicated, verdicts
    assert len(verdicts.ok) + len(verdicts.ambiguous) == 3000, verdicts
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    if checkpoints:
        [forced] = [r["forced"] for r in read_logs(logs) if r["kind"] == "checkpoints"]
        assert forced >= 100, f"only {forced} checkpoints were forced"
    senders = {r["pid"] for r in read_logs(logs) if r["kind"] == "send_returned"}
    assert len(senders) == 3  # the sends did come from three processes
    print(f"kills {kills}, {verdicts}")  # the figures, with -s
