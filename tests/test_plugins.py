"""Provider types from other packages, by entry point, with no change to this one."""

from __future__ import annotations

import sys
import textwrap

import pytest

from cascade_notify import PolicyError, load_config
from cascade_notify.errors import RegistryError
from cascade_notify.providers import registry

PLUGIN = """
from typing import ClassVar
from cascade_notify.models import ReceiptStatus
from cascade_notify.providers import Provider, ProviderSettings, SendRequest, SendResult


class EchoSettings(ProviderSettings):
    token: str


class EchoSMS(Provider):
    type_name = "echo_sms"
    default_channel = "sms"
    receipts: ClassVar = frozenset({ReceiptStatus.DELIVERED})
    Settings = EchoSettings
    sent: ClassVar[list[str]] = []

    async def send(self, request: SendRequest) -> SendResult:
        self.sent.append(request.text)
        return SendResult(f"echo-{len(self.sent)}")
"""


def install(site, name: str, entry_points: str) -> None:
    """Lay out an installed distribution the way pip does: the module and its dist-info."""
    (site / f"{name}.py").write_text(PLUGIN)
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("echo_sms", "echo_fake", "echo_sms_one", "echo_sms_two"):
        registry.unregister(name)
        sys.modules.pop(f"echo_plugin_{name}", None)


def test_plugin_type_is_usable_from_yaml(site):
    """An installed package's entry point makes its type usable in a policy."""
    install(
        site,
        "echo_plugin_a",
        """
        [cascade_notify.providers]
        echo_sms = echo_plugin_a:EchoSMS
    """,
    )
    config = load_config("""
providers:
  echo: {type: echo_sms, token: t}
policies:
  p: {steps: [{channel: sms, providers: [echo]}]}
""")
    assert config.providers["echo"].cls.__name__ == "EchoSMS"
    assert config.providers["echo"].channel == "sms"
    assert "echo_sms" in registry.available()


def test_plugin_settings_are_validated(site):
    """A plugin's own settings model is enforced with the field named."""
    install(
        site,
        "echo_plugin_b",
        """
        [cascade_notify.providers]
        echo_sms = echo_plugin_b:EchoSMS
    """,
    )
    with pytest.raises(PolicyError, match=r"providers\.echo\.token"):
        load_config("""
providers:
  echo: {type: echo_sms}
policies:
  p: {steps: [{channel: sms, providers: [echo]}]}
""")


def test_plugin_claiming_a_builtin_name_is_an_error(site):
    """A plugin may not take over a built-in type."""
    install(
        site,
        "echo_plugin_c",
        """
        [cascade_notify.providers]
        fake = echo_plugin_c:EchoSMS
    """,
    )
    with pytest.raises(RegistryError, match="built in and also claimed"):
        registry.get("fake")


def test_two_plugins_claiming_one_name_is_an_error(site):
    """Two packages claiming one type name is refused, naming both."""
    install(
        site, "echo_plugin_d", "[cascade_notify.providers]\necho_fake = echo_plugin_d:EchoSMS\n"
    )
    install(
        site, "echo_plugin_e", "[cascade_notify.providers]\necho_fake = echo_plugin_e:EchoSMS\n"
    )
    with pytest.raises(RegistryError, match="claimed by several plugins"):
        registry.get("echo_fake")


def test_unknown_type_lists_known_ones():
    """An unknown type says which types exist."""
    with pytest.raises(RegistryError, match=r"unknown provider type 'nope'; known types: .*fake"):
        registry.get("nope")
