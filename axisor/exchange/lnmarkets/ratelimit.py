"""A request rate limiter shared by every process through Redis.

Each limiter key has a sliding window of one second, kept as a sorted set of request times
from the Redis server's clock, so processes on hosts with different clocks agree. A Lua
script trims the window, checks the block key and adds the request in one atomic step.

- An API key may make ``authenticated_per_s`` requests per second (5 by default).
- Public calls share the key ``public`` with ``public_per_s`` requests per second (1).
- After a 429, ``block`` sets a block key that expires after Retry-After, and no process
  acquires that key until it has expired.

Redis keys are ``{prefix}:window:{key}`` and ``{prefix}:block:{key}``. Callers pass a
fingerprint of the API key (``key_fingerprint``), never the key itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from axisor.errors import InvalidConfigError, RetryLaterError

log = structlog.get_logger("axisor.exchange.lnmarkets")

PUBLIC_KEY = "public"
DEFAULT_PREFIX = "axisor:lnm:ratelimit"
WINDOW_MS = 1000

# KEYS[1] is the window set and KEYS[2] the block key. ARGV[1] is the limit, ARGV[2] the
# window in ms and ARGV[3] a unique member.
# Returns 0 when the request is allowed, else the milliseconds to wait before trying again.
_ACQUIRE_SCRIPT = """
local blocked_ms = redis.call('PTTL', KEYS[2])
if blocked_ms > 0 then
  return blocked_ms
end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window_ms = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - window_ms)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window_ms)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(tonumber(oldest[2]) + window_ms - now_ms, 1)
"""


class RateLimitWaitError(RetryLaterError):
    """The limiter would wait longer than its maximum, so nothing was sent."""


def key_fingerprint(api_key: str) -> str:
    """Return a short SHA-256 fingerprint of an API key, safe to use in Redis key names."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]


class RateLimiter:
    """Waits until a request is allowed under the shared per-key limits."""

    def __init__(
        self,
        redis_client: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        authenticated_per_s: int = 5,
        public_per_s: int = 1,
        max_wait_s: float = 30.0,
    ) -> None:
        _require_rate("authenticated_per_s", authenticated_per_s)
        _require_rate("public_per_s", public_per_s)
        self._redis = redis_client
        self._script = redis_client.register_script(_ACQUIRE_SCRIPT)
        self.prefix = prefix
        self.authenticated_per_s = authenticated_per_s
        self.public_per_s = public_per_s
        self.max_wait_s = max_wait_s

    @classmethod
    def from_url(cls, redis_url: str, **options) -> RateLimiter:
        """Build a limiter on its own Redis connection pool, which ``aclose`` closes."""
        return cls(aioredis.Redis.from_url(redis_url), **options)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def acquire(self, key: str) -> None:
        """Wait until a request on ``key`` is allowed and count it.

        Raises RetryLaterError when the wait would pass ``max_wait_s``, with the time left
        in ``retry_after_s``. No request was sent then.
        """
        limit = self.public_per_s if key == PUBLIC_KEY else self.authenticated_per_s
        deadline_s = time.monotonic() + self.max_wait_s
        while True:
            wait_ms = await self._try_acquire(key, limit)
            if wait_ms == 0:
                return
            wait_s = wait_ms / 1000
            if time.monotonic() + wait_s > deadline_s:
                raise RateLimitWaitError(
                    f"rate limit of {key!r}: the next request is allowed in {wait_s:.3f} s, "
                    f"past the maximum wait of {self.max_wait_s} s. Try again later",
                    retry_after_s=wait_s,
                )
            await asyncio.sleep(wait_s)

    async def block(self, key: str, retry_after_s: float) -> None:
        """Block ``key`` for every process until ``retry_after_s`` seconds have passed.

        A block never shortens one already in place.
        """
        block_ms = max(int(retry_after_s * 1000), 1)
        block_key = self._block_key(key)
        try:
            current_ms = await self._redis.pttl(block_key)
            if current_ms < block_ms:
                await self._redis.set(block_key, b"1", px=block_ms)
        except RedisError as exc:
            raise RetryLaterError(f"the rate limiter cannot reach Redis: {exc}") from exc
        log.warning("lnm.ratelimit.blocked", limiter_key=key, retry_after_s=retry_after_s)

    async def blocked_for_s(self, key: str) -> float:
        """Return how many seconds ``key`` stays blocked, 0 when it is not."""
        remaining_ms = await self._redis.pttl(self._block_key(key))
        return max(remaining_ms, 0) / 1000

    async def _try_acquire(self, key: str, limit: int) -> int:
        member = uuid.uuid4().hex
        try:
            result = await self._script(
                keys=[self._window_key(key), self._block_key(key)],
                args=[limit, WINDOW_MS, member],
            )
        except RedisError as exc:
            raise RetryLaterError(f"the rate limiter cannot reach Redis: {exc}") from exc
        return int(result)

    def _window_key(self, key: str) -> str:
        return f"{self.prefix}:window:{key}"

    def _block_key(self, key: str) -> str:
        return f"{self.prefix}:block:{key}"


def _require_rate(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidConfigError(name, f"{value!r} is not an int of at least 1")
