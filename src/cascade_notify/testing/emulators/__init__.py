"""Loopback emulators of the providers' APIs: run a whole app locally with no accounts.

    async with WhatsAppEmulator(webhook_url="http://127.0.0.1:8080/receipts/whatsapp") as emu:
        emu.script("79161234567", "read")          # accepted, then delivered and read
        ...                                        # point whatsapp_cloud's api_url at emu.api_url

Every emulator shares one base (`Emulator`): the real paths, checks and answers of its
API, a record of every request, per-address scripts, signed webhooks after delays on
an injected clock, and the same control surface from Python and over HTTP under
`/__emulator/`. See docs/emulators.md.
"""

from cascade_notify.testing.emulators._base import (
    Accepted,
    Attempt,
    Emulator,
    RecordedRequest,
    Webhook,
)
from cascade_notify.testing.emulators._script import BEHAVIOURS, FLOWS, Entry
from cascade_notify.testing.emulators._serve import (
    EMULATORS,
    banner,
    emulator_class,
    policy_yaml,
    running,
    serve,
)
from cascade_notify.testing.emulators.amocrm import AmoCrmEmulator
from cascade_notify.testing.emulators.bitrix24 import Bitrix24Emulator
from cascade_notify.testing.emulators.call_centre import CallCentreEmulator
from cascade_notify.testing.emulators.max import MaxEmulator
from cascade_notify.testing.emulators.smsc import SmscEmulator
from cascade_notify.testing.emulators.smsru import SmsRuEmulator
from cascade_notify.testing.emulators.telegram import TelegramEmulator
from cascade_notify.testing.emulators.twilio import TwilioEmulator
from cascade_notify.testing.emulators.viber import ViberEmulator
from cascade_notify.testing.emulators.vk import VkEmulator
from cascade_notify.testing.emulators.whatsapp import WhatsAppEmulator

__all__ = [
    "BEHAVIOURS",
    "EMULATORS",
    "FLOWS",
    "Accepted",
    "AmoCrmEmulator",
    "Attempt",
    "Bitrix24Emulator",
    "CallCentreEmulator",
    "Emulator",
    "Entry",
    "MaxEmulator",
    "RecordedRequest",
    "SmsRuEmulator",
    "SmscEmulator",
    "TelegramEmulator",
    "TwilioEmulator",
    "ViberEmulator",
    "VkEmulator",
    "Webhook",
    "WhatsAppEmulator",
    "banner",
    "emulator_class",
    "policy_yaml",
    "running",
    "serve",
]
