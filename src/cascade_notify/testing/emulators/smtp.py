"""An SMTP server on loopback (aiosmtpd) that records what it receives and answers per
recipient from a script: the ground the `smtp` provider's tests stand on, and what
`cascade-notify emulate smtp` can start.

    async with SmtpEmulator() as server:               # 127.0.0.1, a free port, no TLS
        server.script("anna@example.com", ["local_error", "deliver"])   # 451 once, then 250
        ...                                            # the smtp provider's host/port
        [received] = server.messages                   # envelope, raw bytes, parsed

aiosmtpd is a test dependency (`cascade-notify[dev]`); it is imported when an emulator
is made. It runs in the caller's event loop, so a test on `FakeClock` sees each reply as
soon as the loop turns.
"""

from __future__ import annotations

import asyncio
import email.policy
import io
import ssl
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any, Final, Literal, TextIO, cast

#: What a scripted recipient gets: the phase it is answered in, and the reply (None: the
#: connection is closed instead of answering).
ANSWERS: Final[Mapping[str, tuple[Literal["rcpt", "data"], str | None]]] = {
    "deliver": ("data", "250 2.0.0 OK: queued"),
    "unknown_user": ("rcpt", "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown"),
    "not_local": ("rcpt", "551 5.1.6 User not local"),
    "mailbox_full": ("rcpt", "552 5.2.2 Mailbox full"),
    "bad_mailbox": ("rcpt", "553 5.1.3 Mailbox name not allowed"),
    "policy": ("rcpt", "550 5.7.1 Delivery not authorised"),
    "greylisted": ("rcpt", "450 4.7.1 Greylisted, try again later"),
    "local_error": ("rcpt", "451 4.3.0 Local error in processing"),
    "closing": ("rcpt", "421 4.3.2 Service not available, closing channel"),
    "drop": ("rcpt", None),  # hang up at RCPT: nothing of the message was handed over
    "spam": ("data", "554 5.7.1 Message rejected as spam"),
    "data_busy": ("data", "451 4.3.0 Try again later"),
    "hang_up": ("data", None),  # the message was read and recorded, the 250 never sent
}


@dataclass(frozen=True)
class Command:
    """One SMTP command as the server saw it, on connection number `connection`."""

    connection: int
    verb: str
    arg: str


@dataclass(frozen=True)
class Received:
    """One message the server took (or read before hanging up)."""

    connection: int
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    ts: float
    answered: bool

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=email.policy.default).parsebytes(self.data)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class _Scripts:
    entries: dict[str, list[str]] = field(default_factory=dict)

    def next(self, address: str) -> str:
        script = self.entries.get(address.lower())
        if not script:
            return "deliver"
        return script.pop(0) if len(script) > 1 else script[0]


def _aiosmtpd() -> Any:
    try:
        import aiosmtpd.smtp
    except ImportError as exc:
        raise ImportError(
            "the SMTP emulator needs aiosmtpd: pip install 'cascade-notify[dev]' "
            "(or pip install aiosmtpd)"
        ) from exc
    return aiosmtpd.smtp


class SmtpEmulator:
    """aiosmtpd on `host`:`port` (0: a free one). `tls`: `none`, `starttls` (offered with
    `tls_context`) or `implicit` (TLS from the first byte). `users`: login → password;
    when given, MAIL before a successful AUTH is answered 530. `echo`: print one line per
    message to that stream (True: stdout)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: Literal["none", "starttls", "implicit"] = "none",
        tls_context: ssl.SSLContext | None = None,
        users: Mapping[str, str] | None = None,
        echo: bool | TextIO = False,
    ) -> None:
        if tls != "none" and tls_context is None:
            raise ValueError(f"tls: {tls} needs a tls_context (the server's certificate)")
        self.host = host
        self.port = port
        self.tls = tls
        self._context = tls_context
        self._users = dict(users or {})
        self._echo: TextIO | None = sys.stdout if echo is True else (echo or None)
        self._scripts = _Scripts()
        self._server: asyncio.Server | None = None
        self._sessions: set[Any] = set()
        #: Every command, every message, and how many connections were made.
        self.commands: list[Command] = []
        self.messages: list[Received] = []
        self.connections = 0
        self._smtp = _aiosmtpd()

    # control

    def script(self, address: str, entries: str | Sequence[str]) -> None:
        """What `address` gets, message by message; the last entry repeats."""
        names = [entries] if isinstance(entries, str) else list(entries)
        unknown = [n for n in names if n not in ANSWERS]
        if unknown or not names:
            raise ValueError(f"unknown SMTP answer {unknown[:1]}; known: {', '.join(ANSWERS)}")
        self._scripts.entries[address.lower()] = names

    def reset(self) -> None:
        self._scripts.entries.clear()
        self.commands.clear()
        self.messages.clear()
        self.connections = 0

    def verbs(self) -> list[str]:
        return [c.verb for c in self.commands]

    def hang_up_all(self) -> None:
        """Close every open connection, as a server timing out idle clients does."""
        for session in list(self._sessions):
            if session.transport is not None:
                session.transport.close()

    # lifecycle

    async def start(self) -> SmtpEmulator:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._session,
            self.host,
            self.port,
            ssl=self._context if self.tls == "implicit" else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self.hang_up_all()
        await self._server.wait_closed()
        for _ in range(5):  # let the closed sessions' tasks end
            await asyncio.sleep(0)
        self._server = None

    async def __aenter__(self) -> SmtpEmulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # the server side

    def _session(self) -> Any:
        self.connections += 1
        number = self.connections
        emulator = self
        smtp = self._smtp

        class Session(smtp.SMTP):  # type: ignore[misc, name-defined]
            def connection_lost(self, error: Exception | None) -> None:
                emulator._sessions.discard(self)
                super().connection_lost(error)

        for verb in ("EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "RSET", "QUIT"):
            setattr(Session, f"smtp_{verb}", _recorded(smtp.SMTP, verb, self, number))
        session = Session(
            _Handler(self, number),
            hostname="emulator.invalid",
            tls_context=self._context if self.tls == "starttls" else None,
            authenticator=self._authenticate if self._users else None,
            auth_require_tls=self.tls != "none",
        )
        self._sessions.add(session)
        return session

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> Any:
        login = getattr(data, "login", b"").decode("utf-8", "replace")
        password = getattr(data, "password", b"").decode("utf-8", "replace")
        ok = login in self._users and self._users[login] == password
        return self._smtp.AuthResult(success=ok, handled=False)

    def _say(self, received: Received) -> None:
        if self._echo is None:
            return
        message = received.message
        print(
            f"smtp: {received.mail_from} → {', '.join(received.rcpt_tos)}  "
            f"{message.get('subject', '')!s}  ({len(received.data)} bytes)"
            + ("" if received.answered else "  [hung up]"),
            file=self._echo,
            flush=True,
        )


def _recorded(base: Any, verb: str, emulator: SmtpEmulator, number: int) -> Callable[..., Any]:
    method = getattr(base, f"smtp_{verb}")

    async def recorded(self: Any, arg: str | None) -> None:
        emulator.commands.append(Command(number, verb, arg or ""))
        await method(self, arg)

    recorded.__name__ = f"smtp_{verb}"
    for attr in ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__"):
        if hasattr(method, attr):
            setattr(recorded, attr, getattr(method, attr))
    return recorded


class _Handler:
    """aiosmtpd's handler hooks: the scripted answers."""

    def __init__(self, emulator: SmtpEmulator, connection: int) -> None:
        self.emulator = emulator
        self.connection = connection
        self.pending: dict[str, str] = {}  # recipient → its answer at DATA

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.emulator._users and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        name = self.emulator._scripts.next(address)
        phase, reply = ANSWERS[name]
        if phase == "rcpt":
            if reply is None or reply.startswith("421"):
                server.transport.close()
            return (reply or "421 closing").format(rcpt=address)
        envelope.rcpt_tos.append(address)
        self.pending[address] = name
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        names = [self.pending.pop(r, "deliver") for r in envelope.rcpt_tos]
        name = next((n for n in names if n != "deliver"), "deliver")
        reply = ANSWERS[name][1]
        data = envelope.original_content or b""
        if reply is None or reply.startswith("2"):
            received = Received(
                self.connection,
                envelope.mail_from or "",
                tuple(envelope.rcpt_tos),
                bytes(data),
                time.time(),
                reply is not None,
            )
            self.emulator.messages.append(received)
            self.emulator._say(received)
        if reply is None:
            server.transport.close()
            return "250 never sent"
        return reply


class _Lines(io.TextIOBase):
    """A text stream handing each finished line to `log`."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log, self._buffer = log, ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._log(line)
        return len(text)


class SmtpService:
    """The SMTP emulator in the shape `cascade-notify emulate` runs: it prints one line
    per message received and the `smtp` settings to paste. SMTP has no webhooks."""

    name = "smtp"

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        clock: object = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log: Callable[[str], None] | None = None,
        **options: Any,
    ) -> None:
        self.webhook_url: str | None = None
        echo: bool | TextIO = True if log is None else cast(TextIO, _Lines(log))
        self.server = SmtpEmulator(host=host, port=port, echo=echo, **options)

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def api_url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    @property
    def control_url(self) -> str:
        return "(none)"

    def settings(self) -> dict[str, Any]:
        return {
            "type": "smtp",
            "host": self.host,
            "port": self.port,
            "tls": self.server.tls,
            "from_addr": "shop@example.com",
        }

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()


__all__ = ["ANSWERS", "Command", "Received", "SmtpEmulator", "SmtpService"]
