"""Simulating a policy before the outage: the real engine, breakers and memory store on
fake time, with stand-in providers, through a scenario of traffic, recipients, outages,
receipt delays and prices.

    from cascade_notify.policy import load_config
    from cascade_notify.simulate import load_scenario, simulate

    report = simulate(load_config("policy.yaml"), load_scenario("outage.yaml"), seed=1)
    print(report.policies[0].p95, report.policies[0].cost)
"""

from cascade_notify.simulate.fleet import SimulatedProvider
from cascade_notify.simulate.report import (
    BreakerSaving,
    ChannelFigures,
    PolicyReport,
    Report,
    percentile,
)
from cascade_notify.simulate.run import simulate, simulate_async, without_breakers
from cascade_notify.simulate.scenario import Outage, Scenario, ScenarioError, load_scenario

__all__ = [
    "BreakerSaving",
    "ChannelFigures",
    "Outage",
    "PolicyReport",
    "Report",
    "Scenario",
    "ScenarioError",
    "SimulatedProvider",
    "load_scenario",
    "percentile",
    "simulate",
    "simulate_async",
    "without_breakers",
]
