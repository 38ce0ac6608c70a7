"""The cross engine: arms each cross guard setting and turns a crossing tick into one job.

The positions table tracks isolated trades only, so this part reads each guarded account's
cross position from its venue: all of them on ``rebuild`` and one account at a time when a
worker announces it on the cross events stream. A tick checks every armed trigger, and a
crossed one leaves the set until its account is read again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal

import structlog
from bullmq import Queue
from redis.asyncio import Redis

from axisor.db.session import Database
from axisor.engine.events import STREAM_MAX_LEN, StreamIdReader
from axisor.errors import AxisorError, NotSupportedError
from axisor.exchange.models import Side
from axisor.exchange.protocol import CrossExchange
from axisor.guard.cross import (
    count_cross_actions,
    cross_guarded_accounts,
    cross_trigger,
    load_cross_setting,
)
from axisor.guard.policy import distance_bps, is_crossed
from axisor.queue.jobs import GuardCrossJob, job_options, priority_for_distance
from axisor.queue.names import CROSS_EVENTS_STREAM, GUARD_CROSS_JOB
from axisor.workers.context import ExchangeResolver

log = structlog.get_logger("axisor.engine")


@dataclass(frozen=True, slots=True)
class ArmedCrossTrigger:
    """One account's armed cross trigger; prices are USD per BTC."""

    account_id: int
    position_id: str
    side: Side
    trigger_price: Decimal
    liquidation_price: Decimal
    version: str


async def publish_cross_changed(
    redis: Redis, account_id: int, stream: str = CROSS_EVENTS_STREAM
) -> None:
    """Announce that the account's cross position or its guard must be read again."""
    fields = {"account_id": str(account_id)}
    await redis.xadd(stream, fields, maxlen=STREAM_MAX_LEN, approximate=True)


class CrossEventReader(StreamIdReader):
    """Reader of the account ids on the cross events stream, from where it ended at ``start``."""

    def __init__(self, redis: Redis, stream: str = CROSS_EVENTS_STREAM) -> None:
        super().__init__(redis, stream, "account_id")


class CrossEngine:
    """The armed cross triggers, one per account; ``on_tick`` queues the crossed ones."""

    def __init__(
        self,
        database: Database,
        redis: Redis,
        queue: Queue,
        exchanges: ExchangeResolver,
        events_stream: str = CROSS_EVENTS_STREAM,
    ) -> None:
        self.database = database
        self.queue = queue
        self.exchanges = exchanges
        self.events = CrossEventReader(redis, events_stream)
        self.armed: dict[int, ArmedCrossTrigger] = {}
        self.jobs_queued = 0

    async def rebuild(self) -> int:
        """Arm every account with an enabled cross guard setting; return how many are armed."""
        await self.events.start()
        account_ids = await asyncio.to_thread(cross_guarded_accounts, self.database)
        self.armed = {}
        await self.refresh(set(account_ids))
        log.info("cross triggers rebuilt", guarded=len(account_ids), armed=len(self.armed))
        return len(self.armed)

    async def apply_events(self, block_ms: int | None = None) -> int:
        """Read the accounts announced on the stream again, and re-arm or disarm them."""
        changed = await self.events.read(block_ms)
        if changed:
            await self.refresh(changed)
        return len(changed)

    async def refresh(self, account_ids: set[int]) -> None:
        for account_id in sorted(account_ids):
            trigger = await self._read_trigger(account_id)
            if trigger is None:
                self.armed.pop(account_id, None)
            else:
                self.armed[account_id] = trigger

    async def on_tick(self, price: Decimal, time_ms: int, received_ns: int) -> list[GuardCrossJob]:
        """Queue a job for every armed trigger ``price`` (USD per BTC) crosses; return them."""
        crossed = [t for t in self.armed.values() if is_crossed(t.side, price, t.trigger_price)]
        if not crossed:
            return []
        for trigger in crossed:
            del self.armed[trigger.account_id]
        jobs = [_job(trigger, price, time_ms, received_ns) for trigger in crossed]
        await self.queue.addBulk(
            [_bulk_entry(job, trigger, price) for job, trigger in zip(jobs, crossed, strict=True)]
        )
        self.jobs_queued += len(jobs)
        return jobs

    async def _read_trigger(self, account_id: int) -> ArmedCrossTrigger | None:
        """Read the setting and the position; None leaves the account disarmed."""
        setting = await asyncio.to_thread(load_cross_setting, self.database, account_id)
        if setting is None or not setting.enabled:
            return None
        try:
            exchange = await cross_client(self.exchanges, account_id)
            position = await exchange.get_cross_position()
        except AxisorError as exc:
            # The account stays disarmed until the next announcement or rebuild reads it again.
            log.error("cross position not read", account_id=account_id, error=str(exc))
            return None
        trigger = cross_trigger(position, setting.config)
        if trigger is None:
            return None
        done = await asyncio.to_thread(count_cross_actions, self.database, account_id, position.id)
        if done >= setting.config.max_actions:
            return None
        return ArmedCrossTrigger(
            account_id=account_id,
            position_id=position.id,
            side=trigger.side,
            trigger_price=trigger.trigger_price,
            liquidation_price=trigger.liquidation_price,
            version=trigger.version,
        )


async def cross_client(exchanges: ExchangeResolver, account_id: int) -> CrossExchange:
    """Return the account's client, or raise NotSupportedError when it has no cross margin."""
    exchange = await exchanges.for_account(account_id)
    if not isinstance(exchange, CrossExchange):
        raise NotSupportedError(f"account {account_id} has no cross margin client")
    return exchange


def _job(
    trigger: ArmedCrossTrigger, price: Decimal, time_ms: int, received_ns: int
) -> GuardCrossJob:
    return GuardCrossJob(
        account_id=trigger.account_id,
        position_id=trigger.position_id,
        version=trigger.version,
        trigger_price=trigger.trigger_price,
        tick_price=price,
        tick_time_ms=time_ms,
        tick_received_ns=received_ns,
    )


def _bulk_entry(job: GuardCrossJob, trigger: ArmedCrossTrigger, price: Decimal) -> dict:
    priority = priority_for_distance(distance_bps(price, trigger.liquidation_price))
    return {
        "name": GUARD_CROSS_JOB,
        "data": job.model_dump(mode="json"),
        "opts": job_options(job.job_id, priority),
    }
