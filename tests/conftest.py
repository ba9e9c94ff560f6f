"""Shared fixtures. The `fake_clock` and `notifier_factory` fixtures come from the
package's own pytest plugin (cascade_notify.testing.plugin), as users get them."""

from __future__ import annotations

import pytest

from cascade_notify import Message, Recipient


@pytest.fixture(autouse=True)
def _own_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in a folder of its own, so a policy without `store:` gets its own
    default SQLite file and no test sees another's."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def anna() -> Recipient:
    return Recipient(
        id="anna",
        whatsapp="+79161234567",
        telegram="100200300",
        viber="anna.v",
        sms="+79161234567",
        email="anna@example.com",
        call="+79161234567",
        timezone="Europe/Moscow",
    )


@pytest.fixture
def parcel() -> Message:
    return Message(text="Your parcel A-1234 has arrived.")
