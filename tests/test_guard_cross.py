"""Margin Guard on a cross margin position: setting, trigger, cross engine and worker.

The engine and worker tests run on a paper account with real Redis, BullMQ and both databases,
and assert on the venue's ``mutations`` (each cross order the venue filled on request) and on
the ledger rows.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import pytest
from bullmq import Queue
from sqlalchemy import select

from axisor.db.models import LedgerState, MarginGuardConfig, User
from axisor.engine.cross import CrossEngine
from axisor.engine.scheduler import armed_trigger
from axisor.errors import InvalidConfigError, StateUnknownError
from axisor.exchange.models import CrossPosition, Side
from axisor.guard.config import GuardAction, GuardConfig, GuardScope
from axisor.guard.cross import cross_trigger, cross_version, is_cross_crossed
from axisor.guard.positions import load_guarded
from axisor.guard.store import configure_guard
from axisor.queue.jobs import GuardCrossJob, guard_cross_job_id
from axisor.queue.names import GUARD_CROSS_JOB, MARGIN_GUARD_QUEUE
from axisor.workers.guard_cross import run_guard_cross
from axisor.workers.runner import PROCESSORS, start_worker

from .guard_fixtures import GuardWorld, guard_world

D = Decimal
CROSS_REDUCE = {"margin_threshold": "0.8", "action": "reduce_position", "reduce_percent": "50"}
# A 600 USD cross long at 60,000 with 200,000 sats of cross balance is liquidated near 50,000,
# so a threshold of 0.8 puts its trigger near 52,000.
CROSSING_PRICE = D(51_500)
SAFE_PRICE = D(56_000)
IDLE_TIMEOUT_S = 10.0


def long_position(**changes) -> CrossPosition:
    values = {
        "id": "cross-1",
        "quantity_usd": 600,
        "entry_price": D(60_000),
        "leverage": D(10),
        "margin_sats": 200_000,
        "maintenance_margin_sats": 1_000,
        "liquidation_price": D(50_042),
        "total_pl_sats": 0,
    }
    return CrossPosition(**(values | changes))


REDUCE_CONFIG = GuardConfig(
    margin_threshold=D("0.8"), action=GuardAction.REDUCE_POSITION, scope=GuardScope.CROSS
)


# The trigger, as a pure function


@pytest.mark.parametrize(
    ("quantity_usd", "entry", "liquidation", "side", "trigger"),
    [
        (600, D(60_000), D(50_042), Side.BUY, D(52_034)),
        (-600, D(60_000), D(75_000), Side.SELL, D(72_000)),
        (1, D(60_000), D(59_000), Side.BUY, D(59_200)),
    ],
)
def test_cross_trigger_price(quantity_usd, entry, liquidation, side, trigger):
    """The trigger is the threshold fraction of entry to liquidation, rounded towards entry."""
    position = long_position(
        quantity_usd=quantity_usd, entry_price=entry, liquidation_price=liquidation
    )

    result = cross_trigger(position, REDUCE_CONFIG)

    assert result.side is side
    assert result.trigger_price == trigger
    assert result.liquidation_price == liquidation


@pytest.mark.parametrize(
    "changes",
    [
        {"quantity_usd": 0, "entry_price": None, "liquidation_price": None},
        {"liquidation_price": None},
    ],
)
def test_cross_trigger_none(changes):
    """A flat position, or one without a liquidation price, has no trigger."""
    trigger = cross_trigger(long_position(**changes), REDUCE_CONFIG)

    assert trigger is None
    assert not is_cross_crossed(trigger, D(1))


def test_cross_crossed_sides():
    long_trigger = cross_trigger(long_position(), REDUCE_CONFIG)
    short_trigger = cross_trigger(
        long_position(quantity_usd=-600, liquidation_price=D(75_000)), REDUCE_CONFIG
    )

    assert is_cross_crossed(long_trigger, D(52_034))
    assert not is_cross_crossed(long_trigger, D("52034.5"))
    assert is_cross_crossed(short_trigger, D(72_000))
    assert not is_cross_crossed(short_trigger, D("71999.5"))


@pytest.mark.parametrize(
    "changes",
    [{"quantity_usd": 300}, {"margin_sats": 199_000}, {"leverage": D(5)}, {"id": "cross-2"}],
)
def test_version_follows_state(changes):
    """The same state gives the same version, and any change of state a new one."""
    position = long_position()

    assert cross_version(position, REDUCE_CONFIG) == cross_version(long_position(), REDUCE_CONFIG)
    assert cross_version(long_position(**changes), REDUCE_CONFIG) != cross_version(
        position, REDUCE_CONFIG
    )


def test_version_follows_setting():
    changed = REDUCE_CONFIG.model_copy(update={"margin_threshold": D("0.7")})

    assert cross_version(long_position(), changed) != cross_version(long_position(), REDUCE_CONFIG)


# Storing a cross guard setting


@pytest.fixture
async def world(db, redis_url):
    """A guarded paper account on the pro plan, with its isolated account-wide setting off."""
    async with guard_world(db, redis_url) as guarded_world:
        with db.session() as session:
            session.get(User, guarded_world.user_id).plan = "pro"
        guarded_world.configure(GuardConfig(margin_threshold=D("0.8")), enabled=False)
        yield guarded_world


def stored_rows(world: GuardWorld) -> list[MarginGuardConfig]:
    with world.db.session() as session:
        return list(session.scalars(select(MarginGuardConfig)))


def test_cross_reduce_config_accepted(world):
    """reduce_position on a cross guard is stored account-wide, mode global, scope cross."""
    config, _ = configure_guard(world.db, world.account_id, CROSS_REDUCE, cross=True)

    assert config.scope is GuardScope.CROSS
    assert config.action is GuardAction.REDUCE_POSITION
    rows = stored_rows(world)
    assert len(rows) == 1
    assert rows[0].position_id is None
    assert rows[0].mode == "global"
    assert rows[0].enabled is True
    assert rows[0].config["scope"] == "cross"
    assert rows[0].config["action"] == "reduce_position"


def test_cross_scope_in_json_accepted(world):
    config, _ = configure_guard(world.db, world.account_id, CROSS_REDUCE | {"scope": "cross"})

    assert config.scope is GuardScope.CROSS
    assert stored_rows(world)[0].config["scope"] == "cross"


def test_isolated_reduce_config_rejected(world):
    """An isolated guard keeps the message that the venue cannot shrink an isolated trade."""
    before = [row.config for row in stored_rows(world)]

    with pytest.raises(InvalidConfigError) as caught:
        configure_guard(world.db, world.account_id, CROSS_REDUCE)

    assert caught.value.field == "action"
    assert "not supported for isolated trades" in caught.value.message
    assert "partially reduce" in caught.value.message
    assert [row.config for row in stored_rows(world)] == before


@pytest.mark.parametrize("action", ["add_margin", "close_position", "notify"])
def test_cross_other_action_rejected(world, action):
    raw = CROSS_REDUCE | {"action": action}

    with pytest.raises(InvalidConfigError) as caught:
        configure_guard(world.db, world.account_id, raw, cross=True)

    assert caught.value.field == "action"
    assert "only reduce_position" in caught.value.message


@pytest.mark.parametrize(
    ("options", "field"),
    [({"position_id": 1}, "position_id"), ({"mode": "selected"}, "mode")],
)
def test_cross_config_is_account_wide(world, options, field):
    with pytest.raises(InvalidConfigError) as caught:
        configure_guard(world.db, world.account_id, CROSS_REDUCE, cross=True, **options)

    assert caught.value.field == field


def test_scope_change_over_enabled_rejected(world):
    """An enabled isolated setting is not silently replaced by a cross one."""
    configure_guard(world.db, world.account_id, {"margin_threshold": "0.8"})
    before = [row.config for row in stored_rows(world)]

    with pytest.raises(InvalidConfigError) as caught:
        configure_guard(world.db, world.account_id, CROSS_REDUCE, cross=True)

    assert caught.value.field == "scope"
    assert "disable that setting" in caught.value.message
    assert [row.config for row in stored_rows(world)] == before


# The cross engine and the margin-guard-cross job


@pytest.fixture
def prefix() -> str:
    return f"axisor-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def queue(redis_url, prefix):
    margin_guard = Queue(MARGIN_GUARD_QUEUE, {"connection": redis_url, "prefix": prefix})
    yield margin_guard
    await margin_guard.close()


@pytest.fixture
async def engine(world: GuardWorld, queue) -> CrossEngine:
    return CrossEngine(world.db, world.ctx.redis, queue, world.ctx.exchanges)


@pytest.fixture
async def guarded(world: GuardWorld) -> GuardWorld:
    """The account with a cross reduce guard and no cross position yet."""
    configure_guard(world.db, world.account_id, CROSS_REDUCE, cross=True)
    return world


@pytest.fixture
async def long_600(guarded: GuardWorld) -> GuardWorld:
    """A 600 USD cross long at 60,000 and 10x, 200,000 sats of cross balance."""
    world = guarded
    world.venue.deposit(str(world.account_id), 1_000_000)
    await world.exchange.deposit_cross(200_000)
    await world.exchange.set_cross_leverage(D(10))
    await world.exchange.open_cross_order(Side.BUY, 600)
    return world


async def tick(engine: CrossEngine, world: GuardWorld, price: Decimal) -> list[GuardCrossJob]:
    """Move the venue to ``price`` and hand the same tick to the engine."""
    world.venue.set_price(price, 2_000)
    return await engine.on_tick(price, 2_000, time.time_ns())


def cross_orders(world: GuardWorld) -> list[tuple[str, int]]:
    return [(m.details["side"], m.details["quantity_usd"]) for m in world.mutations("cross_order")]


async def queued_count(queue: Queue) -> int:
    counts = await queue.getJobCounts("waiting", "prioritized", "delayed", "active")
    return sum(counts.values())


async def wait_until_idle(queue: Queue) -> None:
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    while await queued_count(queue):
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue still busy after {IDLE_TIMEOUT_S} s")
        await asyncio.sleep(0.01)


def test_cross_job_registered():
    assert PROCESSORS[GUARD_CROSS_JOB] == (GuardCrossJob, run_guard_cross)


async def test_crossing_reduces_once(long_600, engine, queue, redis_url, prefix):
    """A crossing tick queues one job, and a BullMQ worker reduces the position once."""
    world = long_600
    assert await engine.rebuild() == 1

    jobs = await tick(engine, world, CROSSING_PRICE)
    again = await tick(engine, world, CROSSING_PRICE)
    assert len(jobs) == 1
    assert again == []
    assert await queued_count(queue) == 1
    worker = start_worker(world.ctx, redis_url, prefix=prefix)
    try:
        await wait_until_idle(queue)
    finally:
        await worker.close()

    finished = await queue.getJob(jobs[0].job_id)
    assert finished.returnvalue["outcome"] == "reduced"
    assert cross_orders(world) == [("buy", 600), ("sell", 300)]
    assert (await world.exchange.get_cross_position()).quantity_usd == 300
    rows = world.ledger_rows()
    assert len(rows) == 1
    assert rows[0].state == LedgerState.CONFIRMED.value
    assert rows[0].idempotency_key == jobs[0].idempotency_key


async def test_job_id_deterministic(long_600, engine, queue):
    """The same crossing of the same state, queued twice, is one BullMQ job."""
    world = long_600
    await engine.rebuild()
    first = await tick(engine, world, CROSSING_PRICE)
    await engine.rebuild()
    second = await tick(engine, world, CROSSING_PRICE)

    assert first[0].job_id == second[0].job_id
    assert first[0].job_id == guard_cross_job_id(world.account_id, first[0].version)
    assert await queued_count(queue) == 1


async def test_rerun_after_lost_reply(long_600, engine):
    """The job runs twice after the order was applied; the venue fills one opposite order."""
    world = long_600
    await engine.rebuild()
    [job] = await tick(engine, world, CROSSING_PRICE)
    world.venue.faults.fail_after_apply_once("open_cross_order")

    with pytest.raises(StateUnknownError):
        await run_guard_cross(world.ctx, job)
    assert await engine.apply_events() == 0  # no newer version is armed before the retry
    second = await run_guard_cross(world.ctx, job)
    third = await run_guard_cross(world.ctx, job)

    assert second["outcome"] == "confirmed_by_reconciliation"
    assert third["outcome"] == "already_confirmed"
    assert cross_orders(world) == [("buy", 600), ("sell", 300)]
    assert (await world.exchange.get_cross_position()).quantity_usd == 300
    rows = world.ledger_rows()
    assert len(rows) == 1
    assert rows[0].state == LedgerState.CONFIRMED.value


async def test_never_crossing_queues_nothing(long_600, engine, queue):
    world = long_600
    assert await engine.rebuild() == 1

    for price in (D(60_000), SAFE_PRICE, D(53_000)):
        assert await tick(engine, world, price) == []

    assert await queued_count(queue) == 0
    assert cross_orders(world) == [("buy", 600)]


async def test_flat_position_queues_nothing(guarded, engine, queue):
    """A guarded account without a cross position arms nothing and queues nothing."""
    world = guarded

    assert await engine.rebuild() == 0
    assert await tick(engine, world, D(1_000)) == []
    assert await queued_count(queue) == 0
    assert world.ledger_rows() == []


async def test_disabled_guard_not_armed(long_600, engine):
    world = long_600
    configure_guard(world.db, world.account_id, CROSS_REDUCE, cross=True, enabled=False)

    assert await engine.rebuild() == 0


async def test_stale_job_sends_nothing(long_600, engine):
    """A job queued for a state the user has changed since ends without an order."""
    world = long_600
    await engine.rebuild()
    [job] = await tick(engine, world, CROSSING_PRICE)
    await world.exchange.deposit_cross(100_000)

    result = await run_guard_cross(world.ctx, job)

    assert result["outcome"] == "stale"
    assert cross_orders(world) == [("buy", 600)]
    assert world.ledger_rows() == []


async def test_price_recovered_sends_nothing(long_600, engine):
    world = long_600
    await engine.rebuild()
    [job] = await tick(engine, world, CROSSING_PRICE)
    world.venue.set_price(SAFE_PRICE, 3_000)

    result = await run_guard_cross(world.ctx, job)

    assert result["outcome"] == "not_crossed"
    assert cross_orders(world) == [("buy", 600)]


async def test_worker_announces_rearm(long_600, engine):
    """After the reduction the engine reads the account again and arms the new version."""
    world = long_600
    await engine.rebuild()
    [job] = await tick(engine, world, CROSSING_PRICE)
    assert world.account_id not in engine.armed

    await run_guard_cross(world.ctx, job)
    assert await engine.apply_events() == 1

    rearmed = engine.armed[world.account_id]
    assert rearmed.version != job.version
    assert rearmed.trigger_price < job.trigger_price


async def test_action_limit_disarms(long_600, engine):
    world = long_600
    limited = CROSS_REDUCE | {"max_actions": 1}
    configure_guard(world.db, world.account_id, limited, cross=True)
    await engine.rebuild()
    [job] = await tick(engine, world, CROSSING_PRICE)
    await run_guard_cross(world.ctx, job)

    await engine.apply_events()

    assert world.account_id not in engine.armed


async def test_cross_setting_skips_isolated(guarded):
    """A cross setting must not arm the account's isolated trades."""
    world = guarded
    _, position_id = await world.open_position()

    with world.db.session() as session:
        trigger = armed_trigger(load_guarded(session, position_id))

    assert trigger is None
