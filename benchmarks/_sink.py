"""A loopback HTTP/1.1 server that answers like a provider API and counts every message.

    python -m benchmarks._sink [max_seconds]

Prints `{"port": N}` and serves 127.0.0.1:N until its stdin closes or
`max_seconds` pass. Every POST is answered `200` with a small JSON body (as a
provider's send API answers) over keep-alive connections; the message token
`bench-<tag>-<index>` found in the body is counted. `GET /-/stats/<tag>` answers
the counts for one tag: requests, distinct indexes, the most any index was seen.

Hand-written on asyncio so that it is not what limits the clients measured.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections import Counter, defaultdict

from benchmarks._common import stdin_closed

TOKEN = re.compile(rb"bench-([0-9a-z]+)-([0-9]+)")
_COUNTS: defaultdict[bytes, Counter[int]] = defaultdict(Counter)
_REQUESTS: Counter[bytes] = Counter()
_MAX_HEAD = 64 * 1024


def _response(status: str, body: bytes, close: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n" + ("connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + body


def stats(tag: bytes) -> dict[str, int]:
    counts = _COUNTS.get(tag, Counter())
    return {
        "requests": _REQUESTS[tag],
        "distinct": len(counts),
        "most": max(counts.values(), default=0),
        "top_index": max(counts, default=-1),
    }


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    self._finish(_response("431 Too Large", b"{}", close=True), close=True)
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:])
            }
            if "chunked" in headers.get("transfer-encoding", ""):
                self._finish(_response("411 Length Required", b"{}", close=True), close=True)
                return
            total = end + 4 + int(headers.get("content-length", "0"))
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            method, _, rest = lines[0].partition(" ")
            path = rest.partition(" ")[0]
            close = headers.get("connection", "").lower() == "close"
            self._finish(self._answer(method, path, body, close), close)

    def _answer(self, method: str, path: str, body: bytes, close: bool) -> bytes:
        if method == "GET" and path.startswith("/-/stats/"):
            tag = path.removeprefix("/-/stats/").encode()
            return _response("200 OK", json.dumps(stats(tag)).encode(), close)
        found = TOKEN.search(body)
        if found is not None:
            tag, index = found.group(1), int(found.group(2))
            _REQUESTS[tag] += 1
            _COUNTS[tag][index] += 1
            answer = b'{"id":"m%d","status":"queued"}' % index
        else:
            answer = b'{"id":"m","status":"queued"}'
        return _response("200 OK", answer, close)

    def _finish(self, data: bytes, close: bool) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if close:
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Protocol, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()
    await stdin_closed(max_seconds)
    server.close()


if __name__ == "__main__":
    asyncio.run(serve(float(sys.argv[1]) if len(sys.argv) > 1 else 1800.0))
