"""Sections `whatsapp`, `viber`, `twilio`, `smsru` and `smsc`: messages/s through each
provider to its API's success answer on loopback (the SMS gateways post forms).

`benchmarks._api_sink` (a process of its own) answers every send with the body the
provider's emulator gives on success (a `wamid.` id; Viber's `status` 0 and 64-bit
`message_token`) and counts every message. The emulators themselves record every
request and top out near a thousand sends a second here: measured against them, both
clients would measure the emulator. Against the sink, each in a process of its own,
at the same number of requests in flight:

- `library`: `Notifier` (memory store, `worker.concurrency` = in flight) sending
  deliveries whose one step is the provider (`wait_for: accepted`), on its default
  transport; send → HTTP POST → final;
- `httpx`: a bare pooled `httpx.AsyncClient()` posting the same bodies with the same
  headers to the same URL, prepared beforehand: the floor.

    python -m benchmarks.messengers <name> <kind> <settings-json> <count> <in_flight> <tag> <max>

is one client process (it prints one JSON line: count, seconds, failures).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from typing import Any

from benchmarks._common import Child, Options, Result, Spread, Table, Target, num, ratio, say
from benchmarks.over_http import WARM, pool_loop, sink_stats

KINDS = ("library", "httpx")
CHANNELS = {
    "whatsapp": "whatsapp",
    "viber": "viber",
    "twilio": "sms",
    "smsru": "sms",
    "smsc": "sms",
}
#: The emulators' default test credentials, pointed at the sink.
SETTINGS: dict[str, dict[str, str]] = {
    "whatsapp": {
        "type": "whatsapp_cloud",
        "phone_number_id": "106540352242922",
        "access_token": "EAAemulator-access-token",
        "app_secret": "emulator-app-secret",
        "verify_token": "emulator-verify-token",
    },
    "viber": {
        "type": "viber_bot",
        "auth_token": "4453b6ac1b2c3d4e-e02c5f1217480500-emulatortoken0001",
        "sender_name": "Acme Delivery",
    },
    "twilio": {
        "type": "twilio_sms",
        "account_sid": "AC" + "0123456789abcdef" * 2,
        "auth_token": "emulator-auth-token",
        "from_number": "+15005550006",
    },
    "smsru": {"type": "smsru", "api_id": "EMULATOR-API-ID-0000"},
    "smsc": {"type": "smsc", "login": "emulator", "password": "emulator-password"},
}
ADDRESSES = {
    "whatsapp": "+79161234567",
    "viber": "01234567890A=",
    "twilio": "+79161234567",
    "smsru": "+79161234567",
    "smsc": "+79161234567",
}
TITLES = {
    "whatsapp": "WhatsApp Cloud API",
    "viber": "Viber REST Bot API",
    "twilio": "Twilio Messages API",
    "smsru": "SMS.ru sms/send",
    "smsc": "SMSC send.php",
}
POLICY = """
store: memory://
worker: {{concurrency: {in_flight}, batch: 100}}
providers:
  p: {settings}
policies:
  p:
    brakes: {{sms_per_recipient_per_hour: null}}  # one test number takes every SMS
    steps:
      - {{channel: {channel}, providers: [p], wait_for: accepted, timeout: 10m}}
"""


def text(tag: str, index: int) -> str:
    return f"Your parcel bench-{tag}-{index} has arrived at the pick-up point"


# the clients (in their own processes)


async def library(
    name: str, settings: dict[str, Any], count: int, in_flight: int, tag: str
) -> tuple[float, int]:
    from cascade_notify import Message, Notifier, Recipient, load_config

    policy = POLICY.format(
        in_flight=in_flight, settings=json.dumps(settings), channel=CHANNELS[name]
    )
    notifier = Notifier(load_config(policy))
    recipient = Recipient(id="u1", **{CHANNELS[name]: ADDRESSES[name]})
    finished: dict[str, int] = defaultdict(int)
    done = asyncio.Event()
    target = WARM

    def count_finished(event: Any) -> None:
        if event.kind == "finished":
            finished[event.status] += 1
            if sum(finished.values()) >= target:
                done.set()

    notifier.subscribe(count_finished)

    async def burst(last: int, label: str) -> None:
        for start in range(0, last, 100):
            chunk = range(start, min(last, start + 100))
            await asyncio.gather(
                *(notifier.send(recipient, Message(text=text(label, i))) for i in chunk)
            )

    async with notifier:
        await burst(WARM, "warm")
        await asyncio.wait_for(done.wait(), 60)
        finished.clear()
        done.clear()
        target = count
        started = time.perf_counter()
        await burst(count, tag)
        await done.wait()
        seconds = time.perf_counter() - started
    return seconds, count - finished["delivered"]


def prepared(
    name: str, settings: dict[str, Any], count: int, tag: str
) -> tuple[str, list[tuple[bytes, dict[str, str]]]]:
    """The URL, and the bodies and headers the provider would post for these messages."""
    from cascade_notify import Message, Recipient
    from cascade_notify.models import new_id
    from cascade_notify.providers import registry
    from cascade_notify.providers._http import form_body, json_body
    from cascade_notify.providers.base import SendRequest

    cls = registry.get(settings["type"])
    values = {k: v for k, v in settings.items() if k != "type"}
    provider: Any = cls("p", cls.Settings.model_validate(values))
    channel, address = CHANNELS[name], ADDRESSES[name]
    recipient = Recipient(id="u1", **{channel: address})
    form = {"content-type": "application/x-www-form-urlencoded"}
    if name == "whatsapp":
        url = provider.url
        token = provider.settings.access_token.get_secret_value()
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    elif name == "twilio":
        import base64

        url = provider.messages_url
        secret = provider.settings.auth_token.get_secret_value()
        basic = base64.b64encode(f"{provider.settings.account_sid}:{secret}".encode()).decode()
        headers = {**form, "authorization": f"Basic {basic}", "accept": "application/json"}
    elif name == "smsru":
        url, headers = provider.url("sms/send"), form
    elif name == "smsc":
        url, headers = provider.url("send.php"), form
    else:
        url = f"{provider.settings.api_url}/send_message"
        token = provider.settings.auth_token.get_secret_value()
        headers = {"x-viber-auth-token": token, "content-type": "application/json"}
    out = []
    for index in range(count):
        request = SendRequest(
            attempt_id=new_id(),
            delivery_id=new_id(),
            channel=channel,
            address=address,
            recipient=recipient,
            message=Message(text=text(tag, index)),
        )
        if CHANNELS[name] == "sms":
            out.append((form_body(provider.form(request)), headers))
        else:
            out.append((json_body(provider.payload(request)), headers))
    return url, out


async def httpx_client(
    name: str, settings: dict[str, Any], count: int, in_flight: int, tag: str
) -> tuple[float, int]:
    import httpx

    async with httpx.AsyncClient() as client:
        url, warm = prepared(name, settings, WARM, "warm")
        _, requests = prepared(name, settings, count, tag)

        async def post(body: bytes, headers: dict[str, str]) -> int:
            response = await client.post(url, content=body, headers=headers)
            return 200 if response.is_success else response.status_code  # Twilio's 201

        await pool_loop(post, warm, min(in_flight, WARM))
        return await pool_loop(post, requests, in_flight)


def client_main(argv: list[str]) -> None:
    name, kind, settings, count, in_flight, tag, max_seconds = argv
    client = library if kind == "library" else httpx_client
    work = client(name, json.loads(settings), int(count), int(in_flight), tag)
    seconds, failures = asyncio.run(asyncio.wait_for(work, float(max_seconds)))
    sys.stdout.write(json.dumps({"count": int(count), "seconds": seconds, "failures": failures}))
    sys.stdout.write("\n")


# the sections (in the runner)


def run_for(name: str, options: Options) -> Result:
    count = 300 if options.quick else 3000
    levels = options.concurrency
    rates: dict[tuple[int, str], list[float]] = defaultdict(list)
    problems: list[str] = []
    checked = 0
    sink = Child("_api_sink", 3600)
    try:
        port = int(sink.read(30)["port"])
        settings = json.dumps({**SETTINGS[name], "api_url": f"http://127.0.0.1:{port}"})
        for run_number in range(options.runs):
            for in_flight in levels:
                for kind in KINDS:
                    tag = f"r{run_number}c{in_flight}k{KINDS.index(kind)}{os.getpid()}"
                    bound = 120 if options.quick else 600
                    child = Child("messengers", name, kind, settings, count, in_flight, tag, bound)
                    try:
                        found = child.read(bound + 60)
                    finally:
                        child.close()
                    rates[in_flight, kind].append(found["count"] / found["seconds"])
                    seen = sink_stats(port, tag)
                    checked += 1
                    lost, doubled = count - seen["distinct"], seen["requests"] - seen["distinct"]
                    if lost or doubled or found["failures"] or seen["top_index"] != count - 1:
                        problems.append(
                            f"{kind} at {in_flight} (run {run_number + 1}): {lost} lost, "
                            f"{doubled} doubled, {found['failures']} failed"
                        )
                    say(
                        f"  {name} run {run_number + 1} in flight {in_flight:>2} {kind:<8} "
                        f"{rates[in_flight, kind][-1]:8.0f} msgs/s  sink: "
                        f"{seen['requests']} requests, {seen['distinct']} distinct"
                    )
    finally:
        sink.close()

    title = TITLES[name]
    table = Table(
        f"{name}: messages/s through `{SETTINGS[name]['type']}` to the {title} success "
        f"answer on loopback, {count:,} per run, median (min–max) of {options.runs} runs",
        ["in flight", "client", "msgs/s", "library ÷ this", "µs/msg"],
    )
    targets: list[Target] = []
    for in_flight in levels:
        ours = Spread.of(rates[in_flight, "library"])
        floor = Spread.of(rates[in_flight, "httpx"])
        for kind, spread in (("library", ours), ("httpx", floor)):
            table.add(
                in_flight,
                kind,
                spread.text(),
                "—" if kind == "library" else ratio(ours.median, floor.median),
                num(1e6 / spread.median, 0),
            )
        need = 2.0 if in_flight < 32 else 4.0
        targets.append(
            Target(
                name,
                f"library ≥ {need:g}× bare httpx at {in_flight} in flight",
                ratio(ours.median, floor.median),
                ours.median >= need * floor.median,
            )
        )
    table.notes.append(
        f"Sink check: {checked} client runs of {count:,} messages, every message counted at the "
        "sink exactly once: "
        + ("yes, none lost, none doubled." if not problems else "NO: " + "; ".join(problems))
    )
    targets.append(
        Target(
            name,
            "every message counted once at the sink",
            f"{checked} runs, {len(problems)} with a message lost or doubled",
            not problems,
        )
    )
    return Result([table], targets)


def whatsapp(options: Options) -> Result:
    return run_for("whatsapp", options)


def viber(options: Options) -> Result:
    return run_for("viber", options)


def twilio(options: Options) -> Result:
    return run_for("twilio", options)


def smsru(options: Options) -> Result:
    return run_for("smsru", options)


def smsc(options: Options) -> Result:
    return run_for("smsc", options)


if __name__ == "__main__":
    client_main(sys.argv[1:])
