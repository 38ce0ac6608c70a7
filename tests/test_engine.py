"""Engine and BullMQ end to end: a crossing tick becomes one job, one worker run, one action."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import pytest
from bullmq import Queue

from axisor.db.models import PositionStatus
from axisor.engine.scheduler import Engine
from axisor.exchange.models import Side
from axisor.guard.config import GuardAction, GuardConfig
from axisor.queue.jobs import guard_action_job_id, job_options
from axisor.queue.names import GUARD_ACTION_JOB, MARGIN_GUARD_QUEUE
from axisor.workers.guard_action import run_guard_action
from axisor.workers.runner import start_worker

from .guard_fixtures import CROSSING_PRICE, GuardWorld, guard_world

D = Decimal
BUSY_STATES = ("waiting", "active", "delayed", "prioritized")
IDLE_TIMEOUT_S = 10.0


@pytest.fixture
def prefix() -> str:
    """A BullMQ key prefix of this test's own."""
    return f"axisor-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def world(db, redis_url, prefix):
    async with guard_world(db, redis_url) as guarded_world:
        guarded_world.ctx.events_stream = f"{prefix}:position-events"
        yield guarded_world


@pytest.fixture
async def queue(redis_url, prefix):
    margin_guard = Queue(MARGIN_GUARD_QUEUE, {"connection": redis_url, "prefix": prefix})
    yield margin_guard
    await margin_guard.close()


@pytest.fixture
async def engine(world: GuardWorld, queue) -> Engine:
    return Engine(world.db, world.ctx.redis, queue, world.ctx.events_stream)


@pytest.fixture
async def start(world: GuardWorld, redis_url, prefix):
    """Start BullMQ workers on demand (concurrency 5 unless given) and close them at teardown."""
    workers = []

    def start_one(concurrency: int = 5):
        worker = start_worker(world.ctx, redis_url, prefix=prefix, concurrency=concurrency)
        workers.append(worker)
        return worker

    yield start_one
    for worker in workers:
        await worker.close()


async def wait_until_idle(queue: Queue) -> None:
    """Poll the queue until no job is waiting, active, delayed or prioritized."""
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while True:
        counts = await queue.getJobCounts(*BUSY_STATES)
        if not any(counts.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue still busy after {IDLE_TIMEOUT_S} s: {counts}")
        await asyncio.sleep(0.01)


async def tick(engine: Engine, world: GuardWorld, price: Decimal):
    """Move the venue to ``price`` and hand the same tick to the engine."""
    world.venue.set_price(price, 2_000)
    return await engine.on_tick(price, 2_000, time.time_ns())


async def test_tick_to_one_action(world, queue, engine, start):
    """A crossing tick queues one job, and the worker adds margin once and completes it."""
    trade, position_id = await world.open_position()
    assert await engine.rebuild() == 1
    start()

    jobs = await tick(engine, world, CROSSING_PRICE)
    await wait_until_idle(queue)

    assert [j.position_id for j in jobs] == [position_id]
    assert len(world.mutations("add_margin", trade.id)) == 1
    finished = await queue.getJob(jobs[0].job_id)
    assert finished.returnvalue["outcome"] == "margin_added"
    assert await queue.getJobCounts("failed") == {"failed": 0}


async def test_tick_again_no_job(world, queue, engine):
    """A second tick at the same price before the worker reports queues nothing more."""
    _, position_id = await world.open_position()
    await engine.rebuild()

    first = await tick(engine, world, CROSSING_PRICE)
    second = await tick(engine, world, CROSSING_PRICE)

    assert len(first) == 1
    assert second == []
    assert position_id not in engine.index
    counts = await queue.getJobCounts("waiting", "prioritized")
    assert sum(counts.values()) == 1


async def test_same_trigger_one_job(world, queue, engine):
    """The same position and version crossing twice produces one BullMQ job."""
    _, position_id = await world.open_position()
    await engine.rebuild()
    armed = engine.index.get(position_id)

    first = await tick(engine, world, CROSSING_PRICE)
    engine.index.arm(armed)
    second = await tick(engine, world, CROSSING_PRICE)

    assert first[0].job_id == second[0].job_id == guard_action_job_id(position_id, armed.version)
    counts = await queue.getJobCounts("waiting", "prioritized")
    assert sum(counts.values()) == 1


async def test_add_same_id_once(queue):
    """Adding a job with an id the queue already contains keeps the first job only."""
    job_id = guard_action_job_id(1, 1)
    await queue.add(GUARD_ACTION_JOB, {"attempt": 1}, job_options(job_id, 5))
    await queue.add(GUARD_ACTION_JOB, {"attempt": 2}, job_options(job_id, 5))

    counts = await queue.getJobCounts("waiting", "prioritized")
    assert sum(counts.values()) == 1
    assert (await queue.getJob(job_id)).data == {"attempt": 1}


async def two_crossed_positions(world: GuardWorld) -> tuple[int, int]:
    """Return a near (10x) and a far (5x) long, both crossed at 55,000 USD.

    The 10x long is liquidated at 54,545 USD (82 bps below 55,000) and triggers at 55,636. The
    5x long is liquidated at 50,000 USD (909 bps below) and, with threshold 0.5, triggers at
    55,000.
    """
    _, near_id = await world.open_position(leverage=D(10))
    _, far_id = await world.open_position(leverage=D(5))
    world.configure(GuardConfig(margin_threshold=D("0.5")), position_id=far_id)
    return near_id, far_id


async def test_priority_nearest_first(world, queue, engine):
    """The job of the position nearest its liquidation gets the lower (earlier) priority."""
    near_id, far_id = await two_crossed_positions(world)
    await engine.rebuild()

    jobs = {j.position_id: j for j in await tick(engine, world, CROSSING_PRICE)}

    near = await queue.getJob(jobs[near_id].job_id)
    far = await queue.getJob(jobs[far_id].job_id)
    assert near.priority == 83
    assert far.priority == 910
    assert near.priority < far.priority


async def test_worker_runs_nearest_first(world, queue, engine, start):
    """One worker slot takes the nearer position's job before the farther one's."""
    near_id, far_id = await two_crossed_positions(world)
    await engine.rebuild()
    await tick(engine, world, CROSSING_PRICE)

    start(concurrency=1)
    await wait_until_idle(queue)

    assert [row.position_id for row in world.ledger_rows()] == [near_id, far_id]
    assert len(world.mutations("add_margin")) == 2


async def test_rebuild_arms_guarded_only(world, engine):
    """Rebuild arms running guarded positions, and skips every position the guard must leave."""
    _, long_id = await world.open_position()
    _, short_id = await world.open_position(side=Side.SELL)
    _, closed_id = await world.open_position()
    _, invalid_id = await world.open_position()
    _, disabled_id = await world.open_position()
    _, limit_id = await world.open_position()
    _, paused_id = await world.open_position()
    _, unliquidable_id = await world.open_position(side=Side.SELL, leverage=D(1))
    world.update_position(closed_id, status=PositionStatus.CLOSED.value)
    world.update_position(invalid_id, status=PositionStatus.INVALID.value)
    world.configure(GuardConfig(margin_threshold=D("0.8")), position_id=disabled_id, enabled=False)
    world.update_position(limit_id, guard_actions=10)
    world.update_position(paused_id, guard_paused_reason="no free balance")

    armed_count = await engine.rebuild()

    assert armed_count == 2
    assert long_id in engine.index
    assert short_id in engine.index
    for skipped in (closed_id, invalid_id, disabled_id, limit_id, paused_id, unliquidable_id):
        assert skipped not in engine.index


async def test_rebuild_uses_position_config(world, engine):
    """A position's own configuration overrides the account-wide one when arming."""
    _, position_id = await world.open_position()
    world.configure(GuardConfig(margin_threshold=D("0.5")), position_id=position_id)

    await engine.rebuild()

    assert engine.index.get(position_id).trigger_price == D("57272.5")


async def test_apply_events_rearms(world, engine):
    """After a worker adds margin, apply_events arms the new trigger version and price."""
    _, position_id = await world.open_position()
    await engine.rebuild()
    (job,) = await tick(engine, world, CROSSING_PRICE)

    await run_guard_action(world.ctx, job)
    changed = await engine.apply_events()

    assert changed == 1
    rearmed = engine.index.get(position_id)
    assert rearmed is not None
    assert rearmed.version == world.position(position_id).guard_version
    assert rearmed.version > job.version
    assert rearmed.trigger_price < job.trigger_price


async def test_apply_events_disarms_closed(world, engine):
    """A position the worker found closed is dropped from the index on the next events read."""
    trade, position_id = await world.open_position()
    await engine.rebuild()
    armed = engine.index.get(position_id)
    (job,) = await tick(engine, world, CROSSING_PRICE)
    engine.index.arm(armed)
    world.venue.close_trade(str(world.account_id), trade.id)

    await run_guard_action(world.ctx, job)
    await engine.apply_events()

    assert position_id not in engine.index


async def test_end_to_end_rearm_cycle(world, queue, engine, start):
    """Tick, act, re-arm, tick again further down: each crossing adds margin once."""
    trade, position_id = await world.open_position()
    await engine.rebuild()
    start()

    await tick(engine, world, CROSSING_PRICE)
    await wait_until_idle(queue)
    await engine.apply_events()
    rearmed = engine.index.get(position_id)
    assert rearmed is not None

    await tick(engine, world, rearmed.trigger_price)
    await wait_until_idle(queue)

    assert len(world.mutations("add_margin", trade.id)) == 2
    assert world.position(position_id).guard_actions == 2


async def test_worker_retries_lost_reply(world, queue, engine, start):
    """BullMQ retries a job whose add_margin reply was lost, and the retry reconciles."""
    trade, position_id = await world.open_position()
    await engine.rebuild()
    world.venue.faults.fail_after_apply_once("add_margin")
    start()

    (job,) = await tick(engine, world, CROSSING_PRICE)
    await wait_until_idle(queue)

    assert len(world.mutations("add_margin", trade.id)) == 1
    finished = await queue.getJob(job.job_id)
    assert finished.attemptsMade == 2
    assert finished.returnvalue["outcome"] == "confirmed_by_reconciliation"


async def test_unsupported_action_fails_once(world, queue, engine, start):
    """A reduce_position job fails without retries, and the position counts it and re-arms."""
    trade, position_id = await world.open_position()
    world.configure(GuardConfig(margin_threshold=D("0.8"), action=GuardAction.REDUCE_POSITION))
    await engine.rebuild()
    start()

    (job,) = await tick(engine, world, CROSSING_PRICE)
    await wait_until_idle(queue)

    assert [m.kind for m in world.venue.mutations] == ["open"]
    failed = await queue.getJob(job.job_id)
    assert failed.attemptsMade == 1
    assert "reduce_position is not supported" in failed.failedReason
    position = world.position(position_id)
    assert position.guard_actions == 1
    assert position.guard_version > job.version
    assert [entry.status for entry in world.trade_log()] == ["failed"]
