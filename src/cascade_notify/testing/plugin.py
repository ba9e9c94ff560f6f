"""pytest plugin (entry point `pytest11`): fixtures for testing code that sends by cascade.

async def test_parcel_notice(notifier_factory):
    notifier = await notifier_factory(POLICY_YAML)
    delivery = await notifier.send(recipient, message)
    ...
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from cascade_notify.notifier import Notifier
from cascade_notify.testing.clock import FakeClock
from cascade_notify.testing.emulators.fixtures import emulators  # noqa: F401  (a fixture)

NotifierFactory = Callable[..., Awaitable[Notifier]]


@pytest.fixture
def fake_clock() -> FakeClock:
    """A `FakeClock` at 2026-01-01T00:00:00Z."""
    return FakeClock()


@pytest.fixture
async def notifier_factory(fake_clock: FakeClock) -> AsyncIterator[NotifierFactory]:
    """`await notifier_factory(yaml_or_path, **kwargs)`: a running notifier on `fake_clock`
    and the memory store, stopped when the test ends."""
    started: list[Notifier] = []

    async def make(source: str | os.PathLike[str], **kwargs: object) -> Notifier:
        kwargs.setdefault("clock", fake_clock)
        kwargs.setdefault("store", "memory://")
        notifier = Notifier.from_yaml(source, **kwargs)  # type: ignore[arg-type]
        await notifier.start()
        started.append(notifier)
        return notifier

    yield make
    for notifier in reversed(started):
        await notifier.stop()
