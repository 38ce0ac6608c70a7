"""Shared rate limiter on a real Redis, across limiter instances and across worker processes."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from decimal import Decimal

import pytest
import redis

from axisor.exchange.lnmarkets.ratelimit import (
    PUBLIC_KEY,
    RateLimiter,
    RateLimitWaitError,
    key_fingerprint,
)
from axisor.exchange.paper import PaperVenue
from axisor.mockexchange import MockExchange, run_mock_exchange

PREFIX = f"test:lnm:ratelimit:{uuid.uuid4().hex[:8]}"
API_KEY = "storm-key-0001"
SECRET = "storm-secret-Hq2"
PASSPHRASE = "storm-pass-Rr5"
# A request that passed the limiter before another process stored the block is already on
# its way, so it may arrive this long after the 429 was sent.
IN_FLIGHT_GRACE_S = 0.1


@pytest.fixture
async def limiters(redis_url):
    first = RateLimiter.from_url(redis_url, prefix=PREFIX)
    second = RateLimiter.from_url(redis_url, prefix=PREFIX)
    yield first, second
    await first.aclose()
    await second.aclose()


async def test_five_per_second_across_instances(limiters):
    """Two limiters on one key let at most 5 requests start in any one-second window."""
    key = key_fingerprint(API_KEY)
    started_s: list[float] = []

    async def take(limiter: RateLimiter) -> None:
        await limiter.acquire(key)
        started_s.append(time.monotonic())

    await asyncio.gather(*(take(limiters[i % 2]) for i in range(12)))

    started_s.sort()
    gaps_s = [started_s[i + 5] - started_s[i] for i in range(len(started_s) - 5)]
    assert min(gaps_s) >= 0.95
    assert started_s[-1] - started_s[0] >= 1.9


async def test_public_one_per_second(limiters):
    started_s = []
    for limiter in (*limiters, limiters[0]):
        await limiter.acquire(PUBLIC_KEY)
        started_s.append(time.monotonic())

    assert started_s[1] - started_s[0] >= 0.95
    assert started_s[2] - started_s[1] >= 0.95


async def test_block_holds_every_instance(limiters):
    first, second = limiters
    key = key_fingerprint(API_KEY)

    await first.block(key, 0.5)
    blocked_s = await second.blocked_for_s(key)
    began_s = time.monotonic()
    await second.acquire(key)

    assert 0.3 < blocked_s <= 0.5
    assert time.monotonic() - began_s >= 0.45


async def test_block_never_shortened(limiters):
    first, second = limiters
    key = key_fingerprint(API_KEY)

    await first.block(key, 2.0)
    await second.block(key, 0.1)

    assert await first.blocked_for_s(key) > 1.5


async def test_wait_past_maximum_raises(redis_url):
    limiter = RateLimiter.from_url(redis_url, prefix=PREFIX, max_wait_s=0.2)
    key = key_fingerprint(API_KEY)
    await limiter.block(key, 2.0)

    with pytest.raises(RateLimitWaitError) as raised:
        await limiter.acquire(key)
    await limiter.aclose()

    assert 1.5 < raised.value.retry_after_s <= 2.0


async def test_redis_keys_use_prefix_and_fingerprint(limiters, redis_url):
    key = key_fingerprint(API_KEY)
    await limiters[0].acquire(key)
    await limiters[0].block(key, 1.0)

    client = redis.Redis.from_url(redis_url)
    names = [name.decode() for name in client.keys(f"{PREFIX}:*")]
    every_name = [name.decode() for name in client.keys("*")]
    client.close()

    assert sorted(names) == [f"{PREFIX}:block:{key}", f"{PREFIX}:window:{key}"]
    assert all(API_KEY not in name for name in every_name)


WORKER_SCRIPT = """
import asyncio, sys
from axisor.db.crypto import Credentials
from axisor.errors import RetryLaterError
from axisor.exchange.lnmarkets import LNMarketsClient, RateLimiter, ServerClock

async def main(base_url, redis_url, prefix, duration_s):
    credentials = Credentials(key=sys.argv[5], secret=sys.argv[6], passphrase=sys.argv[7])
    limiter = RateLimiter.from_url(redis_url, prefix=prefix, max_wait_s=5.0)
    clock = ServerClock()
    clock.record(0, 0, 0)
    client = LNMarketsClient(base_url, credentials, limiter=limiter, clock=clock, get_attempts=1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(duration_s)
    sent = 0
    async with client:
        while loop.time() < deadline:
            try:
                await client.get_running_trades()
            except RetryLaterError:
                pass
            sent += 1
    await limiter.aclose()
    print(sent)

asyncio.run(main(*sys.argv[1:5]))
"""


async def run_worker(base_url: str, redis_url: str, duration_s: float) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WORKER_SCRIPT,
        base_url,
        redis_url,
        PREFIX,
        str(duration_s),
        API_KEY,
        SECRET,
        PASSPHRASE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_429_storm_two_processes(redis_url):
    """Two worker processes hammer one account; after each 429 none calls until Retry-After.

    The mock allows 3 requests per second per account and answers 429 with Retry-After: 1
    beyond that, so the workers' shared limit of 5 per second runs into it again and again.
    """
    venue = PaperVenue()
    venue.create_account("storm", 1_000_000)
    venue.set_price(Decimal(60_000), 1)
    mock = MockExchange(venue)
    mock.register("storm", API_KEY, SECRET, PASSPHRASE)
    mock.faults.update({"throttle_per_s": 3, "throttle_retry_after_s": 1})

    async with run_mock_exchange(mock) as base_url:
        await asyncio.gather(*(run_worker(base_url, redis_url, 4.0) for _ in range(2)))

    records = mock.requests_for("storm")
    rejected = [record for record in records if record.status == 429]
    assert len(records) >= 8
    assert len(rejected) >= 1
    for rejection in rejected:
        window_start_s = rejection.responded_s + IN_FLIGHT_GRACE_S
        window_end_s = rejection.responded_s + float(rejection.retry_after)
        inside = [r for r in records if window_start_s < r.arrived_s < window_end_s]
        assert inside == [], f"requests arrived inside the Retry-After window: {inside}"


async def test_client_429_blocks_shared_key(redis_url):
    """A 429 seen by one client blocks the key in Redis for another client of that account."""
    from axisor.db.crypto import Credentials
    from axisor.errors import RetryLaterError
    from axisor.exchange.lnmarkets import LNMarketsClient

    venue = PaperVenue()
    venue.create_account("storm", 1_000_000)
    venue.set_price(Decimal(60_000), 1)
    mock = MockExchange(venue)
    mock.register("storm", API_KEY, SECRET, PASSPHRASE)
    credentials = Credentials(key=API_KEY, secret=SECRET, passphrase=PASSPHRASE)
    limiter = RateLimiter.from_url(redis_url, prefix=PREFIX)

    async with run_mock_exchange(mock) as base_url:
        async with LNMarketsClient(base_url, credentials, limiter=limiter) as first:
            await first.sync_clock()
            mock.faults.update({"rate_limited": 1, "retry_after_header": "1"})
            with pytest.raises(RetryLaterError):
                await first.add_margin("any", 1)
        blocked_s = await limiter.blocked_for_s(key_fingerprint(API_KEY))
        async with LNMarketsClient(base_url, credentials, limiter=limiter) as second:
            await second.get_running_trades()
    await limiter.aclose()

    after_429 = [r for r in mock.requests_for("storm")]
    assert 0.5 < blocked_s <= 1.0
    assert [r.status for r in after_429] == [429, 200]
    assert after_429[1].arrived_s - after_429[0].responded_s >= 0.5
