"""Guard reduce_position: rejected for isolated trades, and once through the ledger for cross.

The cross tests run ``reduce_cross_position`` on a paper account with real Redis and both
databases, and assert on the ledger row and on the venue's ``mutations``.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from axisor.db.models import LedgerState
from axisor.errors import InvalidConfigError, RetryLaterError, StateUnknownError
from axisor.exchange.models import Side
from axisor.exchange.paper import LN_MARKETS_ISOLATED
from axisor.guard.config import GuardAction, GuardConfig, check_reduce_supported
from axisor.workers.cross_reduce import (
    CrossReduceRequest,
    plan_cross_reduce,
    reduce_cross_position,
)
from axisor.workers.guard_action import run_guard_action

from .guard_fixtures import CROSSING_PRICE, GuardWorld, guard_world

D = Decimal
REDUCE = GuardConfig(
    margin_threshold=D("0.8"), action=GuardAction.REDUCE_POSITION, reduce_percent=D(50)
)
KEY = "cross-reduce:test:1"


# Support checks


def test_isolated_reduce_rejected():
    """An isolated trade keeps the existing message: LN Markets cannot shrink it."""
    with pytest.raises(InvalidConfigError) as caught:
        check_reduce_supported(REDUCE, LN_MARKETS_ISOLATED, cross=False)

    assert caught.value.field == "action"
    assert "not supported for isolated trades" in caught.value.message
    assert "partially reduce" in caught.value.message


def test_cross_reduce_accepted():
    check_reduce_supported(REDUCE, LN_MARKETS_ISOLATED, cross=True)


@pytest.mark.parametrize(
    "changes", [{"partial_reduce_cross": False}, {"cross": False, "partial_reduce_cross": True}]
)
def test_cross_reduce_needs_capability(changes):
    capabilities = replace(LN_MARKETS_ISOLATED, **changes)

    with pytest.raises(InvalidConfigError) as caught:
        check_reduce_supported(REDUCE, capabilities, cross=True)

    assert "not supported for cross margin positions" in caught.value.message


@pytest.mark.parametrize("action", [GuardAction.ADD_MARGIN, GuardAction.CLOSE_POSITION])
def test_other_actions_pass_cross_check(action):
    config = REDUCE.model_copy(update={"action": action})
    capabilities = replace(LN_MARKETS_ISOLATED, cross=False)

    check_reduce_supported(config, capabilities, cross=True)


@pytest.mark.parametrize(
    ("quantity_usd", "percent", "side", "reduce_usd", "after_usd"),
    [
        (600, D(50), Side.SELL, 300, 300),
        (-600, D(25), Side.BUY, 150, -450),
        (3, D(50), Side.SELL, 1, 2),
        (999, D("33.3"), Side.SELL, 332, 667),
    ],
)
def test_plan_cross_reduce(quantity_usd, percent, side, reduce_usd, after_usd):
    """The reduction rounds down to whole USD and never changes the side."""
    plan = plan_cross_reduce(quantity_usd, percent)

    assert plan.side is side
    assert plan.reduce_usd == reduce_usd
    assert plan.quantity_before_usd == quantity_usd
    assert plan.quantity_after_usd == after_usd


@pytest.mark.parametrize(("quantity_usd", "percent"), [(0, D(50)), (1, D(50)), (1, D(99))])
def test_plan_nothing_to_reduce(quantity_usd, percent):
    assert plan_cross_reduce(quantity_usd, percent) is None


# The tracked isolated position still rejects reduce_position


@pytest.fixture
async def world(db, redis_url):
    async with guard_world(db, redis_url) as guarded_world:
        yield guarded_world


async def test_isolated_job_still_rejected(world: GuardWorld):
    """A reduce_position job on an isolated trade raises the clear message and sends nothing."""
    _, position_id = await world.open_position()
    world.configure(REDUCE)
    world.venue.set_price(CROSSING_PRICE, 2_000)

    with pytest.raises(InvalidConfigError, match="reduce_position is not supported"):
        await run_guard_action(world.ctx, world.action_job(position_id, "reduce_position"))

    assert [m.kind for m in world.venue.mutations] == ["open"]


# Reducing a cross position through the ledger


@pytest.fixture
async def long_600(world: GuardWorld) -> GuardWorld:
    """A 600 USD cross long at 60,000 and 10x on the guarded account."""
    account_id = str(world.account_id)
    world.venue.deposit(account_id, 2_000_000)
    await world.exchange.deposit_cross(1_000_000)
    await world.exchange.set_cross_leverage(D(10))
    await world.exchange.open_cross_order(Side.BUY, 600)
    return world


def reduce_request(world: GuardWorld, key: str = KEY) -> CrossReduceRequest:
    return CrossReduceRequest(
        key, world.account_id, REDUCE, trigger_price=D(55_636), tick_price=world.venue.price
    )


def cross_orders(world: GuardWorld) -> list[dict]:
    return [m.details for m in world.mutations("cross_order")]


def only_ledger_row(world: GuardWorld):
    rows = world.ledger_rows()
    assert len(rows) == 1
    return rows[0]


async def test_reduce_once(long_600):
    world = long_600

    result = await reduce_cross_position(world.ctx, reduce_request(world))

    assert result["outcome"] == "reduced"
    assert result["reduce_usd"] == 300
    assert result["quantity_after_usd"] == 300
    assert (await world.exchange.get_cross_position()).quantity_usd == 300
    assert [(o["side"], o["quantity_usd"]) for o in cross_orders(world)] == [
        ("buy", 600),
        ("sell", 300),
    ]
    row = only_ledger_row(world)
    assert row.state == LedgerState.CONFIRMED.value
    assert row.action == "reduce_position"
    assert row.position_id is None
    assert row.account_id == world.account_id
    assert row.details["quantity_before_usd"] == 600
    assert row.details["quantity_after_usd"] == 300
    assert row.details["margin_mode"] == "cross"


async def test_rerun_after_lost_reply(long_600):
    """The order is applied but its reply is lost; the rerun confirms it by the net quantity."""
    world = long_600
    world.venue.faults.fail_after_apply_once("open_cross_order")

    with pytest.raises(StateUnknownError):
        await reduce_cross_position(world.ctx, reduce_request(world))
    assert only_ledger_row(world).state == LedgerState.UNKNOWN.value

    result = await reduce_cross_position(world.ctx, reduce_request(world))

    assert result["outcome"] == "confirmed_by_reconciliation"
    assert len(cross_orders(world)) == 2  # the opening order and one reduction
    assert (await world.exchange.get_cross_position()).quantity_usd == 300
    row = only_ledger_row(world)
    assert row.state == LedgerState.CONFIRMED.value
    assert row.details["confirmed_by"] == "reconciliation"

    again = await reduce_cross_position(world.ctx, reduce_request(world))
    assert again["outcome"] == "already_confirmed"
    assert len(cross_orders(world)) == 2


async def test_retry_after_not_applied(long_600):
    """A call known not to be applied releases the row, and the retry sends it once."""
    world = long_600
    world.venue.faults.fail_before_apply_once("open_cross_order")

    with pytest.raises(RetryLaterError):
        await reduce_cross_position(world.ctx, reduce_request(world))
    assert only_ledger_row(world).state == LedgerState.PENDING.value

    result = await reduce_cross_position(world.ctx, reduce_request(world))

    assert result["outcome"] == "reduced"
    assert len(cross_orders(world)) == 2
    assert only_ledger_row(world).attempt == 2


async def test_sent_but_not_applied(long_600):
    """A row left sent whose order never reached the venue is sent again, once."""
    world = long_600
    world.venue.faults.fail_before_apply_once("open_cross_order")
    with pytest.raises(RetryLaterError):
        await reduce_cross_position(world.ctx, reduce_request(world))
    # A crash between the claim and the call leaves the row sent and the quantity unchanged.
    record = world.ctx.ledger.get(KEY)
    world.ctx.ledger.claim(record, amount_sats=0)

    result = await reduce_cross_position(world.ctx, reduce_request(world))

    assert result["outcome"] == "reduced"
    assert len(cross_orders(world)) == 2
    assert (await world.exchange.get_cross_position()).quantity_usd == 300


async def test_position_changed_elsewhere(long_600):
    """An unknown outcome that matches neither quantity fails the row and sends nothing more."""
    world = long_600
    world.venue.faults.fail_after_apply_once("open_cross_order")
    with pytest.raises(StateUnknownError):
        await reduce_cross_position(world.ctx, reduce_request(world))
    await world.exchange.close_cross_position()

    result = await reduce_cross_position(world.ctx, reduce_request(world))

    assert result["outcome"] == "reconcile_mismatch"
    assert "neither" in result["reason"]
    row = only_ledger_row(world)
    assert row.state == LedgerState.FAILED.value
    assert len(cross_orders(world)) == 3  # open, the reduction, the manual close


async def test_flat_position_not_sent(world: GuardWorld):
    result = await reduce_cross_position(world.ctx, reduce_request(world))

    assert result["outcome"] == "nothing_to_reduce"
    assert only_ledger_row(world).state == LedgerState.FAILED.value
    assert cross_orders(world) == []


async def test_reduce_short(world: GuardWorld):
    """A short is reduced with a buy order of half its quantity."""
    world.venue.deposit(str(world.account_id), 2_000_000)
    await world.exchange.deposit_cross(1_000_000)
    await world.exchange.set_cross_leverage(D(10))
    await world.exchange.open_cross_order(Side.SELL, 401)

    result = await reduce_cross_position(world.ctx, reduce_request(world))

    assert result["side"] == "buy"
    assert result["reduce_usd"] == 200
    assert (await world.exchange.get_cross_position()).quantity_usd == -201
