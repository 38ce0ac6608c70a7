"""Exchange clients per linked account, and what each venue supports."""

from __future__ import annotations

import asyncio
import os
from urllib.parse import urlsplit

from axisor.db.crypto import CredentialCipher
from axisor.db.models import ExchangeAccount
from axisor.db.session import Database
from axisor.errors import AuthenticationError, InvalidConfigError, NotSupportedError
from axisor.exchange.lnmarkets.client import (
    LNMARKETS_CAPABILITIES,
    LNMarketsClient,
    base_url_for,
)
from axisor.exchange.lnmarkets.ratelimit import RateLimiter
from axisor.exchange.models import Capabilities
from axisor.exchange.paper import LN_MARKETS_ISOLATED, PaperVenue
from axisor.exchange.protocol import Exchange

# Overrides the LN Markets host for every network, e.g. to point workers at a local mock.
LNM_BASE_URL_ENV = "AXISOR_LNM_BASE_URL"

# Capabilities of each venue, which decide what the platform may configure there. LN Markets
# runs isolated trades with exchange-side stops and trailing stops, cannot reduce an isolated
# trade partially, and reduces its cross position with an opposite order.
VENUE_CAPABILITIES: dict[str, Capabilities] = {
    "paper": LN_MARKETS_ISOLATED,
    "lnmarkets": LNMARKETS_CAPABILITIES,
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


def lnm_base_url_from_env() -> str | None:
    """Return AXISOR_LNM_BASE_URL when set, after checking that it is an http(s) URL."""
    value = os.environ.get(LNM_BASE_URL_ENV, "").strip()
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidConfigError(
            LNM_BASE_URL_ENV,
            f"{value!r} is not an http(s) URL; use e.g. http://127.0.0.1:8765, or unset it "
            "to reach LN Markets itself",
        )
    return value.rstrip("/")


class AccountResolver:
    """Builds one LN Markets client per linked account from its encrypted credentials.

    Clients are cached per account and share one Redis rate limiter, so every worker process
    keeps to the per-key request limits.
    """

    def __init__(
        self,
        database: Database,
        cipher: CredentialCipher,
        *,
        limiter: RateLimiter | None = None,
        base_url: str | None = None,
    ) -> None:
        self.database = database
        self.cipher = cipher
        self.limiter = limiter
        self.base_url = base_url or lnm_base_url_from_env()
        self._clients: dict[int, LNMarketsClient] = {}

    async def for_account(self, account_id: int) -> Exchange:
        client = self._clients.get(account_id)
        if client is None:
            account = await asyncio.to_thread(self._load, account_id)
            client = self._client(account)
            self._clients[account_id] = client
        return client

    def _load(self, account_id: int) -> ExchangeAccount:
        with self.database.session() as session:
            account = session.get(ExchangeAccount, account_id)
            if account is None:
                raise InvalidConfigError("account_id", f"no linked account with id {account_id}")
            session.expunge(account)
            return account

    def _client(self, account: ExchangeAccount) -> LNMarketsClient:
        if account.exchange == "paper":
            raise NotSupportedError(
                f"account {account.id} is a paper account, which exists only inside "
                "`axisor simulate`; link an LN Markets account with `axisor accounts add`"
            )
        if not account.active:
            raise AuthenticationError(f"account {account.id} is deactivated; re-link it")
        if account.credentials_encrypted is None:
            raise AuthenticationError(f"account {account.id} has no stored credentials")
        credentials = self.cipher.decrypt(account.credentials_encrypted)
        base_url = self.base_url or base_url_for(account.network)
        return LNMarketsClient(base_url, credentials, limiter=self.limiter)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def account_resolver(
    database: Database, data_dir=None, redis_url: str | None = None
) -> AccountResolver:
    """Return the resolver workers use: credentials from AXISOR_SECRET_KEY (or the key file in
    ``data_dir``) and, with ``redis_url``, the shared per-key rate limiter."""
    if data_dir is None:
        from axisor.config import Settings

        data_dir = Settings.from_env().data_dir
    cipher = CredentialCipher.from_env(data_dir=data_dir)
    limiter = RateLimiter.from_url(redis_url) if redis_url else None
    return AccountResolver(database, cipher, limiter=limiter)
