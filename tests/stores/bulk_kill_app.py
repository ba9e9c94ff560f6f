"""One process of the `send_many` kill test: it stores COUNT sends in batches, worker off.

    python tests/stores/bulk_kill_app.py STORE_URL COUNT BATCH

Each send has the idempotency key `k-<i>` and a text naming i. After each batch is
stored (committed) it prints `stored <n>` (items handled so far) and flushes, so a
SIGKILL loses nothing printed before it; at the end, `done <created> <stored>`.
"""

from __future__ import annotations

import asyncio
import sys

from cascade_notify import Message, Notifier, Recipient, Send

POLICY = """
store: {url}
providers:
  mail: {{type: fake, channel: email}}
policies:
  p: {{steps: [{{channel: email, providers: [mail], wait_for: accepted}}]}}
"""


def item(i: int) -> Send:
    return Send(
        Recipient(id=f"c{i}", email=f"c{i}@example.com"),
        Message(text=f"parcel {i} is on its way"),
        idempotency_key=f"k-{i}",
    )


async def main(url: str, count: int, batch: int) -> None:
    async with Notifier.from_yaml(POLICY.format(url=url), worker=False) as notifier:
        result = await notifier.send_many(
            (item(i) for i in range(count)),
            batch=batch,
            progress=lambda n: print(f"stored {n}", flush=True),
        )
    print(f"done {result.created} {result.stored} {len(result.failures)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
