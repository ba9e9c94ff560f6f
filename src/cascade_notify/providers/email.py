"""`type: smtp`: e-mail over SMTP with aiosmtplib (the extra `cascade-notify[email]`).

Out: `send()` writes one message per attempt (plain text, and an HTML alternative from
`Message.overrides["email"]["html"]`), `From` the `from_addr`, the subject RFC 2047
encoded, a `Message-ID` of `<attempt id @ from_addr's domain>` (also the provider
message id), `List-Unsubscribe` when configured, and hands it over as MAIL, RCPT, DATA
on one of at most `pool_size` pooled connections (reused across sends, each used by one
send at a time, RSET after a refusal, replaced when it dropped).

SMTP says only "accepted by the first server": `receipts` holds `failed` alone, which
comes later as a bounce. `receive()` takes an RFC 3464 delivery-status report POSTed raw
(`Authorization: Bearer <bounce_secret>`) and turns a bounce about one of our
Message-IDs into a `failed` receipt (`parse_bounce`). Polling a bounce mailbox (IMAP) is
not done here.

What aiosmtplib raises becomes one of our errors in one place, `translate()`, by the
reply code and by how far the transaction got (providers.md §8): nothing of the message
handed over is transient, a connection lost after DATA began is an unknown outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import email.utils
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator, model_validator

from cascade_notify._duration import Duration
from cascade_notify.clock import Clock
from cascade_notify.errors import (
    PermanentError,
    ProviderError,
    TransientError,
    UnknownOutcomeError,
    UnreachableError,
)
from cascade_notify.models import Receipt, ReceiptStatus
from cascade_notify.providers._mime import _body, _header, _subject_from, parse_bounce
from cascade_notify.providers._signing import BadSignature, same
from cascade_notify.providers.base import (
    Inbound,
    Provider,
    ProviderOverrides,
    ProviderSettings,
    SendRequest,
    SendResult,
    WebhookRequest,
)

if TYPE_CHECKING:
    import aiosmtplib

Tls = Literal["starttls", "implicit", "none"]
#: How far one transaction got when it failed.
Phase = Literal["connect", "mail", "rcpt", "data"]

_PORTS: dict[str, int] = {"starttls": 587, "implicit": 465, "none": 25}
_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_QUIT_TIMEOUT = 2.0


def _aiosmtplib() -> ModuleType:
    try:
        import aiosmtplib
    except ImportError as exc:  # pragma: no cover - the extra is in dev
        raise ImportError(
            "provider type 'smtp' needs aiosmtplib: pip install 'cascade-notify[email]'"
        ) from exc
    return aiosmtplib


def _addr_spec(value: str) -> tuple[str, str]:
    """`local`, `domain` of an address (display name allowed); ValueError if there is none."""
    _, spec = email.utils.parseaddr(value)
    local, at, domain = spec.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in spec):
        raise ValueError(f"{value!r} is not an e-mail address")
    return local, domain


def _ascii_domain(domain: str) -> str:
    try:
        return domain.encode("ascii").decode()
    except UnicodeEncodeError:
        return domain.encode("idna").decode("ascii")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpSettings(ProviderSettings):
    """Settings of `type: smtp`. `port` defaults by `tls`: 587, 465 or 25."""

    host: str = Field(min_length=1, description="The SMTP server's host name.")
    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Its port; `null`: by `tls`, 587 (`starttls`), 465 (`implicit`) or 25 "
        "(`none`).",
    )
    username: str | None = Field(default=None, description="The login, if the server wants one.")
    password: SecretStr | None = Field(
        default=None,
        description="The password; needs `username`, and TLS unless the server is on loopback.",
    )
    from_addr: str = Field(
        description="The `From` address; its domain also names each `Message-ID`."
    )
    tls: Tls = Field(
        default="starttls",
        description="`starttls`: upgrade a plain connection; `implicit`: TLS from the first "
        "byte; `none`: no TLS.",
    )
    timeout: Duration = Field(
        default=30.0,
        gt=0,
        description="How long connecting, waiting for a free pooled connection, or one SMTP "
        "command may take.",
    )
    pool_size: int = Field(
        default=4,
        ge=1,
        le=64,
        description="The most connections kept open to the server, each used by one send at a "
        "time.",
    )
    max_per_connection: int = Field(
        default=100,
        ge=1,
        description="Messages one connection carries before it is closed and replaced.",
    )
    list_unsubscribe: str | None = Field(
        default=None,
        description="The `List-Unsubscribe` header for every message (a message's own override "
        "wins).",
    )
    ca_file: str | None = Field(
        default=None,
        description="A PEM file of the roots to verify the server's certificate against "
        "(default: the system's).",
    )
    verify: bool = Field(
        default=True, description="`false`: accept any server certificate (tests only)."
    )
    local_hostname: str | None = Field(
        default=None, description="The name given in EHLO; `null`: this host's."
    )
    bounce_secret: SecretStr | None = Field(
        default=None,
        description="The token bounces are POSTed with (`Authorization: Bearer ...`); `null`: "
        "the provider takes no bounces.",
    )

    @field_validator("from_addr")
    @classmethod
    def _check_from(cls, value: str) -> str:
        _addr_spec(value)
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> SmtpSettings:
        if self.password is not None and self.username is None:
            raise ValueError("password is given without username")
        if self.password is not None and self.tls == "none" and not _loopback(self.host):
            raise ValueError(
                "tls: none would send the password in clear text; use starttls or implicit"
            )
        return self

    @property
    def effective_port(self) -> int:
        return self.port or _PORTS[self.tls]


class EmailOverrides(ProviderOverrides):
    """`Message.overrides["email"]` (and a step's options): `text`, `html`, `subject`,
    `list_unsubscribe` (e.g. a per-recipient link; it wins over the setting)."""

    html: str | None = Field(default=None, description="An HTML alternative to the text.")
    subject: str | None = Field(default=None, description="The subject (default the message's).")
    list_unsubscribe: str | None = Field(
        default=None,
        description="The `List-Unsubscribe` header for this message (a per-recipient link); "
        "wins over the setting.",
    )


@dataclass(frozen=True, slots=True)
class Mail:
    """One composed message: the envelope and the bytes DATA sends."""

    sender: str
    recipient: str
    data: bytes
    message_id: str  # without the angle brackets: the provider message id


@dataclass(slots=True)
class _Link:
    client: aiosmtplib.SMTP
    sent: int = 0


class _Pool:
    """At most `size` connections; each is used by one send at a time."""

    def __init__(self, size: int, provider: str) -> None:
        self._provider = provider
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Link] = []
        self.closed = False

    @contextlib.asynccontextmanager
    async def slot(self, wait: float) -> AsyncIterator[_Slot]:
        try:
            async with asyncio.timeout(wait):
                await self._slots.acquire()
        except TimeoutError:
            message = f"every SMTP connection stayed busy for {wait:g} s"
            raise TransientError(message, provider=self._provider) from None
        slot = _Slot(self._take())
        try:
            yield slot
        finally:
            link, slot.link = slot.link, None
            try:
                if link is not None and self.closed:
                    await _close(link)
                elif link is not None:
                    self._idle.append(link)
            finally:
                self._slots.release()

    def _take(self) -> _Link | None:
        while self._idle:
            link = self._idle.pop()
            if link.client.is_connected:
                return link
            link.client.close()
        return None

    async def aclose(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_close(link) for link in idle))


@dataclass(slots=True)
class _Slot:
    link: _Link | None


async def _close(link: _Link) -> None:
    client = link.client
    if client.is_connected:
        with contextlib.suppress(Exception):
            await client.quit(timeout=_QUIT_TIMEOUT)
    client.close()


class SmtpProvider(Provider):
    """`type: smtp`: e-mail over SMTP, a small pool of connections, bounces by webhook."""

    type_name = "smtp"
    default_channel = "email"
    # SMTP reports acceptance only; `failed` comes from bounces (see `receive`)
    receipts: ClassVar[frozenset[ReceiptStatus]] = frozenset({ReceiptStatus.FAILED})
    webhook_methods = frozenset({"POST"})
    Settings = SmtpSettings
    Overrides = EmailOverrides
    settings: SmtpSettings

    def __init__(
        self, name: str, settings: ProviderSettings, *, clock: Clock | None = None
    ) -> None:
        super().__init__(name, settings, clock=clock)
        self._smtp = _aiosmtplib()
        local, domain = _addr_spec(self.settings.from_addr)
        self._sender = f"{local}@{_ascii_domain(domain)}"
        self.domain = _ascii_domain(domain).lower()
        name, _ = email.utils.parseaddr(self.settings.from_addr)
        self._from = _header("From", email.utils.formataddr((name, self._sender), "utf-8"))
        self._pool = _Pool(self.settings.pool_size, name)
        self._tls: ssl.SSLContext | None = None
        self._hostname = self.settings.local_hostname
        #: Connections opened so far (a pool keeps this near `pool_size`).
        self.connections_opened = 0

    async def start(self) -> None:
        if self._hostname is None:
            self._hostname = await asyncio.to_thread(socket.getfqdn)

    async def aclose(self) -> None:
        await self._pool.aclose()

    # out

    def compose(self, request: SendRequest) -> Mail:
        """The message for `request`; `PermanentError` if it cannot be written as e-mail."""
        overrides = request.overrides
        if not isinstance(overrides, EmailOverrides):
            overrides = EmailOverrides(text=overrides.text)
        token = request.attempt_id
        if not _ATOM.fullmatch(token):
            token = quote(token, safe="")
        message_id = f"{token}@{self.domain}"
        try:
            local, domain = _addr_spec(request.address)
            local.encode("ascii")
            recipient = f"{local}@{_ascii_domain(domain)}"
        except (ValueError, UnicodeError):
            raise PermanentError(
                "the address needs SMTPUTF8 or is not an e-mail address",
                provider=self.name,
                code="bad_address",
            ) from None
        subject = overrides.subject or request.message.subject or _subject_from(request.text)
        unsubscribe = overrides.list_unsubscribe or self.settings.list_unsubscribe
        try:
            head = [
                self._from,
                b"To: " + recipient.encode() + b"\r\n",
                _header("Subject", subject),
                # wall time: the receiving servers judge it against theirs
                b"Date: " + email.utils.formatdate(time.time(), usegmt=True).encode() + b"\r\n",
                b"Message-ID: <" + message_id.encode() + b">\r\n",
                b"Auto-Submitted: auto-generated\r\n",  # RFC 3834: no vacation replies
            ]
            if unsubscribe:
                head.append(_header("List-Unsubscribe", unsubscribe, ascii_only=True))
        except ValueError as exc:
            raise PermanentError(
                f"the message cannot be written as e-mail: {exc}",
                provider=self.name,
                code="bad_message",
            ) from None
        data = b"".join(head) + b"MIME-Version: 1.0\r\n" + _body(request.text, overrides.html)
        return Mail(self._sender, recipient, data, message_id)

    async def send(self, request: SendRequest) -> SendResult:
        """Hand the message to the server; its 250 after DATA means accepted."""
        mail = self.compose(request)
        async with self._pool.slot(self.settings.timeout) as slot:
            await self._transact(slot, mail)
        return SendResult(mail.message_id)

    async def _transact(self, slot: _Slot, mail: Mail) -> None:
        timeout = self.settings.timeout
        for last_try in (False, True):
            phase: Phase = "connect"
            fresh = slot.link is None
            try:
                if slot.link is None:
                    slot.link = await self._connect()
                client = slot.link.client
                phase = "mail"
                await client.mail(mail.sender, timeout=timeout)
                phase = "rcpt"
                await client.rcpt(mail.recipient, timeout=timeout)
                phase = "data"
                await client.data(mail.data, timeout=timeout)
            except asyncio.CancelledError:
                await self._drop(slot)  # mid-transaction: the connection's state is unknown
                raise
            except Exception as exc:
                error, usable = translate(exc, phase, self.name)
                # a pooled connection the server dropped while idle: once more on a new one
                stale = not fresh and phase == "mail" and not usable
                await (self._reset(slot) if usable else self._drop(slot))
                if stale and not last_try:
                    continue
                raise error from exc
            slot.link.sent += 1
            if slot.link.sent >= self.settings.max_per_connection:
                link, slot.link = slot.link, None
                await _close(link)
            return

    async def _connect(self) -> _Link:
        s = self.settings
        client = self._smtp.SMTP(
            hostname=s.host,
            port=s.effective_port,
            username=s.username,
            password=s.password.get_secret_value() if s.password is not None else None,
            local_hostname=self._hostname,
            timeout=s.timeout,
            use_tls=s.tls == "implicit",
            start_tls=s.tls == "starttls",
            tls_context=self._tls_context() if s.tls != "none" else None,
        )
        self.connections_opened += 1
        await client.connect()
        return _Link(client)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            context = ssl.create_default_context(cafile=self.settings.ca_file)
            if not self.settings.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._tls = context
        return self._tls

    async def _reset(self, slot: _Slot) -> None:
        """RSET after a refusal, so the next send starts a clean transaction."""
        if slot.link is None:
            return
        try:
            await slot.link.client.rset(timeout=self.settings.timeout)
        except Exception:  # a connection that cannot RSET is not worth keeping
            await self._drop(slot)

    async def _drop(self, slot: _Slot) -> None:
        link, slot.link = slot.link, None
        if link is not None:
            link.client.close()

    # in

    async def receive(self, request: WebhookRequest) -> Inbound:
        """A bounce POSTed raw with `Authorization: Bearer <bounce_secret>`: its `failed`
        receipt, or none when it is not a failure report about one of our messages."""
        secret = self.settings.bounce_secret
        if secret is None:
            raise BadSignature(
                "this provider takes no bounces: bounce_secret is not set", status=403
            )
        given = request.headers.get("authorization", "")
        if not same(given, "Bearer " + secret.get_secret_value()):
            raise BadSignature("Authorization does not carry the bounce secret")
        if not request.body.strip():
            raise ValueError("empty body: POST the bounce as received (RFC 822 bytes)")
        receipt = self.parse_bounce(request.body)
        return Inbound(receipts=[receipt] if receipt is not None else [])

    def parse_bounce(self, raw: bytes) -> Receipt | None:
        """`parse_bounce(raw)` for this provider, its domain and clock."""
        return parse_bounce(raw, provider=self.name, domains={self.domain}, now=self.clock.now())


# The message is written here rather than by `EmailMessage` with the default policy: that
# costs about 5 ms a message (its header registry parses every header it is given), more
# than the whole SMTP exchange on a LAN. The shape is narrow (text, maybe HTML), and the
# tests read every message back with the `email` package's parser.


def translate(exc: BaseException, phase: Phase, provider: str) -> tuple[ProviderError, bool]:
    """`exc` (raised by aiosmtplib at `phase`) as our error, and whether the connection is
    still fit for another transaction (after RSET): only when the server answered."""
    errors = _aiosmtplib().errors
    if isinstance(exc, errors.SMTPResponseException):
        code, text, tag = exc.code, f"{exc.code} {exc.message}", _tag(exc.code, exc.message)
        usable = phase != "connect" and code != 421
        if isinstance(exc, errors.SMTPAuthenticationError) and code < 500:
            return TransientError(text, provider=provider, code=tag), False
        if code >= 500 and (
            isinstance(exc, errors.SMTPAuthenticationError)
            or phase == "connect"  # greeting, EHLO: the server refuses us all
            or (phase == "mail" and code not in (552, 555))  # the sender: every message is
        ):
            return PermanentError(text, provider=provider, code=tag, account=True), usable
        return by_code(code, exc.message, phase, provider), usable
    if isinstance(exc, errors.SMTPRecipientsRefused) and exc.recipients:
        return translate(exc.recipients[0], phase, provider)
    if isinstance(exc, errors.SMTPNotSupported):
        return PermanentError(str(exc), provider=provider, code="not_supported"), False
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        message = f"the server's TLS certificate does not verify: {cause.verify_message}"
        return PermanentError(message, provider=provider, code="tls", account=True), False
    lost = isinstance(exc, errors.SMTPServerDisconnected | errors.SMTPTimeoutError | OSError)
    if phase == "data" and (lost or not isinstance(exc, errors.SMTPException)):
        message = f"the connection failed after DATA began: {exc}"
        return UnknownOutcomeError(message, provider=provider, code="lost_in_data"), False
    if lost or isinstance(exc, TimeoutError):
        return TransientError(f"{type(exc).__name__}: {exc}", provider=provider), False
    if isinstance(exc, errors.SMTPException):
        # STARTTLS not offered, no AUTH mechanism in common: the configuration is wrong
        return PermanentError(str(exc), provider=provider, code="config", account=True), False
    return PermanentError(f"{type(exc).__name__}: {exc}", provider=provider), False


def by_code(code: int, message: str, phase: Phase, provider: str) -> ProviderError:
    """An SMTP refusal as our error (providers.md §8.1): 4xx transient; at RCPT 550, 551,
    552, 553 unreachable, but a 5.7.x (policy) refusal permanent; other 5xx permanent.
    The enhanced status code in the text, when there is one, decides over the reply code."""
    enhanced = _ENHANCED.search(message)
    tag = _tag(code, message)
    text = f"{code} {message}"
    if 400 <= code < 500:
        return TransientError(text, provider=provider, code=tag)
    if enhanced is not None and enhanced.group(1) == "5":
        subject = enhanced.group(2)
        if subject in ("1", "2") and phase in ("rcpt", "data"):
            return UnreachableError(text, provider=provider, code=tag)
        if subject == "7" or phase != "rcpt":
            return PermanentError(text, provider=provider, code=tag)
    if phase == "rcpt" and code in (550, 551, 552, 553):
        return UnreachableError(text, provider=provider, code=tag)
    return PermanentError(text, provider=provider, code=tag)


def _tag(code: int, message: str) -> str:
    """The error's code: the enhanced status code (RFC 3463) if the reply has one."""
    enhanced = _ENHANCED.search(message)
    return enhanced.group(0) if enhanced else str(code)


# bounces (RFC 3464)


__all__ = [
    "EmailOverrides",
    "Mail",
    "SmtpProvider",
    "SmtpSettings",
    "by_code",
    "parse_bounce",
    "translate",
]
