"""A TCP proxy on loopback that can play a store outage: pass, reset, black hole."""

from __future__ import annotations

import asyncio
import contextlib


class Proxy:
    """Forwards 127.0.0.1:<port> to `target`. `mode` says how:

    - `pass`: forward both ways;
    - `reset`: drop every connection (RST) and every new one;
    - `blackhole`: take new connections and never answer; existing ones go half-open
      (their bytes vanish, their sockets stay open).
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.mode = "pass"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._held: set[asyncio.StreamWriter] = set()  # black-holed connections

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.set("reset")
        for writer in self._held:
            _abort(writer)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def set(self, mode: str) -> None:
        self.mode = mode
        if mode == "reset":
            for a, b in list(self._links):
                for writer in (a, b):
                    _abort(writer)
            self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            _abort(writer)
            return
        if self.mode == "blackhole":
            self._held.add(writer)
            try:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    while await reader.read(65536):
                        pass
            finally:
                self._held.discard(writer)
                _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _abort(writer)
            return
        link = (writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer),
                self._pipe(up_reader, writer),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            pass  # the proxy is closing: the sockets go below, the task ends quietly
        finally:
            self._links.discard(link)
            for w in link:
                _abort(w)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.mode == "pass":
                writer.write(data)
                await writer.drain()
            # blackhole: the bytes vanish, the connection stays up (half-open)


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()
