"""What an SMS costs: the price settings every provider on the `sms` channel declares
(gateways and fakes alike, each in its own place among its settings), and the estimate
they make of an accepted text."""

from __future__ import annotations

from typing import Annotated, Protocol

from pydantic import Field

from cascade_notify.providers.sms import segments

#: `price_per_segment: PricePerSegment = None` in a provider's settings.
PricePerSegment = Annotated[
    float | None,
    Field(
        ge=0,
        allow_inf_nan=False,
        description="What one SMS segment costs; the attempt's cost is the text's segments "
        "times this when the gateway reports no price. `null`: no cost recorded.",
    ),
]
#: `currency: Currency = "USD"` in a provider's settings.
Currency = Annotated[
    str, Field(pattern=r"^[A-Z]{3}$", description="The ISO 4217 code the costs are in.")
]


class Priced(Protocol):
    @property
    def price_per_segment(self) -> float | None: ...


def estimate(settings: Priced, text: str, reported: float | None = None) -> float | None:
    """The cost of sending `text`: the price the gateway `reported`, else its segments
    times the settings' `price_per_segment`; None when neither is known."""
    if reported is not None:
        return reported
    price = settings.price_per_segment
    return None if price is None else segments.cost(text, price)


__all__ = ["Currency", "PricePerSegment", "estimate"]
