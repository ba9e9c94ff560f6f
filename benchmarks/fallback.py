"""Section 4: fallback under an outage, before and after the circuit breaker opens.

The first channel's provider is down (a fake answering every send with a
transient error, "connection refused"); the second channel is a fake SMS that
accepts. Deliveries are sent one at a time; for each, the time from calling
`send` to the `sending` event of its SMS attempt (emitted once that attempt is
written to the store, just before the provider is called) is measured from
outside, on `time.perf_counter`. A delivery whose WhatsApp step was tried
counts as "before" the breaker opened; one whose WhatsApp step was skipped with
reason `circuit_open` counts as "after". Each run starts a fresh notifier (so a
closed breaker), on each store in turn.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections import defaultdict

from benchmarks._common import Options, Result, Spread, Table, Target, drop_schema, pg_url, say

RETRY = "{attempts: 3, backoff: 50ms, max_backoff: 100ms}"
BREAKER = "{failures: 5, cool_down: 10m}"
POLICY = """
store: STORE
providers:
  wa: {type: fake, channel: whatsapp, behavior: down, breaker: BREAKER}
  sms: {type: fake, channel: sms, behavior: deliver}
policies:
  p:
    ttl: 1d
    brakes: {sms_per_recipient_per_hour: null}
    steps:
      - {channel: whatsapp, providers: [wa], timeout: 10m, retry: RETRY}
      - {channel: sms, providers: [sms], wait_for: accepted}
""".replace("BREAKER", BREAKER).replace("RETRY", RETRY)


async def one_run(store: str, after: int) -> tuple[list[float], list[float]]:
    """Milliseconds send → SMS attempt: (before the breaker opened, after)."""
    from cascade_notify import Message, Notifier, Recipient, load_config
    from cascade_notify.events import Event

    notifier = Notifier(load_config(POLICY.replace("STORE", store)))
    reached: dict[str, float] = {}
    waiting: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def listen(event: Event) -> None:
        if event.kind == "sending" and event.channel == "sms":
            reached[event.delivery_id] = time.perf_counter()
            waiting[event.delivery_id].set()

    notifier.subscribe(listen)
    recipient = Recipient(id="r", whatsapp="+79161234567", sms="+79161234567")
    before_ms: list[float] = []
    after_ms: list[float] = []
    async with notifier:
        for index in range(1000):
            if len(after_ms) >= after:
                break
            started = time.perf_counter()
            delivery = await notifier.send(recipient, Message(text=f"#{index}"))
            await asyncio.wait_for(waiting[delivery.id].wait(), 30)
            elapsed = (reached[delivery.id] - started) * 1000
            stored = await notifier.get(delivery.id)
            skipped = any(s.step == 0 and s.reason == "circuit_open" for s in stored.skipped)
            (after_ms if skipped else before_ms).append(elapsed)
    return before_ms, after_ms


def run(options: Options) -> Result:
    after = 10 if options.quick else 50
    before: dict[str, list[float]] = defaultdict(list)
    after_medians: dict[str, list[float]] = defaultdict(list)
    after_all: dict[str, list[float]] = defaultdict(list)
    stores = [s for s in ("memory", "sqlite", "postgres") if options.has(s)]
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(options.runs):
            for store in stores:
                schema = f"bench_{uuid.uuid4().hex[:8]}"
                url = {
                    "memory": "memory://",
                    "sqlite": f"sqlite:///{tmp}/fallback{number}.db",
                    "postgres": pg_url(options.pg, schema),
                }[store]
                try:
                    early, late = asyncio.run(one_run(url, after))
                finally:
                    if store == "postgres":
                        drop_schema(options.pg, schema)
                before[store].extend(early)
                after_medians[store].append(Spread.of(late).median)
                after_all[store].extend(late)
                say(
                    f"  fallback run {number + 1} {store}: before {Spread.of(early).text(' ms', 1)}"
                    f", after {Spread.of(late).text(' ms', 2)}"
                )
    table = Table(
        f"4. Fallback under an outage: ms from send to the first attempt on the second channel "
        f"({options.runs} runs; {after} deliveries after the breaker opened in each)",
        [
            "store",
            "before the breaker opens (each delivery)",
            "after: median of run medians",
            "after: all deliveries",
            "p99 after",
        ],
    )
    targets = []
    for store in stores:
        late = sorted(after_all[store])
        p99 = late[min(len(late) - 1, int(0.99 * len(late)))] if late else float("nan")
        runs = Spread.of(after_medians[store])
        table.add(
            store,
            Spread.of(before[store]).text(" ms", 1),
            runs.text(" ms", 2),
            Spread.of(late).text(" ms", 2),
            f"{p99:.2f} ms",
        )
        targets.append(
            Target(
                "fallback",
                f"{store}: send → second channel < 5 ms after the breaker opens",
                f"{runs.median:.2f} ms",
                runs.median < 5.0,
            )
        )
    table.notes.append(
        f"First channel: fake WhatsApp, `behavior: down` (a transient error on every send), "
        f"`retry: {RETRY}`, `breaker: {BREAKER}`; second: fake SMS, `wait_for: accepted`. "
        "Before the breaker opens the time is the retry budget on the dead provider; after, the "
        "step is skipped (`circuit_open`) at once."
    )
    return Result([table], targets)
