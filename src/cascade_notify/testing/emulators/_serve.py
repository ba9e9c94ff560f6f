"""Emulators by name, and `serve()`: start them on real time for a whole app run locally.

Built-ins are lazy dotted paths, so naming one imports only its module.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from cascade_notify.clock import Clock
from cascade_notify.testing.emulators._base import Emulator

#: Every emulator by name, in the order `serve()` numbers their ports.
EMULATORS: Final[Mapping[str, str]] = {
    "whatsapp": "cascade_notify.testing.emulators.whatsapp:WhatsAppEmulator",
    "telegram": "cascade_notify.testing.emulators.telegram:TelegramEmulator",
    "viber": "cascade_notify.testing.emulators.viber:ViberEmulator",
    "max": "cascade_notify.testing.emulators.max:MaxEmulator",
    "vk": "cascade_notify.testing.emulators.vk:VkEmulator",
    "twilio": "cascade_notify.testing.emulators.twilio:TwilioEmulator",
    "call_centre": "cascade_notify.testing.emulators.call_centre:CallCentreEmulator",
    "bitrix24": "cascade_notify.testing.emulators.bitrix24:Bitrix24Emulator",
    "amocrm": "cascade_notify.testing.emulators.amocrm:AmoCrmEmulator",
    "smsru": "cascade_notify.testing.emulators.smsru:SmsRuEmulator",
    "smsc": "cascade_notify.testing.emulators.smsc:SmscEmulator",
}
#: Servers `serve()` also runs that are not HTTP APIs (no control surface, no webhooks).
SERVICES: Final[Mapping[str, str]] = {
    "smtp": "cascade_notify.testing.emulators.smtp:SmtpService",
}
DEFAULT_RECEIPTS_URL: Final = "http://127.0.0.1:8080/receipts"
DEFAULT_BASE_PORT: Final = 8710


def everything() -> list[str]:
    """Every emulator and service `cascade-notify emulate` starts by default: the SMTP
    server only where aiosmtpd (the `dev` extra) is installed."""
    services = [n for n in SERVICES if n != "smtp" or importlib.util.find_spec("aiosmtpd")]
    return [*EMULATORS, *services]


def emulator_class(name: str) -> type[Emulator]:
    """The emulator class called `name`; ValueError listing the known names."""
    path = EMULATORS.get(name) or SERVICES.get(name)
    if path is None:
        raise ValueError(f"unknown emulator {name!r}; known: {', '.join(EMULATORS)}")
    module, _, attr = path.partition(":")
    cls: type[Emulator] = getattr(importlib.import_module(module), attr)
    return cls


@contextlib.asynccontextmanager
async def running(
    names: Iterable[str] | None = None,
    *,
    receipts_url: str | None = DEFAULT_RECEIPTS_URL,
    host: str = "127.0.0.1",
    base_port: int = 0,
    clock: Clock | None = None,
    log: Callable[[str], None] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> AsyncIterator[list[Emulator]]:
    """Start the named emulators (all by default), each posting its webhooks to
    `{receipts_url}/{name}`; stop them all on leaving.

    With `base_port`, emulator number i (in `EMULATORS` order) listens on
    `base_port + 1 + i`, so pasted settings survive a restart; 0 picks free ports.
    `options` holds extra constructor arguments per name.
    """
    wanted = list(EMULATORS) if names is None else list(dict.fromkeys(names))
    for name in wanted:
        emulator_class(name)
    order = [*EMULATORS, *SERVICES]
    started: list[Emulator] = []
    try:
        for name in wanted:
            emu = emulator_class(name)(
                webhook_url=None if receipts_url is None else f"{receipts_url.rstrip('/')}/{name}",
                clock=clock,
                host=host,
                port=base_port + 1 + order.index(name) if base_port else 0,
                log=log,
                **(options or {}).get(name, {}),
            )
            await emu.start()
            started.append(emu)
        yield started
    finally:
        for emu in reversed(started):
            await emu.stop()


def policy_yaml(emulators: Sequence[Emulator]) -> str:
    """The `providers:` block of a policy reaching these emulators (test secrets only)."""
    lines = ["providers:"]
    for emu in emulators:
        lines.append(f"  {emu.name}:")
        for key, value in emu.settings().items():
            lines.append(f"    {key}: {json.dumps(value)}")  # a JSON string is YAML too
    return "\n".join(lines) + "\n"


def banner(emulators: Sequence[Emulator]) -> str:
    """What `serve()` prints: each emulator's URLs, then the settings to paste."""
    out = []
    width = max((len(e.name) for e in emulators), default=0)
    for emu in emulators:
        hooks = emu.webhook_url or "(nowhere: recorded only)"
        out.append(
            f"{emu.name:<{width}}  api_url {emu.api_url}  control {emu.control_url}  "
            f"webhooks -> {hooks}"
        )
    out += ["", "# paste into your cascade policy:", policy_yaml(emulators)]
    return "\n".join(out)


async def serve(
    names: Iterable[str] | None = None,
    *,
    receipts_url: str | None = DEFAULT_RECEIPTS_URL,
    host: str = "127.0.0.1",
    base_port: int = DEFAULT_BASE_PORT,
    log: Callable[[str], None] = print,
    ready: Callable[[list[Emulator]], None] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Run the named emulators on real time until cancelled (Ctrl-C under `asyncio.run`).

    Prints the banner through `log`, then one line per request and webhook; `ready`
    gets the running emulators once they listen.
    """
    async with running(
        names,
        receipts_url=receipts_url,
        host=host,
        base_port=base_port,
        log=log,
        options=options,
    ) as emulators:
        log(banner(emulators))
        if ready is not None:
            ready(emulators)
        await asyncio.Event().wait()


__all__ = [
    "DEFAULT_BASE_PORT",
    "DEFAULT_RECEIPTS_URL",
    "EMULATORS",
    "SERVICES",
    "banner",
    "emulator_class",
    "everything",
    "policy_yaml",
    "running",
    "serve",
]
