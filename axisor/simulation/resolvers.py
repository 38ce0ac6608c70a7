"""Exchange resolvers of the guarded replay."""

from __future__ import annotations

import secrets

from axisor.db.crypto import Credentials
from axisor.exchange.lnmarkets.client import LNMarketsClient
from axisor.exchange.protocol import Exchange


class MockAccountsResolver:
    """One LN Markets client per account, each with its own generated API credentials."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.clients: dict[int, LNMarketsClient] = {}

    def add(self, account_id: int) -> Credentials:
        credentials = Credentials(
            key=f"sim-{account_id}-{secrets.token_hex(4)}",
            secret=secrets.token_urlsafe(24),
            passphrase=secrets.token_urlsafe(12),
            network="mainnet",
        )
        self.clients[account_id] = LNMarketsClient(self.base_url, credentials)
        return credentials

    async def for_account(self, account_id: int) -> Exchange:
        return self.clients[account_id]

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
