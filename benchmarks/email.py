"""Section `email`: e-mails per second to aiosmtpd on loopback, the `smtp` provider
against bare aiosmtplib loops.

A loopback aiosmtpd (its own process) takes every message and counts it by the token
in its subject. Against it, each in a process of its own, at 8 in flight:

- `library`: `SmtpProvider.send()` (pool_size = in flight), composing each message
  (EmailMessage, RFC 2047 headers, Message-ID) and classifying each answer;
- `aiosmtplib, 1 connection per slot`: one `aiosmtplib.SMTP` per in-flight slot, kept
  open, `sendmail()` of bytes composed beforehand: the floor a pool can reach;
- `aiosmtplib, connect per message`: `aiosmtplib.send()` per message, a connection
  (greeting, EHLO, QUIT) each: what a naive sender does.

    python -m benchmarks.email server <max_seconds>
    python -m benchmarks.email client <kind> <port> <count> <in_flight> <tag> <max_seconds>

The server prints `{"port": N}`, then answers `{"tag": T}` on stdin with that tag's
counts until stdin closes; a client prints one JSON line: count, seconds, failures.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks._common import Child, Options, Result, Spread, Table, Target, num, ratio, say

KINDS = ("library", "aiosmtplib, 1 connection per slot", "aiosmtplib, connect per message")
IN_FLIGHT = 8
WARM = 16
SENDER = "notify@shop.example.com"
RECIPIENT = "anna@example.org"
TOKEN = re.compile(rb"bench-([0-9a-z]+)-([0-9]+)")


def subject(tag: str, index: int) -> str:
    return f"Your parcel bench-{tag}-{index} has arrived"


TEXT = "Your parcel has arrived at the pick-up point on Lenina 1. It is kept for 7 days.\n" * 4


# the server (its own process)


async def server_main(max_seconds: float) -> None:
    from aiosmtpd.smtp import SMTP

    counts: defaultdict[bytes, Counter[int]] = defaultdict(Counter)

    class Counting:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            found = TOKEN.search(envelope.original_content or b"")
            if found:
                counts[found.group(1)][int(found.group(2))] += 1
            return "250 2.0.0 OK: queued"

    loop = asyncio.get_running_loop()
    handler = Counting()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench.invalid"), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()
    done = asyncio.Event()
    fd = sys.stdin.fileno()
    pending = b""

    def readable() -> None:
        nonlocal pending
        chunk = os.read(fd, 65536)
        if not chunk:
            loop.remove_reader(fd)
            done.set()
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            tag = json.loads(line)["tag"].encode()
            seen = counts.get(tag, Counter())
            answer = {"distinct": len(seen), "messages": sum(seen.values())}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()

    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(done.wait(), max_seconds)
    except TimeoutError:
        loop.remove_reader(fd)
    server.close()


# the clients (each in its own process)


def provider(port: int, pool_size: int) -> Any:
    from cascade_notify.providers.email import SmtpProvider, SmtpSettings

    settings = SmtpSettings(
        host="127.0.0.1",
        port=port,
        tls="none",
        from_addr=f"Shop <{SENDER}>",
        pool_size=pool_size,
        local_hostname="bench.client",
        max_per_connection=1_000_000,
    )
    return SmtpProvider("mail", settings)


def requests(tag: str, count: int) -> list[Any]:
    from cascade_notify import Message, Recipient
    from cascade_notify.models import new_id
    from cascade_notify.providers.base import SendRequest
    from cascade_notify.providers.email import EmailOverrides

    recipient = Recipient(id="anna", email=RECIPIENT)
    return [
        SendRequest(
            attempt_id=new_id(),
            delivery_id=new_id(),
            channel="email",
            address=RECIPIENT,
            recipient=recipient,
            message=Message(text=TEXT, subject=subject(tag, i)),
            overrides=EmailOverrides(),
        )
        for i in range(count)
    ]


async def pool_loop(
    send: Callable[[Any], Awaitable[bool]], items: list[Any], in_flight: int
) -> tuple[float, int]:
    queue = iter(items)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for item in queue:
            failures += not await send(item)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started, failures


async def library(port: int, count: int, in_flight: int, tag: str) -> tuple[float, int]:
    mail = provider(port, in_flight)
    await mail.start()

    async def send(request: Any) -> bool:
        await mail.send(request)
        return True

    try:
        await pool_loop(send, requests("warm", WARM), in_flight)
        return await pool_loop(send, requests(tag, count), in_flight)
    finally:
        await mail.aclose()


async def bare(
    port: int, count: int, in_flight: int, tag: str, per_message: bool
) -> tuple[float, int]:
    import aiosmtplib

    composer = provider(port, 1)  # the provider's own bytes, composed before the clock starts

    def prepared(label: str, n: int) -> list[bytes]:
        return [composer.compose(r).data for r in requests(label, n)]

    if per_message:

        async def send(data: bytes) -> bool:
            await aiosmtplib.send(
                data,
                sender=SENDER,
                recipients=[RECIPIENT],
                hostname="127.0.0.1",
                port=port,
                start_tls=False,
                local_hostname="bench.client",
            )
            return True

        await pool_loop(send, prepared("warm", WARM), in_flight)
        return await pool_loop(send, prepared(tag, count), in_flight)

    clients = [
        aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=False, local_hostname="bench.client"
        )
        for _ in range(in_flight)
    ]
    for client in clients:
        await client.connect()
    free = list(clients)

    async def send_pooled(data: bytes) -> bool:
        client = free.pop()
        try:
            await client.sendmail(SENDER, [RECIPIENT], data)
        finally:
            free.append(client)
        return True

    try:
        await pool_loop(send_pooled, prepared("warm", WARM), in_flight)
        return await pool_loop(send_pooled, prepared(tag, count), in_flight)
    finally:
        for client in clients:
            await client.quit()


def client_main(argv: list[str]) -> None:
    kind, port, count, in_flight, tag, max_seconds = argv
    p, n, c = int(port), int(count), int(in_flight)
    if kind == KINDS[0]:
        work = library(p, n, c, tag)
    else:
        work = bare(p, n, c, tag, per_message=kind == KINDS[2])
    seconds, failures = asyncio.run(asyncio.wait_for(work, float(max_seconds)))
    sys.stdout.write(json.dumps({"count": n, "seconds": seconds, "failures": failures}) + "\n")


# the section (in the runner)


def run(options: Options) -> Result:
    count = 200 if options.quick else 2000
    rates: dict[str, list[float]] = defaultdict(list)
    problems: list[str] = []
    server = Child("email", "server", 3600)
    try:
        port = int(server.read(30)["port"])
        for run_number in range(options.runs):
            for index, kind in enumerate(KINDS):
                tag = f"r{run_number}k{index}p{os.getpid()}"
                with Child("email", "client", kind, port, count, IN_FLIGHT, tag, 300) as child:
                    found = child.read(320)
                rates[kind].append(found["count"] / found["seconds"])
                seen = server.ask({"tag": tag}, 30)
                if seen["distinct"] != count or seen["messages"] != count or found["failures"]:
                    problems.append(
                        f"{kind} (run {run_number + 1}): {seen['distinct']} distinct of "
                        f"{count}, {seen['messages']} received, {found['failures']} failed"
                    )
                say(f"  email run {run_number + 1} {kind:<34} {rates[kind][-1]:7.0f} mails/s")
    finally:
        server.close()

    table = Table(
        f"E-mail: messages/s to aiosmtpd on loopback, {IN_FLIGHT} in flight, {count:,} per "
        f"run, median (min–max) of {options.runs} runs",
        ["client", "mails/s", "library ÷ this", "µs/mail"],
    )
    ours = Spread.of(rates[KINDS[0]]).median
    for kind in KINDS:
        spread = Spread.of(rates[kind])
        table.add(
            kind,
            spread.text(),
            "—" if kind == KINDS[0] else ratio(ours, spread.median),
            num(1e6 / spread.median, 0),
        )
    table.notes.append(
        "The bare loops send bytes the provider composed before their clock started; the "
        "library composes each message (headers, RFC 2047, Message-ID) on the clock. "
        "Server check: every message counted once: "
        + ("yes." if not problems else "NO: " + "; ".join(problems))
    )
    pooled = Spread.of(rates[KINDS[1]]).median
    per_message = Spread.of(rates[KINDS[2]]).median
    targets = [
        Target(
            "email",
            "library ≥ 0.8× aiosmtplib with one connection per slot",
            ratio(ours, pooled),
            ours >= 0.8 * pooled,
        ),
        Target(
            "email",
            "library ≥ 1.5× aiosmtplib connecting per message",
            ratio(ours, per_message),
            ours >= 1.5 * per_message,
        ),
        Target("email", "every message counted once", f"{len(problems)} runs wrong", not problems),
    ]
    return Result([table], targets)


if __name__ == "__main__":
    if sys.argv[1:2] == ["server"]:
        asyncio.run(server_main(float(sys.argv[2])))
    else:
        client_main(sys.argv[2:])
