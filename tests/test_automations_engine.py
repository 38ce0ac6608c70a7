"""Automation engine with the worker, on both databases: each arming fires once, at its level.

The pipeline here runs in lockstep without BullMQ: a tick moves the paper venue, the engine
queues jobs on a recording queue, and each job runs through ``run_automation`` before the next
tick. The replay test runs the same path through BullMQ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from sqlalchemy import select

from axisor.automations.config import Crossing, TriggerOn
from axisor.automations.engine import (
    AutomationEngine,
    LevelIndex,
    LevelTrigger,
    pnl_target_price,
)
from axisor.automations.store import (
    arm,
    create_automation,
    load_automation,
    trade_closed,
)
from axisor.db.models import Automation, Plan, PositionStatus, User
from axisor.errors import InvalidConfigError
from axisor.exchange import math as lnm
from axisor.exchange.models import CloseReason, Side
from axisor.market.replay import Replay
from axisor.plans import PlanLimitError
from axisor.queue.jobs import AutomationJob
from axisor.workers.automation import run_automation

from .guard_fixtures import GuardWorld, guard_world

D = Decimal
HOUR_MS = 3_600_000


class RecordingQueue:
    """Stands in for the BullMQ queue: keeps the entries the engine adds."""

    def __init__(self) -> None:
        self.entries: list[dict] = []

    async def addBulk(self, entries: list[dict]) -> None:  # noqa: N802 - BullMQ's method name
        self.entries.extend(entries)

    def take(self) -> list[AutomationJob]:
        jobs = [AutomationJob.model_validate(entry["data"]) for entry in self.entries]
        self.entries.clear()
        return jobs


@dataclass
class Pipeline:
    """One paper account, the automation engine and the worker, stepped tick by tick."""

    world: GuardWorld
    engine: AutomationEngine
    queue: RecordingQueue
    outcomes: list[dict] = field(default_factory=list)
    time_ms: int = 10_000

    async def start(self) -> None:
        await self.engine.rebuild()
        await self.run_queued()

    async def tick(self, price: Decimal, index_price: Decimal | None = None) -> None:
        """Move the venue, apply its fills, and run every job the engine queues."""
        self.time_ms += 1_000
        price = lnm.quantize_price(price)
        for event in self.world.venue.set_price(price, self.time_ms):
            await self._venue_closed(event.trade_id, event.reason)
        await self.engine.apply_events()
        await self.engine.on_tick(price, self.time_ms, time.time_ns(), index_price)
        await self.run_queued()

    async def ticks(self, prices) -> None:
        for price in prices:
            await self.tick(D(price))

    async def run_queued(self) -> None:
        while jobs := self.queue.take():
            for job in jobs:
                self.outcomes.append(await run_automation(self.world.ctx, job))
            await self.engine.apply_events()

    def outcome_names(self) -> list[str]:
        return [outcome["outcome"] for outcome in self.outcomes]

    async def _venue_closed(self, trade_id: str, reason: CloseReason) -> None:
        world = self.world
        position = world.position_by_trade(trade_id)
        world.ctx.positions.mark_closed(position.id, reason)
        trade_closed(world.db, world.account_id, trade_id, reason)
        await world.ctx.position_changed(position.id)


def set_plan(world: GuardWorld, plan: Plan) -> None:
    with world.db.session() as session:
        session.get(User, world.user_id).plan = plan.value


@pytest.fixture
async def world(db, redis_url):
    async with guard_world(db, redis_url) as guarded_world:
        set_plan(guarded_world, Plan.PRO)
        yield guarded_world


@pytest.fixture
def pipeline(world: GuardWorld) -> Pipeline:
    queue = RecordingQueue()
    engine = AutomationEngine(world.db, world.ctx.redis, queue)
    return Pipeline(world, engine, queue)


async def long_position(world: GuardWorld, price: Decimal, leverage: Decimal = Decimal(2)):
    """Open a long at ``price`` and import it; return the trade and its position id."""
    world.venue.set_price(lnm.quantize_price(price), 5_000)
    return await world.open_position(leverage=leverage)


def crash_segment() -> list[Decimal]:
    """2021-05-19 from midnight to 18:00 UTC: from 42,850 down to 30,000 and back to 39,370."""
    replay = Replay.from_episode("2021-05-19")
    start = replay.start_ms + 48 * HOUR_MS
    ticks = replay.window(start, start + 18 * HOUR_MS).ticks()
    return [lnm.quantize_price(tick.price) for tick in ticks]


def closes(world: GuardWorld, trade_id: str) -> int:
    return len(world.mutations("close", trade_id))


# Level index


def level(automation_id: int, crossing: Crossing, price: str, strict: bool = False):
    return LevelTrigger(
        automation_id=automation_id,
        account_id=1,
        type="take_profit",
        version=1,
        action="close",
        crossing=crossing,
        level=D(price),
        trigger_on=TriggerOn.LAST,
        strict=strict,
    )


def test_level_index_inclusive_and_strict():
    """A level fires when reached; a strict level only once the price is past it."""
    index = LevelIndex()
    index.arm(level(1, Crossing.ABOVE, "100"))
    index.arm(level(2, Crossing.ABOVE, "100", strict=True))
    index.arm(level(3, Crossing.BELOW, "90"))
    index.arm(level(4, Crossing.BELOW, "90", strict=True))

    assert [t.automation_id for t in index.pop_crossed(TriggerOn.LAST, D(100))] == [1]
    assert [t.automation_id for t in index.pop_crossed(TriggerOn.LAST, D(90))] == [3]
    assert [t.automation_id for t in index.pop_crossed(TriggerOn.LAST, D("100.5"))] == [2]
    assert [t.automation_id for t in index.pop_crossed(TriggerOn.LAST, D("89.5"))] == [4]
    assert len(index) == 0


def test_pnl_target_price_reaches_target():
    """The level of a P&L target is the first cent at which pnl_sats reaches it."""
    for side in Side:
        price = pnl_target_price(side, 600, D(60_000), 50_000)
        assert lnm.pnl_sats(side, 600, D(60_000), price) >= 50_000
        closer = price - D("0.01") if side is Side.BUY else price + D("0.01")
        assert lnm.pnl_sats(side, 600, D(60_000), closer) < 50_000
    assert pnl_target_price(Side.BUY, 600, D(60_000), 10**9) is None


# Take profit


async def test_take_profit_fires_once(world, pipeline):
    """A long's take profit closes the trade once, however often the price crosses again."""
    trade, position_id = await long_position(world, D(60_000))
    automation_id = create_automation(
        world.db, world.account_id, "take_profit", {"price_usd": "61000"}, position_id=position_id
    )
    await pipeline.start()

    await pipeline.ticks(["60500", "61000", "60000", "61500", "62000"])

    assert pipeline.outcome_names() == ["closed"]
    assert closes(world, trade.id) == 1
    assert world.position(position_id).status == PositionStatus.CLOSED.value
    stored = load_automation(world.db, automation_id)
    assert stored.active is False
    assert stored.last_executed_at is not None
    assert [entry.action for entry in world.trade_log()] == ["take_profit:close"]


async def test_take_profit_never_reached(world, pipeline):
    """A level the crash segment never reaches queues no job."""
    prices = crash_segment()
    trade, position_id = await long_position(world, prices[0])
    create_automation(
        world.db, world.account_id, "take_profit", {"price_usd": "45000"}, position_id=position_id
    )
    await pipeline.start()

    await pipeline.ticks(prices[:1500])

    assert pipeline.outcomes == []
    assert world.ledger_rows() == []
    assert closes(world, trade.id) == 0


async def test_take_profit_pnl_percent_cash_in(world, pipeline):
    """A P&L target cashes in the profit once and leaves the trade running."""
    trade, position_id = await long_position(world, D(60_000), leverage=D(10))
    create_automation(
        world.db,
        world.account_id,
        "take_profit",
        {"pnl_percent": "50", "action": "cash_in"},
        position_id=position_id,
    )
    await pipeline.start()
    target = pnl_target_price(Side.BUY, trade.quantity_usd, trade.entry_price, 50_000)

    await pipeline.ticks(["62000", str(target - 1), str(target + 1), "64000"])

    assert pipeline.outcome_names() == ["cashed_in"]
    cash_ins = world.mutations("cash_in", trade.id)
    assert len(cash_ins) == 1
    assert cash_ins[0].amount_sats >= 50_000
    (running,) = world.venue.running_trades(str(world.account_id))
    assert running.entry_price > trade.entry_price
    assert world.position(position_id).entry_price == running.entry_price


# Stop loss


async def test_engine_stop_fires_once_in_crash(world, pipeline):
    """An engine stop at 35,000 closes the long once during the crash."""
    prices = crash_segment()
    trade, position_id = await long_position(world, prices[0])
    create_automation(
        world.db,
        world.account_id,
        "stop_loss",
        {"price_usd": "35000", "placement": "engine"},
        position_id=position_id,
    )
    await pipeline.start()

    await pipeline.ticks(prices)

    assert pipeline.outcome_names() == ["closed"]
    assert closes(world, trade.id) == 1
    (row,) = world.ledger_rows()
    assert row.tick_price <= D(35_000)
    assert row.idempotency_key.startswith("auto:")


async def test_exchange_stop_placed_once_and_filled(world, pipeline):
    """An exchange stop is placed once at arming; the venue fills it and it counts as fired."""
    prices = crash_segment()
    trade, position_id = await long_position(world, prices[0])
    automation_id = create_automation(
        world.db, world.account_id, "stop_loss", {"price_usd": "35000"}, position_id=position_id
    )
    await pipeline.start()

    await pipeline.ticks(prices)

    assert pipeline.outcome_names() == ["stop_placed"]
    assert len(world.mutations("stoploss", trade.id)) == 1
    assert closes(world, trade.id) == 0
    (closed,) = world.venue.closed_trades(str(world.account_id), 10)
    assert closed.close_reason is CloseReason.STOPLOSS
    stored = load_automation(world.db, automation_id)
    assert stored.active is False
    assert stored.last_executed_at is not None


async def test_engine_trailing_follows_high_water(world, pipeline):
    """An engine trailing stop moves up with the best price, never down, and fills once."""
    trade, position_id = await long_position(world, D(60_000))
    automation_id = create_automation(
        world.db,
        world.account_id,
        "stop_loss",
        {"trailing_distance_usd": "1000", "placement": "engine"},
        position_id=position_id,
    )
    await pipeline.start()

    await pipeline.ticks(["60000", "61000", "62500", "62000"])
    assert pipeline.engine.levels.get(automation_id).level == D(61_500)
    await pipeline.ticks(["61600", "61500", "61000"])

    assert pipeline.outcome_names() == ["closed"]
    (row,) = world.ledger_rows()
    assert row.trigger_price == D(61_500)
    assert row.tick_price == D(61_500)
    assert closes(world, trade.id) == 1


async def test_trailing_best_survives_rebuild(world, pipeline):
    """A rebuilt engine trails on from the stored best price, not from the current price."""
    _, position_id = await long_position(world, D(60_000))
    automation_id = create_automation(
        world.db,
        world.account_id,
        "stop_loss",
        {"trailing_distance_usd": "1000", "placement": "engine"},
        position_id=position_id,
    )
    await pipeline.start()
    await pipeline.ticks(["60000", "62500", "62000"])
    assert await pipeline.engine.store_trails() == 1

    await pipeline.engine.rebuild()

    assert pipeline.engine.levels.get(automation_id).level == D(61_500)


async def test_engine_trailing_percent_short(world, pipeline):
    """A short's percent trail follows the lowest price and fills when the price rises to it."""
    world.venue.set_price(D(60_000), 5_000)
    trade, position_id = await world.open_position(side=Side.SELL, leverage=D(2))
    automation_id = create_automation(
        world.db,
        world.account_id,
        "stop_loss",
        {"trailing_percent": "2"},
        position_id=position_id,
    )
    await pipeline.start()

    await pipeline.ticks(["60000", "58000", "59000"])
    assert pipeline.engine.levels.get(automation_id).level == D("59160.00")
    await pipeline.ticks(["59160"])

    assert pipeline.outcome_names() == ["closed"]
    assert closes(world, trade.id) == 1


async def test_exchange_trailing_moves_on_venue(world, pipeline):
    """A USD trail placed on the exchange follows the high-water mark on the venue."""
    trade, position_id = await long_position(world, D(60_000))
    create_automation(
        world.db,
        world.account_id,
        "stop_loss",
        {"trailing_distance_usd": "1000"},
        position_id=position_id,
    )
    await pipeline.start()

    await pipeline.ticks(["61000", "62500", "62000"])
    (running,) = world.venue.running_trades(str(world.account_id))
    assert running.stoploss_price == D(61_500)
    await pipeline.ticks(["61400"])

    assert pipeline.outcome_names() == ["stop_placed"]
    (closed,) = world.venue.closed_trades(str(world.account_id), 10)
    assert closed.close_reason is CloseReason.STOPLOSS
    assert closed.exit_price == D(61_400)


@pytest.mark.parametrize("placement", ["engine", "exchange"])
async def test_stop_crossed_when_armed(world, pipeline, placement):
    """A stop already crossed when armed closes the trade once, never again on later ticks."""
    trade, position_id = await long_position(world, D(60_000))
    world.venue.set_price(D(57_000), 6_000)
    create_automation(
        world.db,
        world.account_id,
        "stop_loss",
        {"price_usd": "58000", "placement": placement},
        position_id=position_id,
    )
    await pipeline.start()

    await pipeline.ticks(["57000", "56500", "57500", "56000"])

    assert pipeline.outcome_names() == ["closed"]
    assert closes(world, trade.id) == 1
    assert world.mutations("stoploss", trade.id) == []


async def test_vanished_trade_disarms(world, pipeline):
    """A trade the user closed disarms its automation; the fire sends nothing."""
    trade, position_id = await long_position(world, D(60_000))
    automation_id = create_automation(
        world.db,
        world.account_id,
        "stop_loss",
        {"price_usd": "59000", "placement": "engine"},
        position_id=position_id,
    )
    await pipeline.start()
    await world.exchange.close_trade(trade.id)

    await pipeline.ticks(["58000"])

    assert pipeline.outcome_names() == ["trade_gone"]
    assert closes(world, trade.id) == 1
    assert load_automation(world.db, automation_id).active is False


# Auto entry


ENTRY = {
    "side": "buy",
    "quantity_usd": 100,
    "leverage": "5",
    "trigger": "above",
    "price_usd": "61000",
}


async def test_auto_entry_once_without_cooldown(world, pipeline):
    """An entry opens one trade on the first crossing and stays disarmed until armed again."""
    world.venue.deposit(str(world.account_id), 10_000_000)
    automation_id = create_automation(world.db, world.account_id, "auto_entry", ENTRY)
    await pipeline.start()

    await pipeline.ticks(["61500", "60000", "61000", "60500", "61500"])

    assert pipeline.outcome_names() == ["opened"]
    assert len(world.mutations("open")) == 1
    assert load_automation(world.db, automation_id).active is False

    arm(world.db, automation_id)
    await pipeline.engine.refresh({automation_id})
    await pipeline.ticks(["60000", "61000"])
    assert pipeline.outcome_names() == ["opened", "opened"]


async def test_auto_entry_waits_for_cooldown(world, pipeline):
    """With a cooldown, a second crossing fires only after the cooldown has passed."""
    world.venue.deposit(str(world.account_id), 10_000_000)
    raw = {**ENTRY, "cooldown_s": 5, "trigger": "below", "price_usd": "59000", "side": "sell"}
    automation_id = create_automation(world.db, world.account_id, "auto_entry", raw)
    await pipeline.start()

    await pipeline.ticks(["60000", "59000", "60000", "58500"])  # ticks 1 s apart
    assert pipeline.outcome_names() == ["opened"]
    stored = load_automation(world.db, automation_id)
    assert stored.active is True
    assert stored.state.version == 2

    await pipeline.ticks(["60000", "59000", "60000", "59000"])
    assert pipeline.outcome_names() == ["opened", "opened"]
    assert [m.details["quantity_usd"] for m in world.mutations("open")[-2:]] == [100, 100]


async def test_trigger_on_index_price(world, pipeline):
    """An index trigger follows the index price of the tick, not the last price."""
    world.venue.deposit(str(world.account_id), 10_000_000)
    create_automation(world.db, world.account_id, "auto_entry", {**ENTRY, "trigger_on": "index"})
    await pipeline.start()

    await pipeline.tick(D(60_000), index_price=D(60_000))
    await pipeline.tick(D(62_000), index_price=D(60_900))
    assert pipeline.outcomes == []
    await pipeline.tick(D(60_000), index_price=D(61_000))

    assert pipeline.outcome_names() == ["opened"]


# Creating automations


@pytest.mark.parametrize(
    ("plan", "kind", "existing", "field", "text"),
    [
        (Plan.FREE, "take_profit", 0, "type", "not allowed on the free plan"),
        (Plan.BASIC, "auto_entry", 0, "type", "The advanced plan allows it"),
        (Plan.BASIC, "stop_loss", 2, "automations", "max_automations: 2"),
    ],
)
async def test_plan_limits_rejected(world, plan, kind, existing, field, text):
    """Creating beyond the plan's limits raises PlanLimitError and stores nothing."""
    trade, position_id = await long_position(world, D(60_000))
    for _ in range(existing):
        create_automation(
            world.db, world.account_id, "stop_loss", {"price_usd": "50000"}, position_id=position_id
        )
    set_plan(world, plan)
    raw = ENTRY if kind == "auto_entry" else {"price_usd": "50000"}
    target = None if kind == "auto_entry" else position_id

    with pytest.raises(PlanLimitError) as caught:
        create_automation(world.db, world.account_id, kind, raw, position_id=target)

    assert caught.value.field == field
    assert text in str(caught.value)
    with world.db.session() as session:
        assert len(session.scalars(select(Automation)).all()) == existing


async def test_create_stores_decimals_as_strings(world):
    """The stored JSON keeps the exact decimal text and the arming state."""
    trade, position_id = await long_position(world, D(60_000))
    automation_id = create_automation(
        world.db,
        world.account_id,
        "stop_loss",
        {"trailing_percent": "2.5"},
        position_id=position_id,
    )
    with world.db.session() as session:
        stored = session.get(Automation, automation_id).config
    assert stored["trailing_percent"] == "2.5"
    assert stored["_state"]["version"] == 1
    assert stored["_state"]["placement"] == "engine"
    assert stored["_state"]["position_id"] == position_id


async def test_create_needs_running_position(world):
    """A stop without its position, or on a closed one, names position_id."""
    trade, position_id = await long_position(world, D(60_000))
    with pytest.raises(InvalidConfigError, match="position_id: missing"):
        create_automation(world.db, world.account_id, "stop_loss", {"price_usd": "50000"})
    await world.exchange.close_trade(trade.id)
    await world.check()
    with pytest.raises(InvalidConfigError, match="not running"):
        create_automation(
            world.db, world.account_id, "stop_loss", {"price_usd": "5"}, position_id=position_id
        )
