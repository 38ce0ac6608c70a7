"""The live path: stream prices drive the engine, workers act on a linked LN Markets account."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest
from bullmq import Queue
from cryptography.fernet import Fernet
from redis.asyncio import Redis
from sqlalchemy import select

from axisor.accounts import link_account
from axisor.db.crypto import CredentialCipher, Credentials
from axisor.db.models import LedgerEntry, Position, User
from axisor.engine.live import LAST_TICK_KEY, LiveEngine, PrivateStreams
from axisor.exchange.models import OpenTradeRequest, Side
from axisor.exchange.paper import PaperVenue
from axisor.exchange.registry import AccountResolver
from axisor.guard.store import configure_guard
from axisor.market.feed import StreamFeed
from axisor.market.stream import StreamAccount
from axisor.mockexchange.server import MockExchange, run_mock_exchange
from axisor.mockexchange.stream import MockStream, run_mock_stream
from axisor.queue.jobs import GuardCheckJob, job_options
from axisor.queue.names import GUARD_CHECK_JOB, MARGIN_GUARD_QUEUE
from axisor.simulation.runner import wait_until_idle
from axisor.workers.context import WorkerContext
from axisor.workers.runner import start_worker

CREDENTIALS = Credentials(key="live-key", secret="live-secret", passphrase="live-pass")


async def wait_for(predicate, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await predicate():
            await asyncio.sleep(0.05)


@pytest.fixture
def linked(db):
    """A pro user with one linked LN Markets account, guarded at threshold 0.8."""
    cipher = CredentialCipher([Fernet.generate_key()])
    account_id = link_account(db, cipher, email="live@example.test", credentials=CREDENTIALS)
    with db.session() as session:
        session.scalar(select(User)).plan = "pro"
    configure_guard(db, account_id, {"margin_threshold": "0.8", "add_margin_percent": "50"})
    return account_id, cipher


@pytest.fixture
def venue_with_trade(linked):
    """The mock's venue at 60,000 USD with a 10x long of 600 USD on the linked account."""
    account_id, _ = linked
    venue = PaperVenue()
    venue.set_price(Decimal(60_000), 1_000)
    mock = MockExchange(venue)
    mock.register(
        str(account_id),
        CREDENTIALS.key,
        CREDENTIALS.secret,
        CREDENTIALS.passphrase,
        balance_sats=2_000_000,
    )
    request = OpenTradeRequest(side=Side.BUY, leverage=Decimal(10), quantity_usd=600)
    trade = venue.open_trade(str(account_id), request)
    return mock, trade


async def test_stream_price_adds_margin(db, redis_url, linked, venue_with_trade):
    """A price published on the stream crosses the trigger, and margin is added once over HTTP."""
    account_id, cipher = linked
    mock, trade = venue_with_trade
    stream = MockStream(mock)
    async with run_mock_exchange(mock) as base_url, run_mock_stream(stream) as ws_url:
        resolver = AccountResolver(db, cipher, base_url=base_url)
        redis = Redis.from_url(redis_url)
        worker = start_worker(WorkerContext(db, resolver, redis, "live-worker"), redis_url)
        queue = Queue(MARGIN_GUARD_QUEUE, {"connection": redis_url})
        try:
            await import_positions(queue, account_id)
            feed = StreamFeed(ws_url)
            live = LiveEngine(db, redis_url, feed)
            running = asyncio.create_task(live.run())
            await feed.client.wait_connected(5)
            await wait_for(lambda: armed(live))

            stream.publish_price(Decimal(55_000))
            await wait_for(lambda: ledger_confirmed(db))
            await feed.aclose()
            await running
            last_tick = json.loads(await redis.get(LAST_TICK_KEY))
        finally:
            await worker.close()
            await queue.close()
            await resolver.aclose()
            await redis.aclose()

    assert len([m for m in mock.venue.mutations if m.kind == "add_margin"]) == 1
    with db.session() as session:
        position = session.scalar(select(Position))
    assert position.margin_sats > trade.margin_sats
    assert Decimal(last_tick["price"]) == Decimal(55_000)


async def import_positions(queue: Queue, account_id: int) -> None:
    data = GuardCheckJob(account_id=account_id).model_dump()
    await queue.add(GUARD_CHECK_JOB, data, job_options(f"check-{account_id}-import"))
    await wait_until_idle(queue)


async def armed(live: LiveEngine) -> bool:
    return len(live.engine.index) == 1


async def ledger_confirmed(db) -> bool:
    def read() -> bool:
        with db.session() as session:
            row = session.scalar(select(LedgerEntry))
            return row is not None and row.state == "confirmed"

    return await asyncio.to_thread(read)


async def test_private_liquidation_closes_position(db, redis_url, linked, venue_with_trade):
    """A liquidation on the private topic closes the position and disarms it at once."""
    account_id, cipher = linked
    mock, trade = venue_with_trade
    stream = MockStream(mock)
    async with run_mock_exchange(mock) as base_url, run_mock_stream(stream) as ws_url:
        resolver = AccountResolver(db, cipher, base_url=base_url)
        redis = Redis.from_url(redis_url)
        worker = start_worker(WorkerContext(db, resolver, redis, "live-worker"), redis_url)
        queue = Queue(MARGIN_GUARD_QUEUE, {"connection": redis_url})
        try:
            await import_positions(queue, account_id)
            private = PrivateStreams(ws_url, [StreamAccount(str(account_id), CREDENTIALS)])
            feed = StreamFeed(ws_url)
            live = LiveEngine(db, redis_url, feed, private)
            running = asyncio.create_task(live.run())
            await feed.client.wait_connected(5)
            await private.clients[0].wait_connected(5)
            await wait_for(lambda: armed(live))

            # The venue liquidates the trade without passing the guard's trigger on the stream.
            mock.venue.set_price(Decimal(50_000), 5_000)
            stream.publish_trade_events()
            await wait_for(lambda: position_status(db, "liquidated"))
            await live.engine.apply_events()
            disarmed = len(live.engine.index) == 0
            await feed.aclose()
            await running
        finally:
            await worker.close()
            await queue.close()
            await resolver.aclose()
            await redis.aclose()

    assert disarmed
    assert [m for m in mock.venue.mutations if m.kind == "add_margin"] == []


async def position_status(db, status: str) -> bool:
    def read() -> bool:
        with db.session() as session:
            return session.scalar(select(Position.status)) == status

    return await asyncio.to_thread(read)


async def test_stream_price_fires_take_profit(db, redis_url, linked, venue_with_trade):
    """A take profit armed on the live engine closes the trade once when the stream reaches it."""
    from axisor.automations.store import create_automation
    from axisor.queue.names import AUTOMATION_QUEUE

    account_id, cipher = linked
    mock, trade = venue_with_trade
    stream = MockStream(mock)
    async with run_mock_exchange(mock) as base_url, run_mock_stream(stream) as ws_url:
        resolver = AccountResolver(db, cipher, base_url=base_url)
        redis = Redis.from_url(redis_url)
        ctx = WorkerContext(db, resolver, redis, "live-worker")
        workers = [
            start_worker(ctx, redis_url),
            start_worker(ctx, redis_url, queue=AUTOMATION_QUEUE),
        ]
        queue = Queue(MARGIN_GUARD_QUEUE, {"connection": redis_url})
        try:
            await import_positions(queue, account_id)
            with db.session() as session:
                position_id = session.scalar(select(Position.id))
            create_automation(
                db, account_id, "take_profit", {"price_usd": "61000"}, position_id=position_id
            )
            feed = StreamFeed(ws_url)
            live = LiveEngine(db, redis_url, feed)
            running = asyncio.create_task(live.run())
            await feed.client.wait_connected(5)

            stream.publish_price(Decimal(61_000))
            await wait_for(lambda: position_status(db, "closed"))
            await feed.aclose()
            await running
        finally:
            for worker in workers:
                await worker.close()
            await queue.close()
            await resolver.aclose()
            await redis.aclose()

    assert len([m for m in mock.venue.mutations if m.kind == "close"]) == 1
