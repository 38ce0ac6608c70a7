"""LN Markets v3: request signing, the REST client, its clock and its shared rate limiter."""

from axisor.exchange.lnmarkets.client import (
    LNMARKETS_CAPABILITIES,
    MAINNET_BASE_URL,
    TESTNET_BASE_URL,
    LNMarketsClient,
    base_url_for,
)
from axisor.exchange.lnmarkets.clock import ServerClock
from axisor.exchange.lnmarkets.parse import Candle, CrossPosition
from axisor.exchange.lnmarkets.ratelimit import RateLimiter, RateLimitWaitError
from axisor.exchange.lnmarkets.signing import sign, signed_headers, verify

__all__ = [
    "LNMARKETS_CAPABILITIES",
    "MAINNET_BASE_URL",
    "TESTNET_BASE_URL",
    "Candle",
    "CrossPosition",
    "LNMarketsClient",
    "RateLimitWaitError",
    "RateLimiter",
    "ServerClock",
    "base_url_for",
    "sign",
    "signed_headers",
    "verify",
]
