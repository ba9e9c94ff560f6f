"""One worker process of the outbox kill test: it sends deliveries, works them and posts
their outcome webhooks, and exits once every delivery is final and the outbox is empty.

    python tests/stores/outbox_app.py STORE_URL EVENTS_URL SECRET COUNT

It sends keys k-0 ... k-(COUNT-1) (again, after a restart: a send of a known key returns
the delivery it made). `CASCADE_NOTIFY_FAILPOINTS` kills it where the test says. The
outbox's backoff is shortened so a receiver's 503s cost milliseconds, not seconds.
"""

from __future__ import annotations

import asyncio
import sys

from cascade_notify import Message, Notifier, Recipient
from cascade_notify import outbox as sender
from cascade_notify.stores.base import Outbox

POLICY = """
store: {store}
worker: {{lease: 1s}}
events: {{url: "{url}", secret: "{secret}", timeout: 500ms}}
providers:
  tg: {{type: fake, channel: telegram}}
  wa: {{type: fake, channel: whatsapp, behavior: deliver, receipt_delay: 300ms}}
policies:
  p:
    ttl: 1h
    steps:
      - {{channel: telegram, providers: [tg], wait_for: accepted}}
      - {{channel: whatsapp, providers: [wa], timeout: 2s}}
"""


async def main(store: str, url: str, secret: str, count: int) -> None:
    sender.BACKOFF_BASE, sender.BACKOFF_CAP = 0.02, 0.1  # type: ignore[misc]
    notifier = Notifier.from_yaml(POLICY.format(store=store, url=url, secret=secret))
    async with notifier:
        ids = []
        for i in range(count):
            who = Recipient(id=f"r{i}", whatsapp=f"+7916123{i:04d}")
            ids.append((await notifier.send(who, Message(text="hi"), idempotency_key=f"k-{i}")).id)
        outbox = notifier.store
        assert isinstance(outbox, Outbox)
        async with asyncio.timeout(60):
            while True:
                done = [await notifier.get(i) for i in ids]
                if all(d.final for d in done) and await outbox.outbox_next() is None:
                    return
                await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
