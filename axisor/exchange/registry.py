"""Exchange clients per linked account."""

from __future__ import annotations

from axisor.exchange.paper import PaperVenue
from axisor.exchange.protocol import Exchange


class PaperResolver:
    """Resolves every account to its book on one in-process paper venue."""

    def __init__(self, venue: PaperVenue) -> None:
        self.venue = venue

    async def for_account(self, account_id: int) -> Exchange:
        return self.venue.account(str(account_id))
