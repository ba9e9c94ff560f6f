"""Section `polling`: what one worker's status polling costs, in CPU, for SMS waiting on a
polled gateway.

N messages (100,000; 2,000 with `--quick`) are sent through `smsc` (polled, batches of
`poll_batch` = 100 ids per `status.php` call, `poll_interval` 60 s) to the loopback sink
of `benchmarks._api_sink`, which answers every status "still waiting" (-1), so every
message is asked about again each interval, the worst case. The notifier runs on a
`FakeClock` and the memory store, in a process of its own; after the sends and one
warm-up interval, the process's CPU time (`time.process_time`) over a whole rearm period
(`engine.REARM_INTERVALS` intervals) is measured and averaged per interval: the poller's
own status calls every interval, and the one interval in which every delivery's
safety-net timer comes due in the store and hands its attempt over again. The sink is
another process, so its CPU is not counted.

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
    from cascade_notify.engine import REARM_INTERVALS
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
        # the first cycle warms up (every delivery hands its attempt to the poller); then
        # a whole rearm period is measured, its cycles of polling alone and the one in
        # which every delivery's safety-net timer comes due, and averaged per interval
        await clock.advance(INTERVAL)
        await quiet()
        before, started, calls, asked = time.process_time(), time.perf_counter(), 0, 0
        for _ in range(REARM_INTERVALS):
            await clock.advance(INTERVAL)
            await quiet()
        cycle = {
            "cpu": (time.process_time() - before) / REARM_INTERVALS,
            "wall": (time.perf_counter() - started) / REARM_INTERVALS,
            "calls": calls / REARM_INTERVALS,
            "asked": asked / REARM_INTERVALS,
        }
    return {"count": count, "cycle": cycle}


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
        f"  polling {count:,} SMS: {cycle['calls']:.0f} status calls asking "
        f"{cycle['asked']:,.0f} ids, "
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
        num(cycle["calls"], 0),
        num(per_call, 0),
        num(cycle["cpu"], 2),
        f"{share:.1%}",
    )
    table.notes.append(
        "Per interval, averaged over a rearm period on a FakeClock: the poller's batched "
        "status calls over loopback HTTP every interval, and once per period every "
        "delivery's safety-net timer (claim, decision, write); the sink's CPU is another "
        "process's."
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
