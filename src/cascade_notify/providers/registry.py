"""Provider types by name: built-ins as lazy dotted paths, plugins by entry point.

A third-party package adds a type with an entry point in the
`cascade_notify.providers` group (`mytype = "mypkg.module:MyProvider"`); it is
loaded the first time a policy names it. A name claimed twice is an error,
never a silent override.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from cascade_notify.errors import RegistryError
from cascade_notify.providers.base import Provider

ENTRY_POINT_GROUP = "cascade_notify.providers"

BUILTIN: dict[str, str] = {
    "fake": "cascade_notify.providers.fake:FakeProvider",
    "telegram_bot": "cascade_notify.providers.telegram:TelegramProvider",
    "viber_bot": "cascade_notify.providers.viber:ViberBotProvider",
    "webhook": "cascade_notify.providers.webhook:WebhookProvider",
    "whatsapp_cloud": "cascade_notify.providers.whatsapp:WhatsAppCloudProvider",
    "smtp": "cascade_notify.providers.email:SmtpProvider",
    "max_bot": "cascade_notify.providers.max:MaxProvider",
    "vk_community": "cascade_notify.providers.vk:VkProvider",
    "twilio_sms": "cascade_notify.providers.sms.twilio:TwilioSmsProvider",
    "call_webhook": "cascade_notify.providers.call.webhook:CallWebhookProvider",
    "call_queue": "cascade_notify.providers.call.queue:CallQueueProvider",
    "bitrix24_call_task": "cascade_notify.providers.call.bitrix24:Bitrix24CallTaskProvider",
    "amocrm_call_task": "cascade_notify.providers.call.amocrm:AmoCrmCallTaskProvider",
    "smsru": "cascade_notify.providers.sms.smsru:SmsRuProvider",
    "smsc": "cascade_notify.providers.sms.smsc:SmscProvider",
}

_loaded: dict[str, type[Provider]] = {}
_registered: dict[str, type[Provider]] = {}


def register(type_name: str, cls: type[Provider]) -> None:
    """Register a provider class from Python (tests, apps without packaging)."""
    known = _registered.get(type_name)
    if type_name in BUILTIN or (known is not None and known is not cls):
        raise RegistryError(f"provider type {type_name!r} is already registered")
    _registered[type_name] = cls


def unregister(type_name: str) -> None:
    _registered.pop(type_name, None)
    _loaded.pop(type_name, None)


def _plugin_paths() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, []).append(ep.value)
    return found


def available() -> list[str]:
    """Every type name a policy may use."""
    return sorted({*BUILTIN, *_registered, *_plugin_paths()})


def get(type_name: str) -> type[Provider]:
    """The provider class for `type_name`; raise RegistryError saying what is known."""
    # entry points are read on every look-up (policy loading, not the hot path), so a
    # colliding plugin is caught even after the type was first loaded
    plugins = _plugin_paths().get(type_name, [])
    if type_name in BUILTIN and plugins:
        raise RegistryError(
            f"provider type {type_name!r} is built in and also claimed by plugin {plugins[0]}"
        )
    if len(set(plugins)) > 1:
        raise RegistryError(
            f"provider type {type_name!r} is claimed by several plugins: {', '.join(plugins)}"
        )
    cls = _loaded.get(type_name) or _registered.get(type_name)
    if cls is not None:
        return cls
    path = BUILTIN.get(type_name) or (plugins[0] if plugins else None)
    if path is None:
        raise RegistryError(
            f"unknown provider type {type_name!r}; known types: {', '.join(available())}"
        )
    cls = _import(type_name, path)
    _loaded[type_name] = cls
    return cls


def _import(type_name: str, path: str) -> type[Provider]:
    module_name, _, attr = path.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise RegistryError(
            f"provider type {type_name!r} cannot be loaded from {path}: {exc}"
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, Provider)):
        raise RegistryError(
            f"provider type {type_name!r} ({path}) is not a cascade_notify Provider subclass"
        )
    return obj
