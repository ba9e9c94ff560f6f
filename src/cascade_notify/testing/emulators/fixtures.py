"""pytest fixture `emulators`: start loopback emulators for a test, on its fake clock.

async def test_parcel_reaches_whatsapp(emulators, notifier_factory, fake_clock):
    wa = await emulators("whatsapp", webhook_url=receipts_url + "/whatsapp")
    wa.script("79161234567", "read")
    ...                                   # a policy whose api_url is wa.api_url
    await fake_clock.advance(2)           # the receipts arrive
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar, overload

import pytest

from cascade_notify.testing.clock import FakeClock
from cascade_notify.testing.emulators._base import Emulator
from cascade_notify.testing.emulators._serve import emulator_class

E = TypeVar("E", bound=Emulator)


class EmulatorFactory:
    """`await emulators(name_or_class, **settings)`: a started emulator, on the test's
    `fake_clock` unless `clock=` says otherwise; all are stopped when the test ends."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.started: list[Emulator] = []

    @overload
    async def __call__(self, kind: type[E], /, **settings: Any) -> E: ...

    @overload
    async def __call__(self, kind: str, /, **settings: Any) -> Emulator: ...

    async def __call__(self, kind: str | type[Emulator], /, **settings: Any) -> Emulator:
        cls = emulator_class(kind) if isinstance(kind, str) else kind
        settings.setdefault("clock", self.clock)
        emu = cls(**settings)
        await emu.start()
        self.started.append(emu)
        return emu

    async def close(self) -> None:
        while self.started:
            await self.started.pop().stop()


@pytest.fixture
async def emulators(fake_clock: FakeClock) -> AsyncIterator[EmulatorFactory]:
    """Start emulators by name (`"whatsapp"`, `"telegram"`, `"viber"`) or class."""
    factory = EmulatorFactory(fake_clock)
    try:
        yield factory
    finally:
        await factory.close()


__all__ = ["EmulatorFactory", "emulators"]
