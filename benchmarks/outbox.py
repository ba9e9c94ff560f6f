"""Section: what outcome webhooks (`events:`) cost the engine, on each store.

The engine figure of `bench_stores.py` (deliveries sent 100 at a time, one step, a
fake WhatsApp that accepts and reports `delivered` at once; deliveries over the time
from the first `send` to the last delivery final), run without `events:` and with
`events:` posting every kind (three events a delivery: the attempt, its receipt, the
end) to a loopback sink in its own process (`benchmarks._sink`, answering 200). The
two ways take turns run by run on a fresh store each. With `events:`, the time until
the outbox is empty (every event posted) is reported beside it.

Target: the outbox adds under 15% to the engine's time per delivery on every store.
"""

from __future__ import annotations

import asyncio
import base64
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
WAYS = ("no events", "events")


async def timed(store: str, n: int, events_url: str | None) -> tuple[float, float | None]:
    """Deliveries per second to the last one final; with events, also until the outbox
    is empty (None without)."""
    from cascade_notify import Message, Notifier, Recipient, load_config
    from cascade_notify.events import Event
    from cascade_notify.stores.base import Outbox

    text = POLICY.format(store=store)
    if events_url is not None:
        text += EVENTS.format(url=events_url, secret=SECRET)
    notifier = Notifier(load_config(text))
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
        if events_url is not None:
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
    drained: dict[str, list[float]] = {}
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
                            "sqlite": f"sqlite:///{tmp}/outbox-{number}-{way[0]}.db",
                            "postgres": pg_url(options.pg, schema) if store == "postgres" else "",
                        }[store]
                        try:
                            engine, empty = asyncio.run(
                                timed(store_url, n, url if way == "events" else None)
                            )
                        finally:
                            if store == "postgres":
                                drop_schema(options.pg, schema)
                        rates.setdefault((store, way), []).append(engine)
                        if empty is not None:
                            drained.setdefault(store, []).append(empty)
                        say(f"  outbox run {number + 1} {store} {way}: {engine:.0f}/s")
    finally:
        sink.close()
    table = Table(
        f"Outcome webhooks: engine deliveries per second without and with `events:` "
        f"({options.runs} runs of {n} deliveries, three events each)",
        ["store", *WAYS, "outbox adds", "events all posted"],
    )
    targets = []
    for store in stores:
        spreads = {way: Spread.of(rates[(store, way)]) for way in WAYS}
        added = (spreads["no events"].median / spreads["events"].median - 1) * 100
        table.add(
            store,
            *(spreads[w].text("/s") for w in WAYS),
            f"{added:+.1f}%",
            Spread.of(drained[store]).text("/s"),
        )
        targets.append(
            Target("outbox", f"{store}: events add < 15% to the engine", f"{added:+.1f}%",
                   added < 15.0)
        )  # fmt: skip
    table.notes.append(
        "`outbox adds`: how much longer a delivery takes the engine with `events:` (time "
        "per delivery, medians). `events all posted`: deliveries over the time until the "
        "last of their events got its 2xx from the sink."
    )
    return Result([table], targets)
