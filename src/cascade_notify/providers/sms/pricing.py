"""What an SMS costs: the price settings every provider on the `sms` channel shares
(gateways and fakes alike), and the estimate they make of an accepted text."""

from __future__ import annotations

from pydantic import Field

from cascade_notify.providers.base import ProviderSettings
from cascade_notify.providers.sms import segments


class SmsPricing(ProviderSettings):
    """`price_per_segment` and `currency`, for a provider whose sends are billed by
    segment."""

    price_per_segment: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="What one SMS segment costs; the attempt's cost is the text's segments "
        "times this when the gateway reports no price. `null`: no cost recorded.",
    )
    currency: str = Field(
        default="USD", pattern=r"^[A-Z]{3}$", description="The ISO 4217 code the costs are in."
    )

    def estimate(self, text: str, reported: float | None = None) -> float | None:
        """The cost of sending `text`: the price the gateway `reported`, else its segments
        times `price_per_segment`; None when neither is known."""
        if reported is not None:
            return reported
        price = self.price_per_segment
        return None if price is None else segments.cost(text, price)


__all__ = ["SmsPricing"]
