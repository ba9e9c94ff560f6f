"""Section: what routing costs `send()`: no `routes:` against ten of them.

Three notifiers on one store, one policy file each, with the same providers and
policies: one with no `routes:`; one with ten routes on every key (country, region,
locale, tags, category, channels) that the measured recipients match none of, so every
send tries all ten and falls to `default_policy` (routing's worst case); and the same
ten with the region route asking for tags instead (no geocoder lookup). Recipients are
built before the clock starts (their numbers are parsed then, as an application does
before it calls `send`, and routing reads their country from that parse); then
`send()` is timed one call after another (no worker), the three taking turns call by
call so a busy moment costs them alike.

Target: routing adds under 5% to `send` on every store.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid

from benchmarks._common import Options, Result, Spread, Table, Target, drop_schema, pg_url, say

POLICY = """
store: STORE
sender_country: RU
providers:
  tg: {type: fake, channel: telegram, behavior: no_receipt}
  vb: {type: fake, channel: viber, behavior: no_receipt}
  sms: {type: fake, channel: sms, behavior: no_receipt}
policies:
  standard:
    steps:
      - {channel: telegram, providers: [tg], wait_for: accepted}
      - {channel: sms, providers: [sms], wait_for: accepted}
  regions:
    steps:
      - {channel: viber, providers: [vb], wait_for: accepted}
      - {channel: sms, providers: [sms], wait_for: accepted}
default_policy: standard
"""
ROUTES = """
routes:
  - {when: {country: [KZ, UZ, KG]}, policy: regions}
  - {when: {region: [Kazan, Ufa, Samara]}, policy: regions}
  - {when: {locale: [kk, uz]}, policy: regions}
  - {when: {tags: [vip, b2b]}, policy: regions}
  - {when: {category: marketing}, policy: regions}
  - {when: {channels: [max, vk]}, policy: regions}
  - {when: {country: RU, tags: rural}, policy: regions}
  - {when: {country: BY, channels: viber}, policy: regions}
  - {when: {locale: ru-BY, category: transactional}, policy: regions}
  - {when: {tags: [wholesale], channels: telegram}, policy: regions}
"""
#: The same ten with the region route asking for tags instead: what the geocoder costs.
NO_REGION = ROUTES.replace("{region: [Kazan, Ufa, Samara]}", "{tags: [rural, gold]}")
WAYS = ("no routes", "10 routes", "10, no region")


async def timed(url: str, sends: int) -> dict[str, float]:
    """Microseconds per `send()` each way: the median of `sends` calls each."""
    from cascade_notify import Message, Notifier, Recipient, load_config

    policy = POLICY.replace("STORE", url)
    notifiers = [
        Notifier(load_config(policy + routes), worker=False) for routes in ("", ROUTES, NO_REGION)
    ]
    text = Message(text="Your parcel has arrived.")
    took: dict[str, list[float]] = {way: [] for way in WAYS}
    async with notifiers[0], notifiers[1], notifiers[2]:
        for n in range(sends):
            for way, notifier in zip(WAYS, notifiers, strict=True):
                recipient = Recipient(
                    id=f"r{n}",
                    sms=f"+7916{n % 10_000_000:07d}",
                    telegram=str(1_000_000 + n),
                    locale="ru-RU",
                    tags=frozenset({"new"}),
                )
                started = time.perf_counter()
                made = await notifier.send(recipient, text)
                took[way].append((time.perf_counter() - started) * 1e6)
                if made.policy != "standard":
                    raise RuntimeError(f"{way}: a route matched ({made.route})")
    return {way: Spread.of(values).median for way, values in took.items()}


def run(options: Options) -> Result:
    sends = 500 if options.quick else 5_000
    stores = [s for s in ("memory", "sqlite", "postgres") if options.has(s)]
    figures: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for store in stores:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            url = {
                "memory": "memory://",
                "sqlite": f"sqlite:///{tmp}/routing.db",
                "postgres": pg_url(options.pg, schema) if store == "postgres" else "",
            }[store]
            try:
                for number in range(options.runs):
                    medians = asyncio.run(timed(url, sends))
                    for way, micros in medians.items():
                        figures.setdefault((store, way), []).append(micros)
                    shown = ", ".join(f"{w} {v:.1f} µs" for w, v in medians.items())
                    say(f"  routing run {number + 1} {store}: {shown}")
            finally:
                if store == "postgres":
                    drop_schema(options.pg, schema)
    table = Table(
        f"Routing: µs per `send()`, no routes against 10 that all miss "
        f"({options.runs} runs of {sends} sends per way, one at a time, no worker)",
        ["store", *WAYS, "routing adds", "no region: adds"],
    )
    targets = []
    for store in stores:
        spreads = {way: Spread.of(figures[(store, way)]) for way in WAYS}
        floor = spreads["no routes"].median
        added = (spreads["10 routes"].median - floor) / floor * 100
        plain = (spreads["10, no region"].median - floor) / floor * 100
        table.add(
            store, *(spreads[w].text(" µs", 1) for w in WAYS), f"{added:+.1f}%", f"{plain:+.1f}%"
        )
        targets.append(
            Target("routing", f"{store}: 10 routes add < 5% to send", f"{added:+.1f}%", added < 5.0)
        )
    table.notes.append(
        "Every route misses, so each send tries all ten (country, region, locale, tags, "
        "category and channels are all asked) and gets default_policy. Recipients are built "
        "outside the timing; their numbers' countries come from that parse. Each figure is "
        "the median of the runs' medians. `10, no region`: the region route asks for tags "
        "instead, so no number is looked up in the geocoder's table."
    )
    return Result([table], targets)
