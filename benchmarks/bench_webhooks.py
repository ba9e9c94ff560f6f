"""Receipts accepted per second through the ASGI app on loopback, signatures verified.

    python benchmarks/bench_webhooks.py [--receipts 5000] [--runs 5] [--concurrency 32]

Each run starts a notifier (memory store, worker on, system clock) whose `app` channel
is a `webhook` provider, sends `--receipts` deliveries (their app sends answered by a
mock transport, so every attempt is accepted and waits for `read`), serves
`asgi_app(notifier)` with uvicorn on 127.0.0.1, and has a separate load process POST one
Standard Webhooks-signed `read` receipt per delivery over keep-alive connections. Every
receipt is verified (HMAC-SHA256), parsed, stored and wakes its delivery, which the
worker then finishes. The figure is receipts answered 200 per second of the load
process's wall time; the median of the runs is reported, beside the same work through
`handle_webhook` in-process (no HTTP) for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
POLICY = f"""
store: memory://
worker: {{concurrency: 200, batch: 200}}
providers:
  app: {{type: webhook, url: "http://127.0.0.1:9/inbox", secret: "{SECRET}"}}
  sms: {{type: fake, channel: sms}}
policies:
  service:
    steps:
      - {{channel: app, providers: [app], wait_for: read, timeout: 10m}}
      - {{channel: sms, providers: [sms]}}
"""


def signed(message_id: str, index: int, key: bytes) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"message_id": message_id, "status": "read"}).encode()
    webhook_id, stamp = f"bench_{index}", str(int(time.time()))
    digest = hmac.new(key, f"{webhook_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return body, {
        "webhook-id": webhook_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        "content-type": "application/json",
    }


async def load(url: str, ids: list[str], concurrency: int) -> None:
    """The load process: sign everything first, then POST it all; print count and time."""
    import aiohttp

    key = base64.b64decode(os.environ["BENCH_SECRET"].removeprefix("whsec_"))
    requests = [signed(m, i, key) for i, m in enumerate(ids)]
    queue = iter(requests)
    ok = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok
        for body, headers in queue:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                ok += response.status == 200

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    print(json.dumps({"ok": ok, "seconds": elapsed}))


async def prepared(count: int) -> tuple[Any, list[str], Any]:
    """A running notifier with `count` deliveries waiting for `read` on `app`."""
    import httpx

    from cascade_notify import Message, Notifier, Recipient
    from cascade_notify.policy import load_config
    from cascade_notify.providers.webhook import WebhookProvider

    config = load_config(POLICY)
    client = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    app = WebhookProvider("app", config.providers["app"].settings, client=client)
    notifier = Notifier(config, providers={"app": app})
    await notifier.start()
    deliveries = [
        await notifier.send(Recipient(id=f"u{i}", app=f"d{i}"), Message(text="hi"))
        for i in range(count)
    ]
    ids: list[str] = []
    for delivery in deliveries:
        while True:
            attempts = (await notifier.get(delivery.id)).attempts
            if attempts and attempts[0].provider_message_id is not None:
                ids.append(attempts[0].provider_message_id)
                break
            await asyncio.sleep(0.01)
    return notifier, ids, client


async def http_run(count: int, concurrency: int) -> tuple[int, float]:
    import uvicorn

    from cascade_notify.webhooks import asgi_app

    notifier, ids, client = await prepared(count)
    config = uvicorn.Config(
        asgi_app(notifier),
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
        access_log=False,
        ws="none",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            raise SystemExit("uvicorn did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(ids, handle)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--load",
            f"http://127.0.0.1:{port}/receipts/app",
            handle.name,
            str(concurrency),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "BENCH_SECRET": SECRET},
        )
        out, _ = await process.communicate()
        result = json.loads(out)
    finally:
        os.unlink(handle.name)
        server.should_exit = True
        await task
        await notifier.stop()
        await client.aclose()
    if result["ok"] != count:
        raise SystemExit(f"only {result['ok']} of {count} receipts were answered 200")
    return count, result["seconds"]


async def direct_run(count: int) -> tuple[int, float]:
    from cascade_notify.webhooks import handle_webhook

    notifier, ids, client = await prepared(count)
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    requests = [signed(m, i, key) for i, m in enumerate(ids)]
    start = time.perf_counter()
    for body, headers in requests:
        answer = await handle_webhook(
            notifier, "app", method="POST", url="http://h/", headers=headers, body=body
        )
        assert answer.status == 200
    elapsed = time.perf_counter() - start
    await notifier.stop()
    await client.aclose()
    return count, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--receipts", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--load", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        url, ids_file, concurrency = args.load
        ids = json.loads(Path(ids_file).read_text())
        asyncio.run(load(url, ids, int(concurrency)))
        return
    rows = []
    for run in range(1, args.runs + 1):
        http = asyncio.run(http_run(args.receipts, args.concurrency))
        direct = asyncio.run(direct_run(args.receipts))
        rows.append((run, http, direct))
    print(
        f"receipts through asgi_app on loopback (uvicorn, {args.concurrency} connections), "
        f"signatures verified; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'run':>4} {'receipts':>9} {'HTTP s':>8} {'HTTP /s':>9} {'in-process /s':>14}")
    for run, (count, seconds), (dcount, dseconds) in rows:
        print(
            f"{run:>4} {count:>9} {seconds:>8.2f} {count / seconds:>9.0f} "
            f"{dcount / dseconds:>14.0f}"
        )
    http_median = statistics.median(c / s for _, (c, s), _ in rows)
    direct_median = statistics.median(c / s for _, _, (c, s) in rows)
    print(f"{'median':>4} {'':>9} {'':>8} {http_median:>9.0f} {direct_median:>14.0f}")


if __name__ == "__main__":
    main()
