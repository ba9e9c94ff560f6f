"""Section 2: messages per second over real HTTP, the library against bare clients.

A loopback sink (`benchmarks._sink`, its own process) answers every POST like a
provider API (200 and a small JSON body) and counts each message by the token
in its text. Against it, each in a process of its own, at the same number of
requests in flight:

- `library`: `Notifier` (memory store, `worker.concurrency` = in flight) sending
  deliveries whose one step is the `webhook` provider posting to the sink
  (`wait_for: accepted`), default transport; send → HTTP POST → final;
- `library sqlite`: the same on the default embedded store, a SQLite file in a fresh
  temporary directory (WAL, synchronous=FULL): what most users run;
- `httpx`: a bare pooled `httpx.AsyncClient()` (default transport, httpcore)
  posting the same bodies with the same headers, prepared beforehand: the floor;
- `httpx+aiohttp`: the same loop on `httpx_aiohttp.HttpxAiohttpClient`, the
  transport the library defaults to;
- `apprise`: `Apprise.notify()` to `json://` the sink, in as many threads;
- `raw asyncio`: a hand-written HTTP/1.1 client on asyncio streams: the ceiling
  of this sink and loopback.

    python -m benchmarks.over_http <kind> <url> <count> <in_flight> <tag> <max_seconds>

is one client process (it prints one JSON line: count, seconds, failures).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks._common import Child, Options, Result, Spread, Table, Target, num, ratio, say

KINDS = ("library", "library sqlite", "httpx", "httpx+aiohttp", "apprise", "raw asyncio")
SECRET = "whsec_" + base64.b64encode(b"benchmark-secret-key-32-bytes!!!").decode()
#: The default store's targets (issue 13): times the bare httpx floor, by requests in flight.
SQLITE_TARGETS = {8: 2.0, 64: 6.0}
WARM = 20  # requests each client makes before its clock starts (connections, imports)
POLICY = """
store: {store}
worker: {{concurrency: {in_flight}, batch: 100}}
providers:
  app: {{type: webhook, url: "{url}", secret: "{secret}"}}
policies:
  p:
    steps:
      - {{channel: app, providers: [app], wait_for: accepted, timeout: 10m}}
"""


def text(tag: str, index: int) -> str:
    return f"Your parcel bench-{tag}-{index} has arrived at the pick-up point"


# the clients (in their own processes)


async def library(
    url: str, count: int, in_flight: int, tag: str, store: str = "memory://"
) -> tuple[float, int]:
    from cascade_notify import Message, Notifier, Recipient, load_config

    policy = POLICY.format(store=store, in_flight=in_flight, url=url, secret=SECRET)
    notifier = Notifier(load_config(policy))
    recipient = Recipient(id="u1", app="device-1")
    finished: dict[str, int] = defaultdict(int)
    done = asyncio.Event()
    target = WARM

    def count_finished(event: Any) -> None:
        if event.kind == "finished":
            finished[event.status] += 1
            if sum(finished.values()) >= target:
                done.set()

    notifier.subscribe(count_finished)

    async def burst(first: int, last: int, label: str) -> None:
        for start in range(first, last, 100):
            chunk = range(start, min(last, start + 100))
            await asyncio.gather(
                *(notifier.send(recipient, Message(text=text(label, i))) for i in chunk)
            )

    async with notifier:
        await burst(0, WARM, "warm")
        await asyncio.wait_for(done.wait(), 60)
        finished.clear()
        done.clear()
        target = count
        started = time.perf_counter()
        await burst(0, count, tag)
        await done.wait()
        seconds = time.perf_counter() - started
    return seconds, count - finished["delivered"]


def prepared(url: str, count: int, tag: str) -> list[tuple[bytes, dict[str, str]]]:
    """The bodies and headers the `webhook` provider would post for these messages."""
    from cascade_notify import Message, Recipient
    from cascade_notify.models import new_id
    from cascade_notify.providers.base import SendRequest
    from cascade_notify.providers.webhook import WebhookProvider, WebhookSettings

    provider = WebhookProvider("app", WebhookSettings(url=url, secret=SECRET))  # type: ignore[arg-type]
    recipient = Recipient(id="u1", app="device-1")
    out = []
    now = time.time()
    for index in range(count):
        request = SendRequest(
            attempt_id=new_id(),
            delivery_id=new_id(),
            channel="app",
            address="device-1",
            recipient=recipient,
            message=Message(text=text(tag, index)),
        )
        body = provider._body(request, now)  # the provider's own encoding, the same bytes
        headers = {
            "content-type": "application/json",
            **provider.signed_headers(request.attempt_id, body, int(now)),
        }
        out.append((body, headers))
    return out


async def pool_loop(
    post: Callable[[bytes, dict[str, str]], Awaitable[int]],
    requests: list[tuple[bytes, dict[str, str]]],
    in_flight: int,
) -> tuple[float, int]:
    queue = iter(requests)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for body, headers in queue:
            failures += await post(body, headers) != 200

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started, failures


async def httpx_client(
    url: str, count: int, in_flight: int, tag: str, aiohttp: bool
) -> tuple[float, int]:
    import httpx

    if aiohttp:
        from httpx_aiohttp import HttpxAiohttpClient

        client: httpx.AsyncClient = HttpxAiohttpClient()
    else:
        client = httpx.AsyncClient()

    async def post(body: bytes, headers: dict[str, str]) -> int:
        response = await client.post(url, content=body, headers=headers)
        return response.status_code

    async with client:
        await pool_loop(post, prepared(url, WARM, "warm"), min(in_flight, WARM))
        return await pool_loop(post, prepared(url, count, tag), in_flight)


async def raw_client(url: str, count: int, in_flight: int, tag: str) -> tuple[float, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for _ in range(in_flight):
        connections.append(await asyncio.open_connection(host, port))

    def encode(body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {parts.path} HTTP/1.1", f"host: {host}:{port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"content-length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    free = list(connections)

    async def post(body: bytes, headers: dict[str, str]) -> int:
        reader, writer = free.pop()
        try:
            writer.write(encode(body, headers))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            return status
        finally:
            free.append((reader, writer))

    try:
        await pool_loop(post, prepared(url, WARM, "warm"), min(in_flight, WARM))
        return await pool_loop(post, prepared(url, count, tag), in_flight)
    finally:
        for _, writer in connections:
            writer.close()


def apprise_client(url: str, count: int, in_flight: int, tag: str) -> tuple[float, int]:
    from concurrent.futures import ThreadPoolExecutor

    import apprise

    notifier = apprise.Apprise()
    notifier.add(url.replace("http://", "json://", 1))

    def one(label: str, index: int) -> bool:
        return bool(notifier.notify(body=text(label, index), title="Parcel"))

    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(lambda i: one("warm", i), range(WARM)))
        started = time.perf_counter()
        results = list(pool.map(lambda i: one(tag, i), range(count)))
        seconds = time.perf_counter() - started
    return seconds, results.count(False)


def client_main(argv: list[str]) -> None:
    kind, url, count, in_flight, tag, max_seconds = argv
    n, c = int(count), int(in_flight)

    async def bounded(work: Awaitable[tuple[float, int]]) -> tuple[float, int]:
        return await asyncio.wait_for(work, float(max_seconds))

    if kind == "library":
        seconds, failures = asyncio.run(bounded(library(url, n, c, tag)))
    elif kind == "library sqlite":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            store = f"sqlite:///{tmp}/bench.db"
            seconds, failures = asyncio.run(bounded(library(url, n, c, tag, store)))
    elif kind in ("httpx", "httpx+aiohttp"):
        seconds, failures = asyncio.run(
            bounded(httpx_client(url, n, c, tag, aiohttp=kind == "httpx+aiohttp"))
        )
    elif kind == "raw asyncio":
        seconds, failures = asyncio.run(bounded(raw_client(url, n, c, tag)))
    elif kind == "apprise":
        seconds, failures = apprise_client(url, n, c, tag)
    else:
        raise SystemExit(f"unknown client {kind!r}")
    sys.stdout.write(json.dumps({"count": n, "seconds": seconds, "failures": failures}) + "\n")


# the section (in the runner)


def sink_stats(port: int, tag: str) -> dict[str, int]:
    import httpx

    answer: dict[str, int] = httpx.get(f"http://127.0.0.1:{port}/-/stats/{tag}", timeout=10).json()
    return answer


def run(options: Options) -> Result:
    count = 300 if options.quick else 3000
    levels = options.concurrency
    kinds = [k for k in KINDS if k != "apprise" or _has_apprise()]
    rates: dict[tuple[int, str], list[float]] = defaultdict(list)
    problems: list[str] = []
    checked = 0
    sink = Child("_sink", 3600)
    try:
        port = int(sink.read(30)["port"])
        url = f"http://127.0.0.1:{port}/inbox"
        for run_number in range(options.runs):
            for in_flight in levels:
                for kind in kinds:
                    tag = f"r{run_number}c{in_flight}k{KINDS.index(kind)}{os.getpid()}"
                    # Apprise is slow: give every client the same count, but a time bound fit
                    # for the slowest
                    child = Child(
                        "over_http", kind, url, count, in_flight, tag, 120 if options.quick else 600
                    )
                    try:
                        found = child.read(700)
                    finally:
                        child.close()
                    rates[in_flight, kind].append(found["count"] / found["seconds"])
                    seen = sink_stats(port, tag)
                    checked += 1
                    lost = count - seen["distinct"]
                    doubled = seen["requests"] - seen["distinct"]
                    if lost or doubled or found["failures"] or seen["top_index"] != count - 1:
                        problems.append(
                            f"{kind} at {in_flight} (run {run_number + 1}): {lost} lost, "
                            f"{doubled} doubled, {found['failures']} failed"
                        )
                    say(
                        f"  http run {run_number + 1} in flight {in_flight:>2} {kind:<14} "
                        f"{rates[in_flight, kind][-1]:8.0f} msgs/s  sink: {seen['requests']} "
                        f"requests, {seen['distinct']} distinct"
                    )
    finally:
        sink.close()

    table = Table(
        f"2. Over real HTTP: messages/s to a loopback sink, {count:,} per run, "
        f"median (min–max) of {options.runs} runs",
        ["in flight", "client", "msgs/s", "library ÷ this", "µs/msg"],
    )
    targets: list[Target] = []
    for in_flight in levels:
        ours = Spread.of(rates[in_flight, "library"])
        for kind in kinds:
            spread = Spread.of(rates[in_flight, kind])
            table.add(
                in_flight,
                kind,
                spread.text(),
                "—" if kind == "library" else ratio(ours.median, spread.median),
                num(1e6 / spread.median, 0),
            )
        floor = Spread.of(rates[in_flight, "httpx"]).median
        need = 2.0 if in_flight < 32 else 4.0
        targets.append(
            Target(
                "http",
                f"library ≥ {need:g}× bare httpx at {in_flight} in flight",
                ratio(ours.median, floor),
                ours.median >= need * floor,
            )
        )
        if in_flight in SQLITE_TARGETS:
            embedded = Spread.of(rates[in_flight, "library sqlite"]).median
            need = SQLITE_TARGETS[in_flight]
            targets.append(
                Target(
                    "http",
                    f"library on SQLite ≥ {need:g}× bare httpx at {in_flight} in flight",
                    ratio(embedded, floor),
                    embedded >= need * floor,
                )
            )
        if "apprise" in kinds:
            theirs = Spread.of(rates[in_flight, "apprise"]).median
            targets.append(
                Target(
                    "http",
                    f"library ≥ 3.5× Apprise notify() at {in_flight} in flight",
                    ratio(ours.median, theirs),
                    ours.median >= 3.5 * theirs,
                )
            )
    table.notes.append(
        f"Sink check: {checked} client runs of {count:,} messages, every message counted at the "
        "sink exactly once: "
        + ("yes, none lost, none doubled." if not problems else "NO: " + "; ".join(problems))
    )
    if "apprise" not in kinds:
        table.notes.append("Apprise is not installed (pip install 'cascade-notify[bench]').")
    targets.append(
        Target(
            "http",
            "every message counted once at the sink",
            f"{checked} runs, {len(problems)} with a message lost or doubled",
            not problems,
        )
    )
    return Result([table], targets)


def _has_apprise() -> bool:
    try:
        import apprise  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    client_main(sys.argv[1:])
