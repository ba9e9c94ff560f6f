"""The loopback sink of `benchmarks._sink`, answering in a messenger API's success shape.

    python -m benchmarks._api_sink [max_seconds]

Prints `{"port": N}` and serves 127.0.0.1:N like `_sink` (the same counting of
`bench-<tag>-<index>` tokens, the same `GET /-/stats/<tag>`), but answers a POST to a
path ending in `/send_message` as Viber does (`status` 0 and a 64-bit
`message_token`), `/Messages.json` as Twilio (201, an `SM…` sid), `/sms/send` as SMS.ru
(`status_code` 100 and an `sms_id`), `/sys/send.php` as SMSC (`id`, `cnt`), and any
other POST as the WhatsApp Cloud API does; a GET of `/sys/status.php` is answered "still
waiting" for every id (the polling-cost section) (`messages[0].id`, a `wamid.`): the bodies the
emulators in `cascade_notify.testing.emulators` give.

The emulators themselves are aiohttp servers that record every request: on this
machine they answer about a thousand sends a second, well under what the clients
measured can post, so they would measure themselves rather than the clients.
"""

from __future__ import annotations

import asyncio
import json
import sys
from urllib.parse import parse_qs, urlsplit

from benchmarks import _sink
from benchmarks._common import stdin_closed

_WHATSAPP = (
    b'{"messaging_product":"whatsapp","contacts":[{"input":"79161234567",'
    b'"wa_id":"79161234567"}],"messages":[{"id":"wamid.HBgLNzkxNjEyMzQ1NjcVAgARGBI%d"}]}'
)
_VIBER = b'{"status":0,"status_message":"ok","message_token":%d,"chat_hostname":"SN-CHAT-05_"}'
_TWILIO = b'{"sid":"SM%032x","status":"queued","num_segments":"1","price":null}'
_SMSRU = (
    b'{"status":"OK","status_code":100,"sms":{"79161234567":{"status":"OK",'
    b'"status_code":100,"sms_id":"000000-%d"}},"balance":4122.56}'
)
_SMSC = b'{"id":%d,"cnt":1}'


class _Protocol(_sink._Protocol):
    def _answer(self, method: str, path: str, body: bytes, close: bool) -> bytes:
        if method == "GET" and "/sys/status.php" in path:
            return _sink._response("200 OK", _smsc_status(path), close)
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
        elif path.endswith("/Messages.json"):
            return _sink._response("201 Created", _TWILIO % index, close)
        elif path.endswith("/sms/send"):
            answer = _SMSRU % index
        elif path.endswith("/sys/send.php"):
            answer = _SMSC % (index + 1)
        else:
            answer = _WHATSAPP % index
        return _sink._response("200 OK", answer, close)


def _smsc_status(path: str) -> bytes:
    """SMSC's status.php answer for every id asked about: still waiting (-1), so a poll
    brings no receipt and the same messages are asked about again an interval later."""
    query = parse_qs(urlsplit(path).query)
    ids = query.get("id", [""])[0].split(",")
    phones = query.get("phone", [""])[0].split(",")
    entries = [
        {"status": -1, "err": 0, "id": i, "phone": p} for i, p in zip(ids, phones, strict=False)
    ]
    return json.dumps(entries, separators=(",", ":")).encode()


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
