"""Exchange clients per linked account, and what each venue supports."""

from __future__ import annotations

from axisor.exchange.models import Capabilities
from axisor.exchange.paper import LN_MARKETS_ISOLATED, PaperVenue
from axisor.exchange.protocol import Exchange

# What the platform may configure on each venue. LN Markets runs isolated trades with
# exchange-side stops and trailing stops, and cannot reduce an isolated trade partially.
VENUE_CAPABILITIES: dict[str, Capabilities] = {
    "paper": LN_MARKETS_ISOLATED,
    "lnmarkets": Capabilities(
        name="lnmarkets",
        isolated=True,
        cross=True,
        partial_reduce_isolated=False,
        exchange_stoploss=True,
        exchange_takeprofit=True,
        trailing_stoploss=True,
    ),
}


def capabilities_for(venue: str) -> Capabilities:
    """Return the venue's declared capabilities; KeyError for an unknown venue."""
    return VENUE_CAPABILITIES[venue]


class PaperResolver:
    """Resolves every account to its book on one in-process paper venue."""

    def __init__(self, venue: PaperVenue) -> None:
        self.venue = venue

    async def for_account(self, account_id: int) -> Exchange:
        return self.venue.account(str(account_id))
