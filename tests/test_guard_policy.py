"""Guard policy: trigger prices, trade validation and how much margin to add."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from axisor.errors import InvalidExchangeDataError
from axisor.exchange import math as lnm
from axisor.exchange.models import Side, Trade, TradeStatus
from axisor.guard.config import AddMarginMode, GuardConfig
from axisor.guard.policy import is_crossed, plan_add_margin, trigger_price, validate_trade

D = Decimal
TICK = D("0.5")
ENTRY_PRICE = D(60_000)
PERCENT = GuardConfig(margin_threshold=D("0.8"))


def make_trade(
    side: Side = Side.BUY,
    leverage: int = 10,
    quantity_usd: int = 600,
    entry_price: Decimal = ENTRY_PRICE,
) -> Trade:
    """Return a running trade with the venue's margin and liquidation price."""
    margin_sats = lnm.margin_for(quantity_usd, D(leverage), entry_price)
    return Trade(
        id="t-1",
        side=side,
        quantity_usd=quantity_usd,
        entry_price=entry_price,
        margin_sats=margin_sats,
        leverage=D(leverage),
        liquidation_price=lnm.liquidation_price(side, quantity_usd, entry_price, margin_sats),
        maintenance_margin_sats=0,
        status=TradeStatus.RUNNING,
    )


def used_fraction(trade: Trade, price: Decimal, margin_sats: int) -> Decimal:
    """Return how much of the entry-to-liquidation distance ``price`` uses at ``margin_sats``."""
    liquidation = lnm.liquidation_price(
        trade.side, trade.quantity_usd, trade.entry_price, margin_sats
    )
    if liquidation is None:
        return D(0)
    return (price - trade.entry_price) / (liquidation - trade.entry_price)


# Trigger price.


def test_trigger_documented_long():
    """Entry 60,000, liquidation 54,545 and threshold 0.8 act at 55,636 for a long."""
    trigger = trigger_price(Side.BUY, D(60_000), D(54_545), D("0.8"))
    assert trigger == D(55_636)


def test_trigger_documented_short():
    """The short mirror (entry 60,000, liquidation 65,455) acts at 64,364."""
    trigger = trigger_price(Side.SELL, D(60_000), D(65_455), D("0.8"))
    assert trigger == D(64_364)


def test_trigger_venue_liquidation():
    """The trigger of the venue's 10x 600 USD long is the documented 55,636."""
    trade = make_trade()
    assert trade.liquidation_price == D(54_545)
    assert trigger_price(trade.side, trade.entry_price, trade.liquidation_price, D("0.8")) == D(
        55_636
    )


def test_trigger_none_without_liquidation():
    """A 1x short has no liquidation price, so it has no trigger and is never crossed."""
    trigger = trigger_price(Side.SELL, D(60_000), None, D("0.8"))
    assert trigger is None
    assert not is_crossed(Side.SELL, D(1_000_000), trigger)


@pytest.mark.parametrize(
    ("side", "price", "crossed"),
    [
        (Side.BUY, D("55636"), True),
        (Side.BUY, D("55635.5"), True),
        (Side.BUY, D("55636.5"), False),
        (Side.SELL, D("64364"), True),
        (Side.SELL, D("64364.5"), True),
        (Side.SELL, D("64363.5"), False),
    ],
)
def test_is_crossed_boundary(side, price, crossed):
    """A price at the trigger or beyond it, towards the liquidation, is crossed."""
    trigger = D(55_636) if side is Side.BUY else D(64_364)
    assert is_crossed(side, price, trigger) is crossed


@given(
    entry=st.integers(min_value=1_000, max_value=1_000_000),
    distance=st.integers(min_value=1, max_value=500_000),
    threshold_millis=st.integers(min_value=1, max_value=999),
    side=st.sampled_from(Side),
)
def test_trigger_on_tick_never_late(entry, distance, threshold_millis, side):
    """The trigger is on the 0.5 tick, at most one tick from the exact threshold, never past it."""
    assume(side is Side.SELL or distance < entry)
    liquidation = entry - distance if side is Side.BUY else entry + distance
    threshold = D(threshold_millis) / 1000
    exact = D(entry) + threshold * (liquidation - entry)

    trigger = trigger_price(side, D(entry), D(liquidation), threshold)

    assert trigger % TICK == 0
    assert abs(trigger - exact) < TICK
    if side is Side.BUY:
        assert trigger >= exact
    else:
        assert trigger <= exact
    assert is_crossed(side, exact, trigger)


# Trade validation.

VALID = make_trade()
INVALID_TRADES = [
    pytest.param(replace(VALID, liquidation_price=D(0)), "not positive", id="long-liq-zero"),
    pytest.param(replace(VALID, liquidation_price=D(-1)), "not positive", id="long-liq-negative"),
    pytest.param(replace(VALID, liquidation_price=D(60_000)), "below", id="long-liq-at-entry"),
    pytest.param(replace(VALID, liquidation_price=D(61_000)), "below", id="long-liq-above"),
    pytest.param(replace(VALID, liquidation_price=None), "must have", id="long-without-liq"),
    pytest.param(
        replace(make_trade(Side.SELL), liquidation_price=D(59_000)), "above", id="short-liq-below"
    ),
    pytest.param(
        replace(make_trade(Side.SELL), liquidation_price=D(0)), "not positive", id="short-liq-zero"
    ),
    pytest.param(replace(VALID, margin_sats=0), "positive", id="margin-zero"),
    pytest.param(replace(VALID, quantity_usd=0), "positive", id="quantity-zero"),
    pytest.param(replace(VALID, entry_price=D(0)), "positive", id="entry-zero"),
]


@pytest.mark.parametrize(("trade", "detail"), INVALID_TRADES)
def test_validate_rejects_impossible(trade, detail):
    """A trade with values that cannot be true raises InvalidExchangeDataError naming it."""
    with pytest.raises(InvalidExchangeDataError) as caught:
        validate_trade(trade)
    assert trade.id in str(caught.value)
    assert detail in str(caught.value)


def test_validate_accepts_1x_short():
    """A 1x short has no liquidation price, and that is valid."""
    trade = make_trade(Side.SELL, leverage=1)
    assert trade.liquidation_price is None
    validate_trade(trade)


@pytest.mark.parametrize("side", list(Side))
def test_validate_accepts_venue_trades(side):
    """Trades with the margin and liquidation price of the venue math pass validation."""
    validate_trade(make_trade(side))


# Margin plan.


def test_plan_percent_mode():
    """Percent mode adds add_margin_percent of the current margin (50% of 100,000 sats)."""
    plan = plan_add_margin(PERCENT, make_trade(), D(55_000), 10_000_000, 0)
    assert plan.amount_sats == 50_000
    assert plan.needed_sats == 50_000
    assert plan.shortfall_sats == 0
    assert plan.limited_by is None


def test_plan_percent_rounds_up():
    """A fractional percentage of the margin rounds up to whole sats."""
    config = GuardConfig(margin_threshold=D("0.8"), add_margin_percent=D("33.333"))
    plan = plan_add_margin(config, make_trade(), D(55_000), 10_000_000, 0)
    assert plan.amount_sats == 33_333


@pytest.mark.parametrize("side", list(Side))
def test_plan_restore_documented(side):
    """Restore mode at 55,000 (66,000 for a short) leaves half the distance used, no more."""
    config = GuardConfig(
        margin_threshold=D("0.8"),
        add_margin_mode=AddMarginMode.RESTORE,
        restore_fraction=D("0.5"),
    )
    trade = make_trade(side)
    price = D(55_000) if side is Side.BUY else D(66_000)

    plan = plan_add_margin(config, trade, price, 10_000_000, 0)

    assert plan.limited_by is None
    assert used_fraction(trade, price, trade.margin_sats) > D("0.8")
    assert used_fraction(trade, price, trade.margin_sats + plan.amount_sats) <= D("0.5")
    assert used_fraction(trade, price, trade.margin_sats + plan.amount_sats - 1) > D("0.5")


@given(
    side=st.sampled_from(Side),
    leverage=st.integers(min_value=2, max_value=100),
    quantity_usd=st.integers(min_value=1, max_value=500_000),
    entry=st.integers(min_value=10_000, max_value=200_000),
    used_millis=st.integers(min_value=1, max_value=999),
    restore_millis=st.integers(min_value=1, max_value=998),
)
def test_plan_restore_property(side, leverage, quantity_usd, entry, used_millis, restore_millis):
    """Restore mode adds the fewest sats that leave at most restore_fraction of the distance used.

    A plan capped at leverage 1 is skipped, because no margin reaches the target then.
    """
    trade = make_trade(side, leverage, quantity_usd, D(entry))
    assume(trade.liquidation_price is not None)
    restore = D(restore_millis) / 1000
    config = GuardConfig(
        margin_threshold=D("0.999"),
        add_margin_mode=AddMarginMode.RESTORE,
        restore_fraction=restore,
    )
    price = D(entry) + D(used_millis) / 1000 * (trade.liquidation_price - D(entry))

    plan = plan_add_margin(config, trade, price, 10**15, 0)
    max_margin_sats = lnm.max_margin_sats(quantity_usd, D(entry))
    assume(plan.amount_sats > 1 and trade.margin_sats + plan.amount_sats < max_margin_sats)

    assert used_fraction(trade, price, trade.margin_sats + plan.amount_sats) <= restore
    assert used_fraction(trade, price, trade.margin_sats + plan.amount_sats - 1) > restore


def test_plan_capped_by_balance():
    """A free balance below the need caps the amount and reports the shortfall."""
    plan = plan_add_margin(PERCENT, make_trade(), D(55_000), 20_000, 0)
    assert plan.amount_sats == 20_000
    assert plan.shortfall_sats == 30_000
    assert plan.limited_by == "balance"


def test_plan_capped_by_budget():
    """The budget left is budget_sats minus the sats the guard already added."""
    config = GuardConfig(margin_threshold=D("0.8"), budget_sats=60_000)
    plan = plan_add_margin(config, make_trade(), D(55_000), 10_000_000, 45_000)
    assert plan.amount_sats == 15_000
    assert plan.shortfall_sats == 35_000
    assert plan.limited_by == "budget"


def test_plan_budget_spent():
    """A budget already spent (or overspent) allows nothing."""
    config = GuardConfig(margin_threshold=D("0.8"), budget_sats=40_000)
    plan = plan_add_margin(config, make_trade(), D(55_000), 10_000_000, 50_000)
    assert plan.amount_sats == 0
    assert plan.shortfall_sats == 50_000
    assert plan.limited_by == "budget"


def test_plan_capped_by_leverage():
    """The amount never takes the margin past leverage 1 (max_margin_sats)."""
    config = GuardConfig(margin_threshold=D("0.8"), add_margin_percent=D(500))
    trade = make_trade(leverage=2)
    room_sats = lnm.max_margin_sats(trade.quantity_usd, trade.entry_price) - trade.margin_sats

    plan = plan_add_margin(config, trade, D(40_000), 10_000_000, 0)

    assert plan.amount_sats == room_sats
    assert plan.needed_sats == 5 * trade.margin_sats
    assert plan.shortfall_sats == plan.needed_sats - room_sats
    assert plan.limited_by == "leverage"


def test_plan_empty_balance():
    """With no free balance the plan adds nothing and reports the whole need as shortfall."""
    plan = plan_add_margin(PERCENT, make_trade(), D(55_000), 0, 0)
    assert plan.amount_sats == 0
    assert plan.shortfall_sats == plan.needed_sats
    assert plan.limited_by == "balance"


@given(
    balance=st.integers(min_value=0, max_value=10**9),
    budget=st.none() | st.integers(min_value=0, max_value=10**9),
    added=st.integers(min_value=0, max_value=10**9),
    leverage=st.integers(min_value=1, max_value=100),
)
def test_plan_within_every_cap(balance, budget, added, leverage):
    """The amount never exceeds the balance, the budget left or the room below leverage 1."""
    config = GuardConfig(margin_threshold=D("0.8"), budget_sats=budget)
    trade = make_trade(Side.SELL, leverage=leverage)
    room_sats = lnm.max_margin_sats(trade.quantity_usd, trade.entry_price) - trade.margin_sats

    plan = plan_add_margin(config, trade, D(65_000), balance, added)

    assert 0 <= plan.amount_sats <= plan.needed_sats
    assert plan.amount_sats <= balance
    assert plan.amount_sats <= max(room_sats, 0)
    if budget is not None:
        assert plan.amount_sats <= max(budget - added, 0)
    assert plan.amount_sats + plan.shortfall_sats == plan.needed_sats
    assert (plan.limited_by is None) == (plan.shortfall_sats == 0)
