"""The engine process: a live (or replayed) price feed drives the trigger index.

Per price update it re-arms the positions workers changed, queues a job per crossed trigger
(isolated trades, cross positions, and trading automations on the ``automation-execute``
queue), and records the last tick in Redis for ``axisor doctor``. Every linked account gets a
repeating ``margin-guard-check`` job, so positions opened or closed outside Axisor are picked up.
"""

from __future__ import annotations

import asyncio
import json
import time

import structlog
from bullmq import Queue
from redis.asyncio import Redis
from sqlalchemy import select

from axisor.automations.engine import AutomationEngine
from axisor.db.models import ExchangeAccount
from axisor.db.session import Database
from axisor.engine.cross import CrossEngine
from axisor.engine.scheduler import Engine
from axisor.engine.trades import TradeEventSink
from axisor.market.feed import PriceFeed
from axisor.market.stream import PriceUpdate, StreamAccount, StreamClient, StreamStatus
from axisor.queue.jobs import KEEP_COMPLETED, KEEP_FAILED, GuardCheckJob
from axisor.queue.names import AUTOMATION_QUEUE, GUARD_CHECK_JOB, MARGIN_GUARD_QUEUE
from axisor.workers.context import ExchangeResolver

log = structlog.get_logger("axisor.engine")

LAST_TICK_KEY = "axisor:engine:last-tick"
STREAM_STATUS_KEY = "axisor:stream:status"
# How often each linked account is reconciled with its exchange.
CHECK_EVERY_MS = 60_000
# How often the automations are read again from the database, to arm new ones.
AUTOMATIONS_RELOAD_S = 60.0


class PrivateStreams:
    """One authenticated stream connection per linked account, for its private trade topic."""

    def __init__(self, url: str, accounts: list[StreamAccount]) -> None:
        self.url = url
        self.accounts = accounts
        self.clients: list[StreamClient] = []

    async def start(self, sink: TradeEventSink) -> None:
        for account in self.accounts:
            client = StreamClient(self.url, on_trade=sink, account=account)
            client.start()
            self.clients.append(client)
        log.info("private trade streams started", accounts=len(self.accounts))

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


class LiveEngine:
    """Runs the engine on a feed until the feed ends or ``stop`` is called."""

    def __init__(
        self,
        database: Database,
        redis_url: str,
        feed: PriceFeed,
        private: PrivateStreams | None = None,
        exchanges: ExchangeResolver | None = None,
    ) -> None:
        self.database = database
        self.redis = Redis.from_url(redis_url)
        self.queue = Queue(MARGIN_GUARD_QUEUE, {"connection": redis_url})
        self.engine = Engine(database, self.redis, self.queue)
        # Cross margin guards need the venue's view of each cross position, so an exchange
        # resolver; without one only isolated trades are guarded.
        self.cross = CrossEngine(database, self.redis, self.queue, exchanges) if exchanges else None
        self.automation_queue = Queue(AUTOMATION_QUEUE, {"connection": redis_url})
        self.automations = AutomationEngine(database, self.redis, self.automation_queue)
        self._automations_loaded_s = 0.0
        self.feed = feed
        self.private = private
        self.ticks = 0

    async def run(self) -> int:
        """Consume the feed; return the number of price updates handled."""
        await self.engine.rebuild()
        await self._reload_automations()
        if self.cross is not None:
            await self.cross.rebuild()
        await self.schedule_checks()
        if self.private is not None:
            await self.private.start(TradeEventSink(self.database, self.redis, self.queue))
        try:
            async for update in self.feed:
                await self.on_update(update)
        finally:
            await self.aclose()
        return self.ticks

    async def on_update(self, update: PriceUpdate) -> None:
        await self.engine.apply_events()
        jobs = await self.engine.on_tick(update.price, update.time_ms, update.received_ns)
        if self.cross is not None:
            await self.cross.apply_events()
            jobs += await self.cross.on_tick(update.price, update.time_ms, update.received_ns)
        if time.monotonic() - self._automations_loaded_s >= AUTOMATIONS_RELOAD_S:
            await self._reload_automations()
        await self.automations.apply_events()
        jobs += await self.automations.on_tick(update.price, update.time_ms, update.received_ns)
        self.ticks += 1
        record = {"time_ms": update.time_ms, "price": str(update.price), "at": time.time()}
        await self.redis.set(LAST_TICK_KEY, json.dumps(record))
        if jobs:
            log.info("triggers crossed", price=str(update.price), jobs=len(jobs))
        await self._record_stream_status()

    async def _reload_automations(self) -> None:
        """Re-read every active automation, so ones created since the last read are armed."""
        await self.automations.store_trails()
        await self.automations.rebuild()
        self._automations_loaded_s = time.monotonic()

    async def _record_stream_status(self) -> None:
        status = getattr(self.feed, "status", None)
        if status is None:
            return
        current: StreamStatus = status()
        state = "connected" if current.connected else "disconnected"
        payload = {
            "state": state,
            "mode": current.mode,
            "gap_s": current.gap_s,
            "reconnects": current.reconnects,
            "last_message_ms": current.last_message_ms,
        }
        await self.redis.set(STREAM_STATUS_KEY, json.dumps(payload))

    async def schedule_checks(self) -> int:
        """Give every active linked account a repeating margin-guard-check job."""
        account_ids = await asyncio.to_thread(self._active_accounts)
        for account_id in account_ids:
            await self.queue.upsertJobScheduler(
                f"check-account-{account_id}",
                {"every": CHECK_EVERY_MS},
                GUARD_CHECK_JOB,
                GuardCheckJob(account_id=account_id).model_dump(mode="json"),
                {"removeOnComplete": KEEP_COMPLETED, "removeOnFail": KEEP_FAILED},
            )
        log.info("account checks scheduled", accounts=len(account_ids), every_ms=CHECK_EVERY_MS)
        return len(account_ids)

    def _active_accounts(self) -> list[int]:
        with self.database.session() as session:
            return list(
                session.scalars(
                    select(ExchangeAccount.id).where(
                        ExchangeAccount.active.is_(True), ExchangeAccount.exchange != "paper"
                    )
                )
            )

    async def aclose(self) -> None:
        await self.automations.store_trails()
        await self.automation_queue.close()
        if self.private is not None:
            await self.private.aclose()
        await self.feed.aclose()
        await self.queue.close()
        await self.redis.aclose()
