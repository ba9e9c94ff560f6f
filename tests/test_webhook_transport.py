"""`type: webhook` transport failures, classified by what happened: before the request
went out (transient) or after it may have (unknown outcome). With httpx's own transport
(an injected client) and with the default aiohttp transport against loopback servers
that misbehave on purpose."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from cascade_notify import PermanentError, ProviderError, TransientError, UnknownOutcomeError
from cascade_notify.testing import FakeClock
from webhook_harness import provider, request, send_with


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        (httpx.ConnectError("refused"), TransientError),
        (httpx.ConnectTimeout("slow connect"), TransientError),
        (httpx.PoolTimeout("pool"), TransientError),
        (httpx.ReadTimeout("read"), UnknownOutcomeError),
        (httpx.ReadError("reset"), UnknownOutcomeError),
        (httpx.WriteError("broken pipe"), UnknownOutcomeError),
        (httpx.WriteTimeout("write"), UnknownOutcomeError),
        (httpx.RemoteProtocolError("server disconnected"), UnknownOutcomeError),
        (httpx.UnsupportedProtocol("gopher"), PermanentError),
    ],
)
async def test_injected_client_failure_table(
    fake_clock: FakeClock, raised: Exception, error: type[ProviderError]
) -> None:
    """httpx's own transport errors (an injected client) → before or after the request."""

    def handler(req: httpx.Request) -> httpx.Response:
        raise raised

    with pytest.raises(error):
        await send_with(fake_clock, handler)


# the default transport (aiohttp), against real loopback servers that misbehave

ServerHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.close()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await reader.read()  # until the client gives up


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"GARBAGE\r\n\r\n")
    writer.close()


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def truncated_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nabc")
    writer.close()


async def busy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 503 Busy\r\nretry-after: 7\r\ncontent-length: 0\r\n\r\n")
    writer.close()


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nx-pad: ")
    for _ in range(20):  # a byte per 0.1 s: no single read waits long, the whole is slow
        writer.write(b"a")
        await writer.drain()
        await asyncio.sleep(0.1)


@pytest.fixture
async def loopback() -> AsyncIterator[Callable[[ServerHandler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(handler: ServerHandler) -> str:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(tracked, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/inbox"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    await asyncio.gather(*tasks, return_exceptions=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("handler", "error", "code"),
    [
        (hang_up, UnknownOutcomeError, "after_send"),
        (never_answer, UnknownOutcomeError, "after_send"),
        (garbage, UnknownOutcomeError, "after_send"),
        (reset, UnknownOutcomeError, "after_send"),
        (trickle, UnknownOutcomeError, "after_send"),
        (busy, TransientError, "503"),
    ],
)
async def test_aiohttp_transport_failures_after_connecting(
    fake_clock: FakeClock,
    loopback: Callable[[ServerHandler], Awaitable[str]],
    handler: ServerHandler,
    error: type[ProviderError],
    code: str,
) -> None:
    """On the default transport, a server that took the request and then hung up, went
    quiet, spoke garbage, reset, or trickled past twice `timeout` is an unknown outcome
    (httpx-aiohttp calls the hang-up and the reset a ConnectTimeout; we look beneath);
    a 503 is transient."""
    url = await loopback(handler)
    sender = provider(fake_clock, url=url, timeout=0.3)
    try:
        with pytest.raises(error) as caught:
            await sender.send(request())
    finally:
        await sender.aclose()
    assert type(caught.value) is error and caught.value.code == code
    if isinstance(caught.value, TransientError):
        assert caught.value.retry_after == 7.0


async def test_aiohttp_truncated_body_after_2xx_is_accepted(
    fake_clock: FakeClock,
    loopback: Callable[[ServerHandler], Awaitable[str]],
) -> None:
    """A 2xx status line means accepted, even if the answer's body is then cut short."""
    sender = provider(fake_clock, url=await loopback(truncated_ok), timeout=0.3)
    try:
        assert (await sender.send(request())).provider_message_id == "att_1"
    finally:
        await sender.aclose()


@pytest.mark.parametrize(
    "url", [f"http://127.0.0.1:{free_port()}/inbox", "http://no-such-host.invalid/inbox"]
)
async def test_aiohttp_transport_failures_before_sending(fake_clock: FakeClock, url: str) -> None:
    """Connection refused and a name that does not resolve: nothing went out, transient."""
    sender = provider(fake_clock, url=url, timeout=2)
    try:
        with pytest.raises(TransientError) as caught:
            await sender.send(request())
    finally:
        await sender.aclose()
    assert caught.value.code == "connect"


async def test_injected_client_is_not_closed(fake_clock: FakeClock) -> None:
    """`aclose()` closes only the client the provider made itself."""
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda r: httpx.Response(200))
    ) as client:
        sender = provider(fake_clock, client)
        await sender.aclose()
        assert not client.is_closed


async def test_a_proxy_the_environment_names_is_used(
    fake_clock: FakeClock,
    loopback: Callable[[ServerHandler], Awaitable[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The provider posts on aiohttp's session directly only where its client would not
    apply a proxy: with `HTTP_PROXY` set, the message goes through the proxy (here a
    loopback server that answers 200 to a URL no resolver knows)."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readline())
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()

    via = await loopback(proxy)
    monkeypatch.setenv("HTTP_PROXY", via.removesuffix("/inbox"))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    sender = provider(fake_clock, url="http://app.invalid/inbox")
    try:
        await sender.send(request())  # accepted: no error
    finally:
        await sender.aclose()
    assert seen and seen[0].startswith(b"POST http://app.invalid/inbox")
