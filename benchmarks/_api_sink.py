"""The loopback sink of `benchmarks._sink`, answering in a messenger API's success shape.

    python -m benchmarks._api_sink [max_seconds]

Prints `{"port": N}` and serves 127.0.0.1:N like `_sink` (the same counting of
`bench-<tag>-<index>` tokens, the same `GET /-/stats/<tag>`), but answers a POST to a
path ending in `/send_message` as Viber does (`status` 0 and a 64-bit
`message_token`) and any other POST as the WhatsApp Cloud API does (`messages[0].id`,
a `wamid.`), the bodies the emulators in `cascade_notify.testing.emulators` give.

The emulators themselves are aiohttp servers that record every request: on this
machine they answer about a thousand sends a second, well under what the clients
measured can post, so they would measure themselves rather than the clients.
"""

from __future__ import annotations

import asyncio
import sys

from benchmarks import _sink
from benchmarks._common import stdin_closed

_WHATSAPP = (
    b'{"messaging_product":"whatsapp","contacts":[{"input":"79161234567",'
    b'"wa_id":"79161234567"}],"messages":[{"id":"wamid.HBgLNzkxNjEyMzQ1NjcVAgARGBI%d"}]}'
)
_VIBER = b'{"status":0,"status_message":"ok","message_token":%d,"chat_hostname":"SN-CHAT-05_"}'


class _Protocol(_sink._Protocol):
    def _answer(self, method: str, path: str, body: bytes, close: bool) -> bytes:
        if method == "GET":
            return super()._answer(method, path, body, close)
        found = _sink.TOKEN.search(body)
        index = 0
        if found is not None:
            tag, index = found.group(1), int(found.group(2))
            _sink._REQUESTS[tag] += 1
            _sink._COUNTS[tag][index] += 1
        if path.endswith("/send_message"):
            answer = _VIBER % ((1 << 62) | (index << 1) | 1)
        else:
            answer = _WHATSAPP % index
        return _sink._response("200 OK", answer, close)


async def serve(max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Protocol, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f'{{"port": {port}}}\n')
    sys.stdout.flush()
    await stdin_closed(max_seconds)
    server.close()


if __name__ == "__main__":
    asyncio.run(serve(float(sys.argv[1]) if len(sys.argv) > 1 else 1800.0))
