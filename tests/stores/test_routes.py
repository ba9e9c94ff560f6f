"""The route that chose a delivery's policy is kept by every store (memory, SQLite,
PostgreSQL), beside the channels known unusable, and shown by the timeline (issue 20)."""

from __future__ import annotations

from cascade_notify import Message, Notifier, Recipient
from cascade_notify.models import Route
from cascade_notify.observe.timeline import timeline
from cascade_notify.policy import load_config
from cascade_notify.stores import Store
from cascade_notify.testing import FakeClock

from .conftest import NOW, StoreFactory, delivery

POLICY = """
sender_country: RU
providers:
  tg:  {type: fake, channel: telegram, behavior: no_receipt}
  sms: {type: fake, channel: sms, behavior: no_receipt}
policies:
  service:
    steps:
      - {channel: telegram, providers: [tg], wait_for: accepted}
      - {channel: sms, providers: [sms]}
  vip:
    steps:
      - {channel: sms, providers: [sms]}
default_policy: service
routes:
  - when: {country: [RU, KZ], tags: vip}
    policy: vip
"""
PARCEL = Message(text="Your parcel A-1234 has arrived.")
VIP = Route(source="route", index=0, when=(("country", ("RU", "KZ")), ("tags", ("vip",))))


async def _sent(store: Store) -> dict[str, str]:
    notifier = Notifier(load_config(POLICY), store=store, clock=FakeClock(NOW), worker=False)
    async with notifier:
        vip = Recipient(id="v", sms="+79161234567", tags={"vip"})
        plain = Recipient(id="p", sms="+79161234567", telegram="42")
        ids = {
            "route": (await notifier.send(vip, PARCEL)).id,
            "default": (await notifier.send(plain, PARCEL)).id,
            "explicit": (await notifier.send(vip, PARCEL, policy="service")).id,
        }
        many = await notifier.send_many([(vip, PARCEL), (plain, PARCEL)])
        first, second = many.deliveries
        assert first is not None and second is not None
        ids["many route"], ids["many default"] = first.id, second.id
    return ids


async def test_the_route_is_kept_by_the_store(store_factory: StoreFactory) -> None:
    """Read back by another store object on the same database, each delivery says how
    its policy was chosen: the route (index, conditions), the default, or the caller."""
    ids = await _sent(store_factory())
    reader = store_factory()
    await reader.open()
    try:
        found = {kind: await reader.get(i) for kind, i in ids.items()}
    finally:
        await reader.close()
    routes = {kind: (d.policy, d.route) for kind, d in found.items() if d is not None}
    assert routes == {
        "route": ("vip", VIP),
        "default": ("service", Route(source="default")),
        "explicit": ("service", Route(source="explicit")),
        "many route": ("vip", VIP),
        "many default": ("service", Route(source="default")),
    }
    assert all(d is not None and d.unusable == {} for d in found.values())


async def test_the_route_and_unusable_channels_share_their_column(store: Store) -> None:
    """A delivery made with unusable channels keeps both, each whole; one made before
    routes were recorded reads back with none."""
    made, _ = await store.create(delivery(unusable={"telegram": "blocked the bot"}, route=VIP))
    old, _ = await store.create(delivery())
    again = await store.get(made.id)
    before = await store.get(old.id)
    assert again is not None and before is not None
    assert (again.unusable, again.route) == ({"telegram": "blocked the bot"}, VIP)
    assert (before.unusable, before.route) == ({}, None)
    claims = await store.claim(NOW, limit=10, lease=30.0)
    assert {c.delivery.id: c.delivery.route for c in claims} == {made.id: VIP, old.id: None}


async def test_the_timeline_shows_the_route(store_factory: StoreFactory) -> None:
    """`timeline()` (what `cascade-notify status` prints) says which route chose the
    policy, in its created entry and in its JSON."""
    ids = await _sent(store_factory())
    reader = store_factory()
    await reader.open()
    try:
        routed, chosen = await reader.get(ids["route"]), await reader.get(ids["explicit"])
    finally:
        await reader.close()
    assert routed is not None and chosen is not None
    story = timeline(routed)
    assert story.entries[0].detail == "vip by routes[0]: country RU or KZ; tags vip"
    assert story.to_dict()["route"] == {
        "source": "route",
        "index": 0,
        "when": {"country": ["RU", "KZ"], "tags": ["vip"]},
    }
    assert timeline(chosen).entries[0].detail == "service by the caller: send(policy=)"
