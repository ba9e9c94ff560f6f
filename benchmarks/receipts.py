"""Section 5: receipts per second through the ASGI webhook app, signatures verified.

The measurement is `benchmarks/bench_webhooks.py`'s, run side by side with two
references:

- `asgi_app`, uvicorn on 127.0.0.1: a separate load process POSTs one
  Standard-Webhooks-signed `read` receipt per waiting delivery over keep-alive
  connections; each is verified (HMAC-SHA256 over the raw body), parsed, stored
  and finishes its delivery (`bench_webhooks.http_run`);
- `handle_webhook` in-process, the same receipts without HTTP
  (`bench_webhooks.direct_run`);
- a bare ASGI app under the same uvicorn settings that reads the body and
  answers 200, loaded the same way: the ceiling of the HTTP server and loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

from benchmarks import bench_webhooks
from benchmarks._common import Options, Result, Spread, Table, Target, ratio, say

CONCURRENCY = 32


async def _bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


async def bare_run(count: int, concurrency: int) -> tuple[int, float]:
    """The load process against an app that only reads the body and answers 200."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            _bare_app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            log_level="warning",
            access_log=False,
            ws="none",
        )
    )
    task = asyncio.create_task(server.serve())
    started = time.monotonic()
    while not server.started:
        if task.done() or time.monotonic() - started > 30:
            raise RuntimeError("uvicorn did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    ids = [f"bare-{i}" for i in range(count)]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(ids, handle)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            bench_webhooks.__file__,
            "--load",
            f"http://127.0.0.1:{port}/receipts/app",
            handle.name,
            str(concurrency),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "BENCH_SECRET": bench_webhooks.SECRET},
        )
        out, _ = await asyncio.wait_for(process.communicate(), 600)
        found = json.loads(out)
    finally:
        os.unlink(handle.name)
        server.should_exit = True
        await task
    if found["ok"] != count:
        raise RuntimeError(f"only {found['ok']} of {count} answered 200 by the bare app")
    return count, found["seconds"]


def run(options: Options) -> Result:
    count = 300 if options.quick else 5000
    rates: dict[str, list[float]] = defaultdict(list)
    for number in range(options.runs):
        for name, work in (
            ("asgi_app over HTTP", lambda: bench_webhooks.http_run(count, CONCURRENCY)),
            ("handle_webhook in-process", lambda: bench_webhooks.direct_run(count)),
            ("bare ASGI app over HTTP", lambda: bare_run(count, CONCURRENCY)),
        ):
            done, seconds = asyncio.run(asyncio.wait_for(work(), 900))
            rates[name].append(done / seconds)
            say(f"  receipts run {number + 1} {name}: {rates[name][-1]:,.0f}/s")
    ours = Spread.of(rates["asgi_app over HTTP"]).median
    table = Table(
        f"5. Receipt ingestion: receipts/s, signatures verified, {count:,} per run, "
        f"median (min–max) of {options.runs} runs",
        ["path", "receipts/s", "asgi_app ÷ this"],
    )
    for name, values in rates.items():
        spread = Spread.of(values)
        table.add(
            name, spread.text(), "—" if name == "asgi_app over HTTP" else ratio(ours, spread.median)
        )
    table.notes.append(
        f"uvicorn on 127.0.0.1 ({CONCURRENCY} keep-alive connections from a separate aiohttp load "
        "process), memory store, the worker finishing each delivery as its receipt lands. "
        "The bare app answers 200 without verifying or storing anything."
    )
    bare = Spread.of(rates["bare ASGI app over HTTP"]).median
    targets = [
        Target(
            "receipts",
            "receipts/s through asgi_app (no target; share of the bare server)",
            f"{ours:,.0f}/s, {ratio(ours, bare)} of bare uvicorn",
            None,
        )
    ]
    return Result([table], targets)
