"""Section telegram: messages per second through `telegram_bot` to the Telegram emulator.

The `TelegramEmulator` runs in a process of its own (real time) and answers every
`sendMessage` with the Bot API's success body; a stats route counts, per chat, the
requests and the distinct messages (`bench-<tag>-<index>` in the text). Against it,
each in a process of its own, at the same number of requests in flight:

- `library`: `Notifier` (memory store, `worker.concurrency` = in flight) sending
  deliveries whose one step is `telegram_bot` (`wait_for: accepted`): send → PTB's
  `Bot.send_message` → HTTP → final;
- `provider`: `TelegramProvider.send()` in a loop, no engine: what the provider costs;
- `bare PTB`: `telegram.Bot.send_message` in a loop on PTB's own `HTTPXRequest` (its
  pool as large as the requests in flight);
- `httpx`: a bare pooled `httpx.AsyncClient()` posting the same form-encoded
  `sendMessage` bodies, prepared beforehand: the floor.

    python -m benchmarks.telegram serve <max_seconds>
    python -m benchmarks.telegram <kind> <api_url> <chat> <count> <in_flight> <tag> <max_seconds>

are the emulator and one client process (it prints one JSON line).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from typing import Any

from benchmarks._common import (
    Child,
    Options,
    Result,
    Spread,
    Table,
    Target,
    num,
    ratio,
    say,
    stdin_closed,
)

KINDS = ("library", "provider", "bare PTB", "httpx")
TOKEN = "7000000001:AAbenchmark-token_000000000000000000"  # noqa: S105  (a test token)
WARM = 20
POLICY = """
store: memory://
worker: {{concurrency: {in_flight}, batch: 100}}
providers:
  tg: {{type: telegram_bot, token: "{token}", api_url: "{api_url}"}}
policies:
  p:
    steps:
      - {{channel: telegram, providers: [tg], wait_for: accepted, timeout: 10m}}
"""
_INDEX = re.compile(r"bench-([0-9a-z]+)-([0-9]+)")


def text(tag: str, index: int) -> str:
    return f"Your parcel bench-{tag}-{index} has arrived at the pick-up point"


# the emulator (its own process)


async def serve(max_seconds: float) -> None:
    from aiohttp import web

    from cascade_notify.testing.emulators import TelegramEmulator

    class Counted(TelegramEmulator):
        def _routes(self) -> list[tuple[str, str, Any]]:
            return [("GET", "/-/stats/{chat}", self._stats), *super()._routes()]

        async def _stats(self, request: web.Request) -> web.StreamResponse:
            chat = request.match_info["chat"]
            seen = Counter(
                int(m.group(2))
                for m in map(_INDEX.search, (a.text for a in self.sent_to(chat)))
                if m
            )
            sends = sum(1 for r in self.requests if r.address == chat)
            return web.json_response(
                {"requests": sends, "distinct": len(seen), "top": max(seen, default=-1)}
            )

    async with Counted(token=TOKEN) as emu:
        sys.stdout.write(json.dumps({"port": emu.port}) + "\n")
        sys.stdout.flush()
        await stdin_closed(max_seconds)


# the clients (each in its own process)


async def workers(send: Any, count: int, in_flight: int, tag: str, chat: str) -> tuple[float, int]:
    queue = iter(range(count))
    failures = 0

    async def one() -> None:
        nonlocal failures
        for index in queue:
            try:
                await send(chat, text(tag, index))
            except Exception:
                failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(in_flight)))
    return time.perf_counter() - started, failures


async def library(
    api_url: str, chat: str, count: int, in_flight: int, tag: str
) -> tuple[float, int]:
    from cascade_notify import Message, Notifier, Recipient, load_config

    config = load_config(POLICY.format(in_flight=in_flight, token=TOKEN, api_url=api_url))
    notifier = Notifier(config)
    recipient = Recipient(id="u1", telegram=chat)
    finished: dict[str, int] = defaultdict(int)
    done = asyncio.Event()
    target = WARM

    def count_finished(event: Any) -> None:
        if event.kind == "finished":
            finished[event.status] += 1
            if sum(finished.values()) >= target:
                done.set()

    notifier.subscribe(count_finished)

    async def burst(last: int, label: str) -> None:
        for start in range(0, last, 100):
            chunk = range(start, min(last, start + 100))
            await asyncio.gather(
                *(notifier.send(recipient, Message(text=text(label, i))) for i in chunk)
            )

    async with notifier:
        await burst(WARM, "warm")
        await asyncio.wait_for(done.wait(), 60)
        finished.clear()
        done.clear()
        target = count
        started = time.perf_counter()
        await burst(count, tag)
        await done.wait()
        seconds = time.perf_counter() - started
    return seconds, count - finished["delivered"]


async def provider(
    api_url: str, chat: str, count: int, in_flight: int, tag: str
) -> tuple[float, int]:
    from cascade_notify import Message, Recipient
    from cascade_notify.providers.base import SendRequest
    from cascade_notify.providers.telegram import TelegramProvider, TelegramSettings

    tg = TelegramProvider("tg", TelegramSettings(token=TOKEN, api_url=api_url))  # type: ignore[arg-type]
    recipient = Recipient(id="u1", telegram=chat)

    async def send(address: str, body: str) -> None:
        await tg.send(
            SendRequest(
                attempt_id="a",
                delivery_id="d",
                channel="telegram",
                address=address,
                recipient=recipient,
                message=Message(text=body),
            )
        )

    await tg.start()
    try:
        await workers(send, WARM, min(in_flight, WARM), "warm", chat)
        return await workers(send, count, in_flight, tag, chat)
    finally:
        await tg.aclose()


async def bare_ptb(
    api_url: str, chat: str, count: int, in_flight: int, tag: str
) -> tuple[float, int]:
    import telegram
    from telegram.request import HTTPXRequest

    request = HTTPXRequest(connection_pool_size=in_flight)
    bot = telegram.Bot(TOKEN, base_url=f"{api_url}/bot", request=request)

    async def send(address: str, body: str) -> None:
        await bot.send_message(chat_id=address, text=body)

    async with bot:
        await workers(send, WARM, min(in_flight, WARM), "warm", chat)
        return await workers(send, count, in_flight, tag, chat)


async def bare_httpx(
    api_url: str, chat: str, count: int, in_flight: int, tag: str
) -> tuple[float, int]:
    from urllib.parse import urlencode

    import httpx

    url = f"{api_url}/bot{TOKEN}/sendMessage"
    headers = {"content-type": "application/x-www-form-urlencoded"}

    def prepared(label: str, n: int) -> list[bytes]:
        return [urlencode({"chat_id": chat, "text": text(label, i)}).encode() for i in range(n)]

    async with httpx.AsyncClient() as client:

        async def loop(bodies: list[bytes], width: int) -> tuple[float, int]:
            queue = iter(bodies)
            failures = 0

            async def one() -> None:
                nonlocal failures
                for body in queue:
                    answer = await client.post(url, content=body, headers=headers)
                    failures += answer.status_code != 200 or not answer.json()["ok"]

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(width)))
            return time.perf_counter() - started, failures

        await loop(prepared("warm", WARM), min(in_flight, WARM))
        return await loop(prepared(tag, count), in_flight)


CLIENTS = {"library": library, "provider": provider, "bare PTB": bare_ptb, "httpx": bare_httpx}


def client_main(argv: list[str]) -> None:
    kind, api_url, chat, count, in_flight, tag, max_seconds = argv
    work = CLIENTS[kind](api_url, chat, int(count), int(in_flight), tag)
    seconds, failures = asyncio.run(asyncio.wait_for(work, float(max_seconds)))
    sys.stdout.write(json.dumps({"count": int(count), "seconds": seconds, "failures": failures}))
    sys.stdout.write("\n")


# the section (in the runner)


def run(options: Options) -> Result:
    import httpx

    count = 300 if options.quick else 3000
    levels = tuple(c for c in options.concurrency if c in (8, 32)) or (8, 32)
    rates: dict[tuple[int, str], list[float]] = defaultdict(list)
    problems: list[str] = []
    checked = 0
    chats = iter(range(100_000_001, 200_000_000))
    emulator = Child("telegram", "serve", 3600)
    try:
        port = int(emulator.read(30)["port"])
        api_url = f"http://127.0.0.1:{port}"
        for run_number in range(options.runs):
            for in_flight in levels:
                for kind in KINDS:
                    chat = str(next(chats))
                    tag = f"r{run_number}c{in_flight}k{KINDS.index(kind)}{os.getpid()}"
                    child = Child(
                        "telegram",
                        kind,
                        api_url,
                        chat,
                        count,
                        in_flight,
                        tag,
                        120 if options.quick else 600,
                    )
                    try:
                        found = child.read(700)
                    finally:
                        child.close()
                    rates[in_flight, kind].append(found["count"] / found["seconds"])
                    seen = httpx.get(f"{api_url}/-/stats/{chat}", timeout=30).json()
                    checked += 1
                    # the warm-up went to the same chat: WARM more requests, as many distinct
                    lost = count + WARM - seen["requests"]
                    if lost or found["failures"] or seen["top"] != count - 1:
                        problems.append(
                            f"{kind} at {in_flight} (run {run_number + 1}): "
                            f"{seen['requests']} requests for {count + WARM}, "
                            f"{found['failures']} failed"
                        )
                    say(
                        f"  telegram run {run_number + 1} in flight {in_flight:>2} {kind:<9} "
                        f"{rates[in_flight, kind][-1]:8.0f} msgs/s"
                    )
    finally:
        emulator.close()

    table = Table(
        f"telegram. telegram_bot to the Telegram emulator: messages/s, {count:,} per run, "
        f"median (min–max) of {options.runs} runs",
        ["in flight", "client", "msgs/s", "library ÷ this", "provider ÷ this", "µs/msg"],
    )
    targets: list[Target] = []
    for in_flight in levels:
        ours = Spread.of(rates[in_flight, "library"]).median
        alone = Spread.of(rates[in_flight, "provider"]).median
        for kind in KINDS:
            spread = Spread.of(rates[in_flight, kind])
            table.add(
                in_flight,
                kind,
                spread.text(),
                "—" if kind == "library" else ratio(ours, spread.median),
                "—" if kind == "provider" else ratio(alone, spread.median),
                num(1e6 / spread.median, 0),
            )
        floor = Spread.of(rates[in_flight, "httpx"]).median
        ptb = Spread.of(rates[in_flight, "bare PTB"]).median
        need = 2.0 if in_flight < 32 else 4.0
        for who, figure in (("library", ours), ("provider", alone)):
            targets.append(
                Target(
                    "telegram",
                    f"{who} ≥ {need:g}× bare httpx at {in_flight} in flight",
                    ratio(figure, floor),
                    figure >= need * floor,
                )
            )
            targets.append(
                Target(
                    "telegram",
                    f"{who} ≥ 0.9× bare PTB at {in_flight} in flight",
                    ratio(figure, ptb),
                    figure >= 0.9 * ptb,
                )
            )
    table.notes.append(
        f"Emulator check: {checked} client runs, every message accepted once: "
        + ("yes." if not problems else "NO: " + "; ".join(problems))
    )
    targets.append(
        Target(
            "telegram",
            "every message accepted once by the emulator",
            f"{checked} runs, {len(problems)} with a message lost or doubled",
            not problems,
        )
    )
    return Result([table], targets)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(float(sys.argv[2])))
    else:
        client_main(sys.argv[1:])
