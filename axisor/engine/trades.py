"""Private trade events from the exchange stream, applied to the positions at once.

A trade that stops running (closed, stop loss, take profit, liquidation) closes its position and
disarms its trigger without waiting for the next account check. A trade that starts running
queues a margin-guard-check of its account, which imports it with the guard's settings.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from bullmq import Queue
from redis.asyncio import Redis
from sqlalchemy import select

from axisor.db.models import Position, PositionStatus
from axisor.db.session import Database
from axisor.engine.events import publish_position_changed
from axisor.exchange.models import Trade, TradeEvent
from axisor.guard.positions import PositionStore
from axisor.queue.jobs import GuardCheckJob, guard_check_job_id, job_options
from axisor.queue.names import GUARD_CHECK_JOB, POSITION_EVENTS_STREAM

log = structlog.get_logger("axisor.engine")


class TradeEventSink:
    """Receives ``(account_id, Trade | TradeEvent)`` from the stream client's private topic."""

    def __init__(
        self,
        database: Database,
        redis: Redis,
        queue: Queue,
        events_stream: str = POSITION_EVENTS_STREAM,
    ) -> None:
        self.database = database
        self.redis = redis
        self.queue = queue
        self.events_stream = events_stream
        self.positions = PositionStore(database)

    async def __call__(self, account_id: str, item: Trade | TradeEvent) -> None:
        if isinstance(item, TradeEvent):
            await self._trade_ended(int(account_id), item)
        elif item.running:
            await self._trade_started(int(account_id), item)

    async def _trade_ended(self, account_id: int, event: TradeEvent) -> None:
        position_id = await asyncio.to_thread(self._position_id, account_id, event.trade_id)
        if position_id is None:
            return
        await asyncio.to_thread(self.positions.mark_closed, position_id, event.reason)
        await publish_position_changed(self.redis, position_id, self.events_stream)
        log.info(
            "trade ended on the exchange",
            account_id=account_id,
            trade_id=event.trade_id,
            reason=str(event.reason),
            position_id=position_id,
        )

    async def _trade_started(self, account_id: int, trade: Trade) -> None:
        stamp = f"stream-{trade.id}-{int(time.time())}"
        data = GuardCheckJob(account_id=account_id).model_dump(mode="json")
        await self.queue.add(
            GUARD_CHECK_JOB, data, job_options(guard_check_job_id(account_id, stamp))
        )

    def _position_id(self, account_id: int, trade_id: str) -> int | None:
        with self.database.session() as session:
            return session.scalar(
                select(Position.id).where(
                    Position.account_id == account_id,
                    Position.trade_id == trade_id,
                    Position.status == PositionStatus.RUNNING.value,
                )
            )
