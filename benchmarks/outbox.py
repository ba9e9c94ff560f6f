"""Section: what outcome webhooks (`events:`) cost the engine, on each store.

The engine figure of `bench_stores.py` (deliveries sent 100 at a time, one step, a
fake WhatsApp that accepts and reports `delivered` at once; deliveries over the time
from the first `send` to the last delivery final), three ways, taking turns run by run
on a fresh store each:

- `no events`: no `events:`;
- `posted here`: `events:` with every kind (three events a delivery: the attempt, its
  receipt, the end), posted by the same notifier's outbox sender to a loopback sink in
  its own process (`benchmarks._sink`, answering 200);
- `posted apart`: the same events written by the engine's notifier (`outbox=False`)
  and posted by a process of its own on the store (`Notifier(worker=False,
  outbox=True)`); on the memory store, which no other process can read, they are
  written and not posted: the cost of the outbox's writes alone.

Beside each way with events, the time until the outbox is empty (every event posted).

Target: the outbox adds under 15% to the engine's time per delivery on every store.

    python -m benchmarks.outbox sender STORE_URL EVENTS_URL

is the process that only posts (until its stdin closes).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import tempfile
import time
import uuid

from benchmarks._common import (
    Child,
    Options,
    Result,
    Spread,
    Table,
    Target,
    drop_schema,
    pg_url,
    say,
)

POLICY = """
store: {store}
providers:
  wa: {{type: fake, channel: whatsapp, behavior: deliver}}
policies:
  p: {{ttl: 2d, steps: [{{channel: whatsapp, providers: [wa], timeout: 1d}}]}}
"""
EVENTS = 'events: {{url: "{url}", secret: "{secret}"}}\n'
SECRET = "whsec_" + base64.b64encode(b"b" * 32).decode()
WAYS = ("no events", "posted here", "posted apart")


def _policy(store: str, events_url: str | None) -> str:
    text = POLICY.format(store=store)
    if events_url is not None:
        text += EVENTS.format(url=events_url, secret=SECRET)
    return text


async def timed(
    store: str, n: int, events_url: str | None, *, here: bool = True
) -> tuple[float, float | None]:
    """Deliveries per second to the last one final; with events, also until the outbox
    is empty (None without, or when nobody posts them)."""
    from cascade_notify import Message, Notifier, Recipient, load_config
    from cascade_notify.events import Event
    from cascade_notify.stores.base import Outbox

    notifier = Notifier(load_config(_policy(store, events_url)), outbox=here)
    seen = 0
    done = asyncio.Event()

    def count(event: Event) -> None:
        nonlocal seen
        if event.kind == "finished":
            seen += 1
            if seen == n:
                done.set()

    notifier.subscribe(count)
    who = Recipient(id="r", whatsapp="+79161234567")
    async with notifier:
        started = time.perf_counter()
        for first in range(0, n, 100):
            chunk = range(first, min(n, first + 100))
            await asyncio.gather(*(notifier.send(who, Message(text=f"#{i}")) for i in chunk))
        await done.wait()
        engine = n / (time.perf_counter() - started)
        drained = None
        if events_url is not None and (here or not store.startswith("memory")):
            outbox = notifier.store
            assert isinstance(outbox, Outbox)
            while await outbox.outbox_next() is not None:  # noqa: ASYNC110 - polling the store
                await asyncio.sleep(0.01)
            drained = n / (time.perf_counter() - started)
    return engine, drained


def run(options: Options) -> Result:
    n = 500 if options.quick else 5_000
    stores = [s for s in ("memory", "sqlite", "postgres") if options.has(s)]
    rates: dict[tuple[str, str], list[float]] = {}
    drained: dict[tuple[str, str], list[float]] = {}
    sink = Child("_sink", 3600)
    try:
        url = f"http://127.0.0.1:{int(sink.read(30)['port'])}/events"
        with tempfile.TemporaryDirectory() as tmp:
            for store in stores:
                for number in range(options.runs):
                    for way in WAYS:
                        schema = f"bench_{uuid.uuid4().hex[:8]}"
                        store_url = {
                            "memory": "memory://",
                            "sqlite": f"sqlite:///{tmp}/outbox-{number}-{WAYS.index(way)}.db",
                            "postgres": pg_url(options.pg, schema) if store == "postgres" else "",
                        }[store]
                        apart = way == "posted apart" and store != "memory"
                        poster = None
                        try:
                            if apart:
                                asyncio.run(_create(store_url))
                                poster = Child("outbox", "sender", store_url, url)
                                poster.read(30)
                            engine, empty = asyncio.run(
                                timed(
                                    store_url,
                                    n,
                                    None if way == "no events" else url,
                                    here=way == "posted here",
                                )
                            )
                        finally:
                            if poster is not None:
                                poster.close()
                            if store == "postgres":
                                drop_schema(options.pg, schema)
                        rates.setdefault((store, way), []).append(engine)
                        if empty is not None:
                            drained.setdefault((store, way), []).append(empty)
                        say(f"  outbox run {number + 1} {store} {way}: {engine:.0f}/s")
    finally:
        sink.close()
    table = Table(
        f"Outcome webhooks: engine deliveries per second without and with `events:` "
        f"({options.runs} runs of {n} deliveries, three events each)",
        ["store", *WAYS, "here adds", "apart adds", "all posted: here", "apart"],
    )
    targets = []
    for store in stores:
        spreads = {way: Spread.of(rates[(store, way)]) for way in WAYS}
        floor = spreads["no events"].median
        here = (floor / spreads["posted here"].median - 1) * 100
        apart = (floor / spreads["posted apart"].median - 1) * 100
        table.add(
            store,
            *(spreads[w].text("/s") for w in WAYS),
            f"{here:+.1f}%",
            f"{apart:+.1f}%",
            Spread.of(drained.get((store, "posted here"), [])).text("/s"),
            Spread.of(drained.get((store, "posted apart"), [])).text("/s"),
        )
        for way, added in (("posted here", here), ("posted apart", apart)):
            targets.append(
                Target("outbox", f"{store}, {way}: events add < 15% to the engine",
                       f"{added:+.1f}%", added < 15.0)
            )  # fmt: skip
    table.notes.append(
        "`adds`: how much longer a delivery takes the engine with `events:` (time per "
        "delivery, medians). `all posted`: deliveries over the time until the last of "
        "their events got its 2xx from the sink (n/a: not posted, the memory store's "
        "`posted apart` measures the outbox's writes alone)."
    )
    return Result([table], targets)


async def _create(store_url: str) -> None:
    """Make the store's schema before two processes open it at once."""
    from cascade_notify.stores import open_store

    store = open_store(store_url)
    await store.open()
    await store.close()


async def _sender(store_url: str, events_url: str) -> None:
    from cascade_notify import Notifier, load_config

    async with Notifier(load_config(_policy(store_url, events_url)), worker=False, outbox=True):
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    if sys.argv[1:2] == ["sender"]:
        asyncio.run(_sender(sys.argv[2], sys.argv[3]))
