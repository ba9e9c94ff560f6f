"""One process of a fault test: it sends deliveries and works them until all are final.

    python tests/stores/crash_app.py STORE_URL LOG_DIR COUNT

Everything it does goes to LOG_DIR/<pid>.jsonl, one JSON object a line, written
unbuffered so a SIGKILL loses nothing written before it: `send_called` and
`send_returned` (with the idempotency key), each provider `request` (with the
attempt key) and its `answer`, each `receipt` emitted, each notifier `event`,
and each transition the store `recorded`. A restarted sender sends again
every key whose send did not return, as a retrying client would, then the rest.

Environment: `CRASH_APP_ROLE` is `all` (send, work, exit once every delivery
sent is final; the default), `sender` (a web process: send only, without a
worker, and exit once its deliveries are final), `worker` (work; exit once every
sender's LOG_DIR/all-sent-<i> exists and nothing is pending) or `checkpointer`
(SQLite: force `wal_checkpoint(TRUNCATE)` under the store's write lock every
20 ms until the workers are done); `CRASH_APP_SENDERS` (how many senders
share the keys, default 1) and `CRASH_APP_SENDER` (which one this is: it sends
key-i for i % SENDERS == SENDER); `CRASH_APP_RATE` paces sends (per second);
`CRASH_APP_STORM=N` paces sends by a kill storm of N kills: with k kills done
(LOG_DIR/kills, written by the storm) the sender has sent at most (k + 1)/N of them, so
the work lasts as long as the storm however fast the machine runs;
`CRASH_APP_MIXED=1` makes providers answer at random (by attempt id):
receipts delivered or failed, none, transient, permanent and unreachable
errors; `CRASH_APP_LATENCY` delays every answer; `CRASH_APP_LEASE` (seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from cascade_notify import Message, Notifier, Receipt, ReceiptStatus, Recipient, load_config
from cascade_notify.errors import PermanentError, StoreError, TransientError, UnreachableError
from cascade_notify.events import Event
from cascade_notify.providers import registry
from cascade_notify.providers.base import Provider, ProviderSettings, SendRequest, SendResult
from cascade_notify.stores import open_store
from cascade_notify.stores.base import Claim, Store, Transition

POLICY = """
store: {url}
worker: {{lease: {lease}s, batch: 20}}
providers:
  wa: {{type: logged_fake_idempotent, channel: whatsapp, deliver_every: 2}}
  sms: {{type: logged_fake, channel: sms, deliver_every: 1}}
policies:
  p:
    ttl: 1m
    steps:
      - {{channel: whatsapp, providers: [wa], timeout: 1500ms, retry: {{attempts: 2}}}}
      - {{channel: sms, providers: [sms], timeout: 1500ms, retry: {{attempts: 2}}}}
"""
_fd = -1
ROLE = os.environ.get("CRASH_APP_ROLE", "all")
STORM = int(os.environ.get("CRASH_APP_STORM", "0"))
RATE = float(os.environ.get("CRASH_APP_RATE", "0"))
MIXED = os.environ.get("CRASH_APP_MIXED") == "1"
LATENCY = float(os.environ.get("CRASH_APP_LATENCY", "0"))
LEASE = float(os.environ.get("CRASH_APP_LEASE", "1"))
SENDERS = int(os.environ.get("CRASH_APP_SENDERS", "1"))
SENDER = int(os.environ.get("CRASH_APP_SENDER", "0"))


def log(**record: Any) -> None:
    record["pid"] = os.getpid()
    record["t"] = time.time()
    os.write(_fd, (json.dumps(record) + "\n").encode())


class LoggedSettings(ProviderSettings):
    channel: str
    deliver_every: int = Field(default=1, ge=1)  # recipient r<i> hears back if i % this == 0
    receipt_delay: float = 0.05


class LoggedFake(Provider):
    """Accepts everything (or, mixed, answers at random); logs each request and answer."""

    type_name = "logged_fake"
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset(ReceiptStatus)
    Settings = LoggedSettings
    settings: LoggedSettings

    def __init__(self, name: str, settings: ProviderSettings, **kwargs: Any) -> None:
        super().__init__(name, settings, **kwargs)
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, request: SendRequest) -> SendResult:
        log(
            kind="request",
            delivery=request.delivery_id,
            attempt=request.attempt_id,
            channel=self.channel,
            provider=self.name,
            idempotent=self.idempotent_sends,
        )
        if LATENCY:
            await asyncio.sleep(LATENCY)  # waiting for the answer: a SIGSTOP lands here
        message_id = f"{self.name}:{request.attempt_id}"
        roll = int(hashlib.sha256(request.attempt_id.encode()).hexdigest(), 16) % 10
        if not MIXED:
            roll = 0 if int(request.recipient.id[1:]) % self.settings.deliver_every == 0 else 5
        errors = {7: TransientError, 8: PermanentError, 9: UnreachableError}
        if roll in errors:
            log(kind="answer", attempt=request.attempt_id, outcome=errors[roll].__name__)
            raise errors[roll]("mixed", provider=self.name)
        log(kind="answer", attempt=request.attempt_id, outcome="accepted")
        if roll < 5:
            status = ReceiptStatus.FAILED if roll == 4 else ReceiptStatus.DELIVERED
            delay = self.settings.receipt_delay * (1 + roll)
            task = asyncio.get_running_loop().create_task(self._report(message_id, status, delay))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return SendResult(message_id)

    async def _report(self, message_id: str, status: ReceiptStatus, delay: float) -> None:
        await asyncio.sleep(delay)
        log(kind="receipt", provider=self.name, message=message_id, status=status.value)
        receipt = Receipt(
            provider=self.name, provider_message_id=message_id, status=status, ts=time.time()
        )
        try:
            await self.emit([receipt])
        except Exception as exc:  # the store is down: a real provider would call again
            log(kind="receipt_failed", message=message_id, error=str(exc))

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class LoggedIdempotentFake(LoggedFake):
    """The same, declaring idempotent sends: a request with an unknown outcome is resent."""

    type_name = "logged_fake_idempotent"
    idempotent_sends = True


class RecordingStore:
    """The real store, logging each transition once it is committed."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def commit(self, claim: Claim, transition: Transition) -> None:
        await self._inner.commit(claim, transition)
        log(
            kind="recorded",
            delivery=claim.delivery.id,
            attempts=[[a.id, a.status.value] for a in transition.attempts],
        )


def on_event(event: Event) -> None:
    log(
        kind="event",
        event=event.kind,
        delivery=event.delivery_id,
        status=event.status,
        provider=event.provider,
    )


def earlier(log_dir: Path) -> tuple[dict[str, str], set[str]]:
    """From every log so far: key -> delivery for sends that returned; keys called."""
    returned: dict[str, str] = {}
    called: set[str] = set()
    for path in log_dir.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            if line.endswith("}"):
                record = json.loads(line)
                if record["kind"] == "send_returned":
                    returned[record["key"]] = record["delivery"]
                elif record["kind"] == "send_called":
                    called.add(record["key"])
    return returned, called


def kills_done(log_dir: Path) -> int:
    try:
        return int((log_dir / "kills").read_text() or 0)
    except FileNotFoundError:
        return 0


async def keep_pace(log_dir: Path, sent: int, count: int) -> None:
    """Real waiting: until the storm's kills so far allow one more send."""
    while True:
        if sent < count * (kills_done(log_dir) + 1) // STORM:
            return
        await asyncio.sleep(0.05)


async def send_all(notifier: Notifier, log_dir: Path, count: int) -> list[str]:
    returned, called = earlier(log_dir)
    keys = [f"key-{i}" for i in range(count) if i % SENDERS == SENDER]
    # a send that never returned is sent again first, as the client that made it would
    mine = set(keys)
    todo = sorted((called - set(returned)) & mine) + [k for k in keys if k not in called]
    ids = [i for k, i in returned.items() if k in mine]
    started = time.monotonic()
    for n, key in enumerate(todo):
        if STORM:
            await keep_pace(log_dir, len(ids), count)
        if RATE:
            await asyncio.sleep(max(0.0, started + n / RATE - time.monotonic()))
        i = int(key.split("-")[1])
        log(kind="send_called", key=key)
        delivery = await notifier.send(
            Recipient(id=f"r{i}", whatsapp=f"+7916{1_000_000 + i}", sms=f"+7916{1_000_000 + i}"),
            Message(text=f"message {i}"),
            idempotency_key=key,
        )
        log(kind="send_returned", key=key, delivery=delivery.id)
        ids.append(delivery.id)
    (log_dir / f"all-sent-{SENDER}").touch()
    return ids


def all_sent(log_dir: Path) -> bool:
    return all((log_dir / f"all-sent-{i}").exists() for i in range(SENDERS))


def checkpoints(url: str, log_dir: Path) -> int:
    """Force TRUNCATE checkpoints (each resets the WAL: the path of the WAL-reset race)
    under the store's write lock, as the store's own checkpoints run, until `done`."""
    import sqlite3

    from cascade_notify.stores.sqlite.lock import FileLock

    path = url.removeprefix("sqlite:///").split("?")[0]
    lock = FileLock(path)
    lock.open()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    forced = 0
    while not (log_dir / "done").exists():
        lock.acquire()
        try:
            busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            lock.release()
        forced += 1
        if forced % 50 == 1:
            log(kind="checkpoint", busy=busy, frames=frames, copied=copied, forced=forced)
        time.sleep(0.02)
    conn.close()
    log(kind="checkpoints", forced=forced)
    return 0


async def wait_final(notifier: Notifier, ids: Sequence[str], limit: float) -> bool:
    deadline = time.monotonic() + limit
    waiting = list(ids)
    while waiting:
        try:
            waiting = [i for i in waiting if not (await notifier.get(i)).final]
        except StoreError as exc:  # a pause or an outage: ask again, as a client would
            log(kind="store_error", error=str(exc))
        if time.monotonic() > deadline:
            log(kind="gave_up", waiting=waiting[:20])
            return False
        await asyncio.sleep(0.1)
    return True


async def main(url: str, log_dir: Path, count: int) -> int:
    registry.register("logged_fake", LoggedFake)
    registry.register("logged_fake_idempotent", LoggedIdempotentFake)
    config = load_config(POLICY.format(url=url, lease=LEASE))
    store = RecordingStore(open_store(url))
    notifier = Notifier(config, store=store, worker=ROLE != "sender")  # type: ignore[arg-type]
    notifier.subscribe(on_event)
    async with notifier:
        log(kind="ready")  # started: from here a kill lands on a working process
        if ROLE in ("all", "sender"):
            ids = await send_all(notifier, log_dir, count)
            if not await wait_final(notifier, ids, 150):
                return 3
        else:
            while True:  # a worker: until everything sent is final, whoever finished it
                sent = all_sent(log_dir)
                with contextlib.suppress(StoreError):
                    if sent and await notifier.store.next_wake() is None:
                        break
                await asyncio.sleep(0.2)
    log(kind="done")
    return 0


if __name__ == "__main__":
    store_url, directory, how_many = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    directory.mkdir(parents=True, exist_ok=True)
    _fd = os.open(directory / f"{os.getpid()}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    if ROLE == "checkpointer":
        sys.exit(checkpoints(store_url, directory))
    sys.exit(asyncio.run(main(store_url, directory, how_many)))
