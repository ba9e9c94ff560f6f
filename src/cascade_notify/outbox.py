"""The outbox sender: posts the outcome webhooks the store's outbox holds (`events:`).

Each event was written in the same store transaction as the change it tells of, so a
crash can lose neither. A sender leases the earliest unsent event of each delivery
(`Outbox.outbox_claim`), POSTs it signed the Standard Webhooks way, and marks it sent
on a 2xx; anything else (an error status, a refused connection, a timeout) puts it back
to be tried after a backoff, counted in the store. A delivery's next event is handed out
only once the one before it got its 2xx: in order per delivery, at least once (a sender
that dies after the POST and before marking it sent leaves it to be posted again when
its lease runs out; receivers dedupe by `webhook-id`).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import aiohttp
import httpx

from cascade_notify import _logmask
from cascade_notify.clock import Clock, wait_for
from cascade_notify.errors import CascadeError
from cascade_notify.policy import EventsSettings
from cascade_notify.providers._signing import StandardWebhooks, wall_time
from cascade_notify.stores import _failpoints as failpoints
from cascade_notify.stores.base import Outbox, OutboxItem

log = _logmask.logger("cascade_notify.outbox")

#: The wait before the n-th retry is BACKOFF_BASE * 2**(n-1) seconds, at most BACKOFF_CAP.
BACKOFF_BASE: Final = 1.0
BACKOFF_CAP: Final = 300.0
#: How long a sender holds an event it took: past it, another sender may post it.
LEASE: Final = 60.0
#: Most events (one per delivery) a sender takes and posts at once.
BATCH: Final = 32
#: How often an idle sender looks at a store other processes write to.
POLL_INTERVAL: Final = 1.0


def backoff(tries: int) -> float:
    """The wait after the `tries`-th failed POST of an event (1, 2, 4 ... 300 s)."""
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, tries - 1)))


def event_body(item: OutboxItem) -> bytes:
    """The JSON an event is posted as: `type`, `timestamp`, and `data` with the delivery
    id and the event's number in its delivery's order (`seq`, from 1)."""
    event = item.event
    body = {
        "type": f"delivery.{event.kind}",
        "timestamp": datetime.fromtimestamp(event.ts, UTC).isoformat().replace("+00:00", "Z"),
        "data": {"delivery_id": event.delivery_id, "seq": item.seq, **event.data},
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - wall_time())
    except (TypeError, ValueError):
        return None


class OutboxSender:
    """Posts a store's outbox to `settings.url`; `start()`, `poke()`, `stop()`.

    Requests go out on an `aiohttp.ClientSession` of its own (a tenth of httpx's cost per
    request, which matters beside the engine in one process), or on `http`, an
    `httpx.AsyncClient`, when one is given."""

    def __init__(
        self,
        store: Outbox,
        settings: EventsSettings,
        clock: Clock,
        *,
        shared: bool,
        http: httpx.AsyncClient | None = None,
        lease: float = LEASE,
        batch: int = BATCH,
    ) -> None:
        self.store = store
        self.url = settings.url
        self.clock = clock
        self.lease = lease
        self.batch = batch
        self._shared = shared
        self._signer = StandardWebhooks.from_secrets([settings.secret.get_secret_value()])
        self._http = http
        self._timeout = settings.timeout
        self._session: aiohttp.ClientSession | None = None
        self._poke = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        """Look at the outbox now (this process wrote events to it)."""
        self._poke.set()

    async def start(self) -> None:
        if self._http is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.batch),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="cascade-notify-outbox"
        )

    async def stop(self) -> None:
        """Take no more events; let the POSTs in hand finish (each within its timeout)."""
        self._stopping = True
        self._poke.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while not self._stopping:
            self._poke.clear()
            try:
                items = await self.store.outbox_claim(
                    self.clock.now(), limit=self.batch, lease=self.lease
                )
            except CascadeError:
                log.exception("claiming outbox events failed; retrying")
                await self._park(POLL_INTERVAL)
                continue
            if items:
                try:
                    posted = await asyncio.gather(*(self._post(item) for item in items))
                    await self._mark_sent([item for item in posted if item is not None])
                except Exception:
                    # the sender must outlive any one event; the leases free what it held
                    log.exception("posting outbox events failed; going on")
                    await self._park(POLL_INTERVAL)
                continue
            try:
                wake = await self.store.outbox_next()
            except CascadeError:
                log.exception("reading the outbox's next due time failed; retrying")
                await self._park(POLL_INTERVAL)
                continue
            delay = None if wake is None else wake - self.clock.now()
            if delay is not None and delay <= 0:
                await asyncio.sleep(0)
                continue
            await self._park(delay)

    async def _park(self, delay: float | None) -> None:
        if self._shared:
            # other processes (a receiver recording receipts) add events to a shared store
            delay = POLL_INTERVAL if delay is None else min(delay, POLL_INTERVAL)
        await wait_for(self._poke, self.clock, delay)

    async def _request(self, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
        """POST `body`; the answer's status and Retry-After."""
        if self._http is not None:
            response = await self._http.post(
                self.url, content=body, headers=headers, timeout=self._timeout
            )
            return response.status_code, response.headers.get("retry-after")
        assert self._session is not None
        async with self._session.post(self.url, data=body, headers=headers) as answer:
            await answer.read()
            return answer.status, answer.headers.get("retry-after")

    async def _mark_sent(self, items: list[OutboxItem]) -> None:
        try:
            marked = await self.store.outbox_sent(items, self.clock.now())
        except CascadeError:
            log.exception("marking %d events sent failed; they will be posted again", len(items))
            return
        for item, done in zip(items, marked, strict=True):
            if not done:
                log.info("event %s was taken over by another sender", item.event.id)

    async def _post(self, item: OutboxItem) -> OutboxItem | None:
        """POST one event: the item if it got its 2xx, else None (put back to retry)."""
        body = event_body(item)
        headers = self._signer.sign(item.event.id, body)
        headers["content-type"] = "application/json"
        wait: float | None = None
        failpoints.hit("outbox.before")
        try:
            status, retry_after = await self._request(body, headers)
        except (httpx.HTTPError, aiohttp.ClientError, TimeoutError) as exc:
            problem = f"{type(exc).__name__}"
        else:
            if 200 <= status < 300:
                failpoints.hit("outbox.after")
                return item
            problem = f"HTTP {status}"
            wait = _retry_after(retry_after)
            wait = None if wait is None else min(wait, 3600.0)
        tries = item.tries + 1
        delay = max(backoff(tries), wait or 0.0)
        log.warning(
            "posting event %s (%s of delivery %s) failed: %s; try %d again in %.0f s",
            item.event.id, item.event.kind, item.event.delivery_id, problem, tries + 1, delay,
        )  # fmt: skip
        try:
            await self.store.outbox_retry(item, self.clock.now() + delay)
        except CascadeError:
            log.exception("putting event %s back failed; its lease will free it", item.event.id)
        return None


__all__ = ["BACKOFF_BASE", "BACKOFF_CAP", "OutboxSender", "backoff", "event_body"]
