"""Section `polling`: what one worker's status polling costs, in CPU, for SMS waiting on a
polled gateway.

N messages (100,000; 2,000 with `--quick`) are sent through `smsc` (polled, batches of
`poll_batch` = 100 ids per `status.php` call, `poll_interval` 60 s) to the loopback sink
of `benchmarks._api_sink`, which answers every status "still waiting" (-1), so every
message is asked about again each interval, the worst case. The notifier runs on a
`FakeClock` and the memory store, in a process of its own; after the sends, the clock is
moved on by one poll interval and the process's CPU time (`time.process_time`) for the
whole cycle is measured: every delivery woken by its timer, decided, its poll requested
and batched, the status calls made and answered. The sink is another process, so its CPU
is not counted.

    CPU share of one core = CPU seconds per cycle / 60 s

    python -m benchmarks.polling_cost <port> <count>

is the client process (it prints one JSON line).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from benchmarks._common import Child, Options, Result, Table, Target, num, say

INTERVAL = 60.0
POLICY = """
store: memory://
worker: {{concurrency: 200, batch: 500}}
providers:
  smsc: {{type: smsc, login: emulator, password: emulator-password,
         api_url: "http://127.0.0.1:{port}", poll_interval: {interval}}}
policies:
  p:
    steps:
      - {{channel: sms, providers: [smsc], wait_for: delivered, timeout: 2h}}
"""


async def client(port: int, count: int) -> dict[str, Any]:
    from cascade_notify import Message, Notifier, Recipient, load_config
    from cascade_notify.models import AttemptStatus
    from cascade_notify.testing import FakeClock

    clock = FakeClock()
    notifier = Notifier(load_config(POLICY.format(port=port, interval=INTERVAL)), clock=clock)
    provider: Any = notifier.providers["smsc"]
    calls = 0
    asked = 0
    poll = provider.poll

    async def counted(ids: Any) -> Any:
        nonlocal calls, asked
        calls += 1
        asked += len(ids)
        return await poll(ids)

    provider.poll = counted

    async def quiet() -> None:
        """Until nothing is in flight: no request on a socket, no poll queued."""
        poller: Any = notifier._poller
        while True:
            await clock.settle()
            if provider._in_flight == 0 and poller.pending("smsc") == 0:
                return
            await asyncio.sleep(0.002)

    async with notifier:
        ids = []
        for start in range(0, count, 500):
            chunk = range(start, min(count, start + 500))
            sent = await asyncio.gather(
                *(
                    # one number each: the brakes against SMS pumping cap sends per number
                    notifier.send(
                        Recipient(id=f"u{i}", sms=f"+7916{i:07d}"),
                        Message(text=f"Parcel bench-p-{i} is here"),
                    )
                    for i in chunk
                )
            )
            ids += [d.id for d in sent]
        while True:  # every send answered: each attempt accepted, waiting for a receipt
            await clock.advance(0.01)  # the worker runs on the fake clock
            await quiet()
            states = [await notifier.get(i) for i in ids[-50:]]
            if all(d.attempts and d.attempts[-1].status is AttemptStatus.ACCEPTED for d in states):
                break
        cycles = []
        for _ in range(2):  # the first cycle warms up; the second is measured
            before, started, calls, asked = time.process_time(), time.perf_counter(), 0, 0
            await clock.advance(INTERVAL)
            await quiet()
            cycles.append(
                {
                    "cpu": time.process_time() - before,
                    "wall": time.perf_counter() - started,
                    "calls": calls,
                    "asked": asked,
                }
            )
    return {"count": count, "cycle": cycles[-1]}


def client_main(argv: list[str]) -> None:
    port, count = map(int, argv)
    result = asyncio.run(client(port, count))
    sys.stdout.write(json.dumps(result) + "\n")


def run(options: Options) -> Result:
    count = 2_000 if options.quick else 100_000
    sink = Child("_api_sink", 3600)
    try:
        port = int(sink.read(30)["port"])
        child = Child("polling_cost", port, count)
        try:
            found = child.read(120 if options.quick else 1800)
        finally:
            child.close()
    finally:
        sink.close()
    cycle = found["cycle"]
    share = cycle["cpu"] / INTERVAL
    say(
        f"  polling {count:,} SMS: {cycle['calls']} status calls asking {cycle['asked']:,} ids, "
        f"{cycle['cpu']:.2f} s CPU per {INTERVAL:.0f} s interval"
    )
    table = Table(
        f"polling: one worker's CPU for {count:,} SMS awaiting a status on `smsc` "
        f"(status.php, {INTERVAL:.0f} s poll interval, every answer still waiting)",
        ["messages", "status calls / cycle", "ids / call", "CPU s / cycle", "share of a core"],
    )
    per_call = cycle["asked"] / cycle["calls"] if cycle["calls"] else 0
    table.add(
        f"{count:,}",
        cycle["calls"],
        num(per_call, 0),
        num(cycle["cpu"], 2),
        f"{share:.1%}",
    )
    table.notes.append(
        "One poll cycle on a FakeClock moved on by the interval: timers, claims, decisions, "
        "batched status calls over loopback HTTP; the sink's CPU is another process's."
    )
    targets = [
        Target(
            "polling",
            "status calls batch the ids the API takes per call (100)",
            f"{per_call:.0f} ids per call",
            cycle["calls"] > 0 and per_call >= min(100, count) * 0.9,
        ),
        Target(
            "polling",
            f"one worker's polling < 5% of a core at {INTERVAL:.0f} s ({count:,} SMS)",
            f"{share:.1%}",
            share < 0.05,
        ),
    ]
    return Result([table], targets)


if __name__ == "__main__":
    client_main(sys.argv[1:])
