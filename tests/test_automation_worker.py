"""The automation-execute worker on both databases: each exchange call takes effect once.

Every test asserts on the ledger rows the worker left and on the paper venue's ``mutations``,
the list of changes the venue applied on request.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from axisor.automations.store import arm, create_automation, load_automation
from axisor.db.models import LedgerState, Plan, PositionStatus, User
from axisor.errors import RetryLaterError, StateUnknownError
from axisor.exchange.models import Side
from axisor.queue.jobs import AutomationJob
from axisor.workers.automation import run_automation

from .guard_fixtures import GuardWorld, guard_world

D = Decimal


@pytest.fixture
async def world(db, redis_url):
    async with guard_world(db, redis_url) as guarded_world:
        with guarded_world.db.session() as session:
            session.get(User, guarded_world.user_id).plan = Plan.PRO.value
        yield guarded_world


def job(world: GuardWorld, automation_id: int, action: str, version: int = 1) -> AutomationJob:
    """Return the job the engine would queue for the automation at the venue's price."""
    return AutomationJob(
        automation_id=automation_id,
        account_id=world.account_id,
        version=version,
        action=action,
        trigger_price=world.venue.price,
        tick_price=world.venue.price,
        tick_time_ms=3_000,
        tick_received_ns=time.time_ns(),
    )


def only_ledger_row(world: GuardWorld):
    rows = world.ledger_rows()
    assert len(rows) == 1
    return rows[0]


async def stop(world: GuardWorld, raw: dict) -> tuple[str, int, int]:
    """Open a 10x long at 60,000 and create a stop loss on it; return trade, position, id."""
    trade, position_id = await world.open_position()
    automation_id = create_automation(
        world.db, world.account_id, "stop_loss", raw, position_id=position_id
    )
    return trade.id, position_id, automation_id


ENTRY = {
    "side": "buy",
    "quantity_usd": 100,
    "leverage": "5",
    "trigger": "above",
    "price_usd": "61000",
}


async def test_close_rerun_after_lost_reply(world):
    """A close whose reply was lost is confirmed by reconciliation, never sent twice."""
    trade_id, position_id, automation_id = await stop(
        world, {"price_usd": "59000", "placement": "engine"}
    )
    world.venue.set_price(D(58_500), 2_000)
    world.venue.faults.fail_after_apply_once("close_trade")
    close_job = job(world, automation_id, "close")

    with pytest.raises(StateUnknownError):
        await run_automation(world.ctx, close_job)
    assert only_ledger_row(world).state == LedgerState.UNKNOWN.value

    result = await run_automation(world.ctx, close_job)

    assert result["outcome"] == "confirmed_by_reconciliation"
    assert len(world.mutations("close", trade_id)) == 1
    row = only_ledger_row(world)
    assert row.state == LedgerState.CONFIRMED.value
    assert row.idempotency_key == f"auto:{automation_id}:1:close"
    assert row.details["confirmed_by"] == "reconciliation"
    assert world.position(position_id).status == PositionStatus.CLOSED.value
    assert load_automation(world.db, automation_id).active is False


async def test_cash_in_rerun_after_lost_reply(world):
    """A cash-in whose reply was lost is recognised by the moved entry price."""
    trade, position_id = await world.open_position()
    automation_id = create_automation(
        world.db,
        world.account_id,
        "take_profit",
        {"price_usd": "61000", "action": "cash_in"},
        position_id=position_id,
    )
    world.venue.set_price(D(61_500), 2_000)
    world.venue.faults.fail_after_apply_once("cash_in")
    cash_job = job(world, automation_id, "cash_in")

    with pytest.raises(StateUnknownError):
        await run_automation(world.ctx, cash_job)
    result = await run_automation(world.ctx, cash_job)

    assert result["outcome"] == "confirmed_by_reconciliation"
    assert len(world.mutations("cash_in", trade.id)) == 1
    assert only_ledger_row(world).state == LedgerState.CONFIRMED.value
    (running,) = world.venue.running_trades(str(world.account_id))
    assert world.position(position_id).entry_price == running.entry_price


async def test_stop_placement_rerun_after_lost_reply(world):
    """A stop placement whose reply was lost is found on the trade and not sent again."""
    trade_id, _, automation_id = await stop(world, {"price_usd": "59000"})
    world.venue.faults.fail_after_apply_once("set_stoploss")
    place_job = job(world, automation_id, "place_stoploss")

    with pytest.raises(StateUnknownError):
        await run_automation(world.ctx, place_job)
    result = await run_automation(world.ctx, place_job)

    assert result["outcome"] == "confirmed_by_reconciliation"
    assert len(world.mutations("stoploss", trade_id)) == 1
    stored = load_automation(world.db, automation_id)
    assert stored.active is True
    assert stored.state.placed_version == 1


async def test_auto_entry_rerun_after_lost_reply(world):
    """An entry whose reply was lost finds the trade it opened instead of opening another."""
    world.venue.deposit(str(world.account_id), 10_000_000)
    automation_id = create_automation(world.db, world.account_id, "auto_entry", ENTRY)
    world.venue.set_price(D(61_000), 2_000)
    world.venue.faults.fail_after_apply_once("open_trade")
    open_job = job(world, automation_id, "open")

    with pytest.raises(StateUnknownError):
        await run_automation(world.ctx, open_job)
    result = await run_automation(world.ctx, open_job)

    assert result["outcome"] == "confirmed_by_reconciliation"
    assert len(world.mutations("open")) == 1
    row = only_ledger_row(world)
    assert row.details["trade_id"] == result["trade_id"]
    assert load_automation(world.db, automation_id).state.last_trade_id == result["trade_id"]


async def test_auto_entry_retried_when_not_applied(world):
    """An entry claimed but never sent opens its trade on the next attempt, once."""
    world.venue.deposit(str(world.account_id), 10_000_000)
    automation_id = create_automation(world.db, world.account_id, "auto_entry", ENTRY)
    world.venue.set_price(D(61_000), 2_000)
    world.venue.faults.fail_before_apply_once("open_trade")
    open_job = job(world, automation_id, "open")

    with pytest.raises(RetryLaterError, match="was not applied"):
        await run_automation(world.ctx, open_job)
    result = await run_automation(world.ctx, open_job)

    assert result["outcome"] == "opened"
    assert len(world.mutations("open")) == 1


@pytest.mark.parametrize(
    ("kind", "raw", "action", "mutation"),
    [
        ("stop_loss", {"price_usd": "59000", "placement": "engine"}, "close", "close"),
        ("take_profit", {"price_usd": "58000"}, "close", "close"),
    ],
)
async def test_rerun_after_success(world, kind, raw, action, mutation):
    """A job run again after it succeeded returns already_confirmed and sends nothing."""
    trade, position_id = await world.open_position()
    automation_id = create_automation(
        world.db, world.account_id, kind, raw, position_id=position_id
    )
    world.venue.set_price(D(58_000), 2_000)
    first = await run_automation(world.ctx, job(world, automation_id, action))

    second = await run_automation(world.ctx, job(world, automation_id, action))

    assert first["outcome"] == "closed"
    assert second["outcome"] == "already_confirmed"
    assert len(world.mutations(mutation, trade.id)) == 1


async def test_stale_version_does_nothing(world):
    """A job of an earlier arming sends nothing once the automation was armed again."""
    trade_id, _, automation_id = await stop(world, {"price_usd": "59000", "placement": "engine"})
    arm(world.db, automation_id)
    world.venue.set_price(D(58_000), 2_000)

    result = await run_automation(world.ctx, job(world, automation_id, "close", version=1))

    assert result == {"outcome": "stale", "automation_id": automation_id, "current_version": 2}
    assert world.mutations("close", trade_id) == []
    assert world.ledger_rows() == []


async def test_rejected_entry_fails_and_disarms(world):
    """An entry the venue rejects (no funds) fails its ledger row and disarms the automation."""
    automation_id = create_automation(world.db, world.account_id, "auto_entry", ENTRY)
    world.venue.set_price(D(61_000), 2_000)

    result = await run_automation(world.ctx, job(world, automation_id, "open"))

    assert result["outcome"] == "rejected"
    assert "free balance" in result["error"]
    assert only_ledger_row(world).state == LedgerState.FAILED.value
    assert load_automation(world.db, automation_id).active is False
    assert world.mutations("open") == []


async def test_short_stop_placed_on_exchange(world):
    """A short's fixed stop goes to the venue above the price."""
    trade, position_id = await world.open_position(side=Side.SELL)
    automation_id = create_automation(
        world.db, world.account_id, "stop_loss", {"price_usd": "61000"}, position_id=position_id
    )

    result = await run_automation(world.ctx, job(world, automation_id, "place_stoploss"))

    assert result["outcome"] == "stop_placed"
    (running,) = world.venue.running_trades(str(world.account_id))
    assert running.stoploss_price == D(61_000)
    assert [entry.action for entry in world.trade_log()] == ["stop_loss:set_stoploss"]


async def test_final_failure_rearms(world):
    """An automation job that fails its last attempt is armed again with a new version."""
    from axisor.queue.names import AUTOMATION_JOB
    from axisor.workers.runner import _on_final_failure

    _, _, automation_id = await stop(world, {"price_usd": "55000", "placement": "engine"})
    before = load_automation(world.db, automation_id)

    await _on_final_failure(
        world.ctx, AUTOMATION_JOB, job(world, automation_id, "close"), RetryLaterError("down")
    )

    after = load_automation(world.db, automation_id)
    assert after.active
    assert after.state.version == before.state.version + 1
