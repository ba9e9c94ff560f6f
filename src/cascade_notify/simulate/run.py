"""Running a policy through a scenario: the real notifier, engine, breakers and memory
store, on a `FakeClock`, with `SimulatedProvider`s in place of the policy's providers."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path
from types import MappingProxyType

from cascade_notify.errors import PolicyIssue
from cascade_notify.events import Event
from cascade_notify.models import Delivery, Message
from cascade_notify.notifier import Notifier
from cascade_notify.policy import Config
from cascade_notify.simulate.clock import SimClock
from cascade_notify.simulate.fleet import SimulatedProvider, World, draw_traffic
from cascade_notify.simulate.report import PolicyReport, Report, saving, tally
from cascade_notify.simulate.scenario import Scenario, ScenarioError

MESSAGE = Message(text="Your parcel has arrived at the pick-up point; it is kept for 5 days.")


def check_against(scenario: Scenario, config: Config) -> None:
    """Refuse a scenario that names providers or channels the policy file does not have."""
    names = set(config.providers)
    channels = {p.channel for p in config.providers.values()}
    issues: list[PolicyIssue] = []
    for outage in scenario.outages:
        if outage.provider is not None and outage.provider not in names:
            issues.append(
                scenario.issue(
                    ("outages", outage.index, "provider"),
                    f"{outage.provider!r} is not a provider of {_label(config)} "
                    f"({', '.join(sorted(names))})",
                )
            )
        if outage.channel is not None and outage.channel not in channels:
            issues.append(
                scenario.issue(
                    ("outages", outage.index, "channel"),
                    f"no provider of {_label(config)} sends on {outage.channel} "
                    f"(its channels: {', '.join(sorted(channels))})",
                )
            )
    for key in scenario.model.prices:
        if key not in names and key not in channels:
            issues.append(
                scenario.issue(
                    ("prices", key),
                    f"{key!r} is neither a provider nor a channel of {_label(config)}",
                )
            )
    if issues:
        raise ScenarioError(issues)


def _label(config: Config) -> str:
    return Path(config.source).name if config.source else "the policy"


def _price(scenario: Scenario, name: str, channel: str) -> float | None:
    prices = scenario.model.prices
    return prices.get(name, prices.get(channel))


def without_breakers(config: Config) -> Config:
    """`config` with every provider's automatic breaker off."""
    providers = {n: dataclasses.replace(p, breaker=None) for n, p in config.providers.items()}
    return dataclasses.replace(config, providers=MappingProxyType(providers))


async def run_once(
    config: Config, scenario: Scenario, *, seed: int, policy: str | None = None
) -> list[Delivery]:
    """One run of the scenario: every delivery, final (or still pending at the end)."""
    rng = random.Random(seed)
    arrivals = draw_traffic(scenario, rng)
    world = World(scenario, arrivals)
    clock = SimClock(start=scenario.start_ts)
    providers = {
        name: SimulatedProvider(
            name, spec.channel, world, _price(scenario, name, spec.channel), clock=clock
        )
        for name, spec in config.providers.items()
    }
    notifier = Notifier(config, clock=clock, store="memory://", providers=providers)
    chosen = notifier.policy(policy)
    finished = 0

    def count(event: Event) -> None:
        nonlocal finished
        if event.kind == "finished":
            finished += 1

    notifier.subscribe(count)
    ids: list[str] = []
    total = len(arrivals)

    async def feed() -> None:
        send = notifier.send
        sent = world.by_delivery
        for arrival in arrivals:
            if arrival.ts > clock.now():
                await clock.sleep(arrival.ts - clock.now())
            made = (await send(arrival.recipient, MESSAGE, policy=chosen.name)).id
            sent[made] = arrival
            ids.append(made)

    end = scenario.start_ts + scenario.model.traffic.window
    end += scenario.model.run_for or chosen.ttl + 60.0
    # the engine's retry back-off draws its jitter from the `random` module (tenacity's
    # strategy): seeded from this run's generator for the run, and put back after
    jitter = rng.getrandbits(64)
    saved = random.getstate()
    random.seed(jitter)
    try:
        async with notifier:
            feeder = asyncio.get_running_loop().create_task(feed())
            await clock.drive(end, lambda: feeder.done() and finished >= total)
            if feeder.done():
                feeder.result()  # a send that failed fails the run, with its error
            else:
                feeder.cancel()
            return [await notifier.get(i) for i in ids]
    finally:
        random.setstate(saved)


async def simulate_async(
    config: Config,
    scenario: Scenario,
    *,
    seed: int = 0,
    compare: Config | None = None,
    policy: str | None = None,
    breaker_baseline: bool = True,
) -> Report:
    """`simulate`, for code already in an event loop."""
    reports: list[PolicyReport] = []
    for each in (config, compare):
        if each is None:
            continue
        check_against(scenario, each)
        name = policy if policy is not None else each.default_policy
        finals = await run_once(each, scenario, seed=seed, policy=name)
        report = tally(_label(each), name, finals, scenario.start_ts)
        if breaker_baseline:
            if any(p.breaker is not None for p in each.providers.values()):
                bare = await run_once(without_breakers(each), scenario, seed=seed, policy=name)
                base = tally(_label(each), name, bare, scenario.start_ts)
            else:
                base = report
            report = dataclasses.replace(report, breaker_saved=saving(base, report))
        reports.append(report)
    return Report(scenario.name, seed, scenario.model.currency, tuple(reports))


def simulate(
    config: Config,
    scenario: Scenario,
    *,
    seed: int = 0,
    compare: Config | None = None,
    policy: str | None = None,
    breaker_baseline: bool = True,
) -> Report:
    """Run `config`'s policy (its default, or `policy`) through `scenario` on fake time and
    report what came of it; `compare`: a second policy file through the same scenario and
    seed. `breaker_baseline` also runs each with every breaker off, to report what the
    breakers saved. The same seed gives the same report."""
    return asyncio.run(
        simulate_async(
            config,
            scenario,
            seed=seed,
            compare=compare,
            policy=policy,
            breaker_baseline=breaker_baseline,
        )
    )


__all__ = ["check_against", "run_once", "simulate", "simulate_async", "without_breakers"]
