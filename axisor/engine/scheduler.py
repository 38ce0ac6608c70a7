"""The engine: keeps the trigger index in step with the database and turns crossings into jobs."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import structlog
from bullmq import Queue
from redis.asyncio import Redis
from sqlalchemy import select

from axisor.db.models import Position, PositionStatus
from axisor.db.session import Database
from axisor.engine.events import PositionEventReader
from axisor.engine.index import ArmedTrigger, TriggerIndex
from axisor.guard.policy import distance_bps
from axisor.guard.positions import GuardedPosition, load_guarded
from axisor.queue.jobs import GuardActionJob, job_options, priority_for_distance
from axisor.queue.names import GUARD_ACTION_JOB, POSITION_EVENTS_STREAM

log = structlog.get_logger("axisor.engine")


def armed_trigger(guarded: GuardedPosition | None) -> ArmedTrigger | None:
    """Return the trigger to arm for the position, or None when the guard must stay idle."""
    if guarded is None or not guarded.enabled:
        return None
    if guarded.position.guard_actions >= guarded.config.max_actions:
        return None
    if guarded.position.guard_paused_reason is not None:
        return None
    trigger = guarded.trigger
    if trigger is None:
        return None
    p = guarded.position
    return ArmedTrigger(
        position_id=p.id,
        account_id=p.account_id,
        side=p.side,
        trigger_price=trigger,
        liquidation_price=p.liquidation_price,
        version=p.guard_version,
        action=guarded.config.action.value,
    )


class Engine:
    """Owns the trigger index; ``on_tick`` queues one job per crossed trigger."""

    def __init__(
        self,
        database: Database,
        redis: Redis,
        queue: Queue,
        events_stream: str = POSITION_EVENTS_STREAM,
    ) -> None:
        self.database = database
        self.queue = queue
        self.index = TriggerIndex()
        self.events = PositionEventReader(redis, events_stream)
        self.fired_positions: set[int] = set()
        self.last_tick_ms: int | None = None
        self.jobs_queued = 0

    async def rebuild(self) -> int:
        """Arm every guarded running position from the database; return how many are armed."""
        await self.events.start()
        triggers = await asyncio.to_thread(self._load_all)
        self.index = TriggerIndex()
        for trigger in triggers:
            self.index.arm(trigger)
        log.info("trigger index rebuilt", armed=len(self.index))
        return len(self.index)

    def _load_all(self) -> list[ArmedTrigger]:
        with self.database.session() as session:
            ids = session.scalars(
                select(Position.id).where(Position.status == PositionStatus.RUNNING.value)
            ).all()
            return [t for t in (armed_trigger(load_guarded(session, i)) for i in ids) if t]

    async def apply_events(self, block_ms: int | None = None) -> int:
        """Re-read the positions that workers changed and re-arm or disarm them."""
        changed = await self.events.read(block_ms)
        if changed:
            await self.refresh(changed)
        return len(changed)

    async def refresh(self, position_ids: set[int]) -> None:
        triggers = await asyncio.to_thread(self._load_some, sorted(position_ids))
        for position_id, trigger in triggers.items():
            if trigger is None:
                self.index.disarm(position_id)
            else:
                self.index.arm(trigger)

    def _load_some(self, position_ids: list[int]) -> dict[int, ArmedTrigger | None]:
        with self.database.session() as session:
            return {i: armed_trigger(load_guarded(session, i)) for i in position_ids}

    async def on_tick(self, price: Decimal, time_ms: int, received_ns: int) -> list[GuardActionJob]:
        """Queue a job for every trigger ``price`` crosses and return the jobs."""
        self.last_tick_ms = time_ms
        crossed = self.index.pop_crossed(price)
        if not crossed:
            return []
        jobs = [_job(trigger, price, time_ms, received_ns) for trigger in crossed]
        await self.queue.addBulk(
            [_bulk_entry(job, trigger, price) for job, trigger in zip(jobs, crossed, strict=True)]
        )
        self.jobs_queued += len(jobs)
        self.fired_positions.update(trigger.position_id for trigger in crossed)
        return jobs


def _job(trigger: ArmedTrigger, price: Decimal, time_ms: int, received_ns: int) -> GuardActionJob:
    return GuardActionJob(
        position_id=trigger.position_id,
        account_id=trigger.account_id,
        version=trigger.version,
        action=trigger.action,
        trigger_price=trigger.trigger_price,
        tick_price=price,
        tick_time_ms=time_ms,
        tick_received_ns=received_ns,
    )


def _bulk_entry(job: GuardActionJob, trigger: ArmedTrigger, price: Decimal) -> dict:
    priority = priority_for_distance(distance_bps(price, trigger.liquidation_price))
    return {
        "name": GUARD_ACTION_JOB,
        "data": job.model_dump(mode="json"),
        "opts": job_options(job.job_id, priority),
    }
