"""LN Markets isolated-margin math: published figures, fee tiers and properties."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from axisor.errors import InvalidConfigError
from axisor.exchange.math import (
    FEE_RATES,
    SATS_PER_BTC,
    cash_in_effect,
    leverage_for,
    liquidation_price,
    maintenance_margin_sats,
    margin_for,
    margin_for_liquidation,
    max_cash_in_sats,
    max_margin_sats,
    pnl_sats,
    quantize_price,
    trading_fee_sats,
)
from axisor.exchange.models import Side

D = Decimal

quantities = st.integers(min_value=1, max_value=500_000)
prices = st.integers(min_value=2_000, max_value=500_000).map(lambda halves: D(halves) / 2)
leverages = st.decimals(min_value=1, max_value=100, places=2)
sides = st.sampled_from(list(Side))


@st.composite
def trades(draw):
    """A side, quantity, entry price and a margin between 100x and 1x."""
    side = draw(sides)
    quantity_usd = draw(quantities)
    entry = draw(prices)
    margin_sats = draw(
        st.integers(
            min_value=margin_for(quantity_usd, D(100), entry),
            max_value=max_margin_sats(quantity_usd, entry),
        )
    )
    return side, quantity_usd, entry, margin_sats


# Figures LN Markets publishes for isolated trades.


def test_documented_leverage_from_margin():
    assert leverage_for(60, 10_000, D(60_000)) == D(10)


def test_documented_margin_from_leverage():
    assert margin_for(60, D(10), D(60_000)) == 10_000


def test_documented_long_liquidation():
    assert liquidation_price(Side.BUY, 60, D(60_000), 10_000) == D(54_545)


def test_documented_opening_fee_reserved():
    assert trading_fee_sats(60, D(60_000), tier=1) == 100


def test_documented_closing_fee_reserved():
    assert trading_fee_sats(60, D(54_545), tier=1) == 110


def test_documented_maintenance_margin_at_entry():
    assert maintenance_margin_sats(60, D(60_000), D(54_545)) == 210


def test_documented_maintenance_margin_after_opening_fee():
    reserve_sats = maintenance_margin_sats(60, D(60_000), D(54_545))
    assert reserve_sats - trading_fee_sats(60, D(60_000), tier=1) == 110


def test_documented_one_usd_margin_at_100x():
    assert margin_for(1, D(100), D(100_000)) == 10


def test_documented_one_usd_liquidation_at_100x():
    assert liquidation_price(Side.BUY, 1, D(100_000), 10) == D(99_010)


def test_documented_one_usd_maintenance_margin():
    assert maintenance_margin_sats(1, D(100_000), D(99_010)) == 2


# Fees and rounding.


@pytest.mark.parametrize(
    ("tier", "quantity_usd", "price", "fee_sats"),
    [
        (1, 60, D(60_000), 100),
        (2, 60, D(60_000), 80),
        (3, 60, D(60_000), 70),
        (4, 60, D(60_000), 60),
        (1, 1, D(100_000), 1),
        (4, 1, D(100_000), 0),
        (1, 10_000, D("30000.5"), 33_332),
        (2, 10_000, D("30000.5"), 26_666),
        (3, 10_000, D("30000.5"), 23_332),
        (4, 10_000, D("30000.5"), 19_999),
    ],
)
def test_fee_tiers(tier, quantity_usd, price, fee_sats):
    assert trading_fee_sats(quantity_usd, price, tier) == fee_sats


def test_fee_rates_table():
    rates = dict(FEE_RATES)
    assert rates == {1: D("0.001"), 2: D("0.0008"), 3: D("0.0007"), 4: D("0.0006")}


def test_margin_rounds_up():
    # 1e8 / 60,000 = 1666.67 sats.
    assert margin_for(1, D(1), D(60_000)) == 1_667


def test_pnl_rounds_toward_minus_infinity():
    # 1e8 * (1/60,000 - 1/70,000) = 238.1 sats for the long and -238.1 for the short.
    assert pnl_sats(Side.BUY, 1, D(60_000), D(70_000)) == 238
    assert pnl_sats(Side.SELL, 1, D(60_000), D(70_000)) == -239


def test_liquidation_rounds_half_up():
    # The exact liquidation prices are 39,062.5 for the long and 54,687.5 for the short.
    assert liquidation_price(Side.BUY, 1, D(40_000), 60) == D(39_063)
    assert liquidation_price(Side.SELL, 7, D(50_000), 1_200) == D(54_688)


def test_liquidation_rounds_to_nearest():
    # The exact liquidation prices are 54,545.45 and 99,009.90.
    assert liquidation_price(Side.BUY, 60, D(60_000), 10_000) == D(54_545)
    assert liquidation_price(Side.BUY, 1, D(100_000), 10) == D(99_010)


def test_quantize_price_to_half_dollar():
    assert quantize_price(D("60000.24")) == D("60000")
    assert quantize_price(D("60000.25")) == D("60000.5")
    assert quantize_price(D("60000.76")) == D("60001")


def test_short_at_leverage_one_has_no_liquidation():
    margin_sats = margin_for(60, D(1), D(60_000))
    assert liquidation_price(Side.SELL, 60, D(60_000), margin_sats) is None


def test_max_margin_is_leverage_one():
    assert max_margin_sats(60, D(60_000)) == 100_000


# Input checks.


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: margin_for(0, D(10), D(60_000)), "quantity_usd"),
        (lambda: margin_for(60, D(101), D(60_000)), "leverage"),
        (lambda: margin_for(60, D("0.5"), D(60_000)), "leverage"),
        (lambda: margin_for(60, D(10), D(0)), "price"),
        (lambda: margin_for(60, D(10), 60_000.0), "price"),
        (lambda: margin_for(60.0, D(10), D(60_000)), "quantity_usd"),
        (lambda: leverage_for(60, 0, D(60_000)), "margin_sats"),
        (lambda: trading_fee_sats(60, D(60_000), tier=5), "tier"),
        (lambda: liquidation_price(Side.BUY, 60, D("NaN"), 10_000), "entry_price"),
    ],
)
def test_invalid_input_names_field(call, field):
    with pytest.raises(InvalidConfigError) as raised:
        call()
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("side", "target"),
    [
        (Side.BUY, D(0)),
        (Side.BUY, D(60_000)),
        (Side.BUY, D(20_000)),  # below the 1x liquidation price of 30,000
        (Side.SELL, D(60_000)),
        (Side.SELL, D(59_000)),
    ],
)
def test_margin_for_liquidation_rejects_target(side, target):
    with pytest.raises(InvalidConfigError) as raised:
        margin_for_liquidation(side, 60, D(60_000), target)
    assert raised.value.field == "target_liquidation"


def test_cash_in_too_much_names_amount():
    with pytest.raises(InvalidConfigError) as raised:
        cash_in_effect(Side.BUY, 60, D(60_000), 10_000, D(60_000), 10_000)
    assert raised.value.field == "amount_sats"


# Cash-in examples.


def test_cash_in_from_pnl_moves_entry():
    pnl_before = pnl_sats(Side.BUY, 60, D(60_000), D(66_000))
    new_entry, new_margin = cash_in_effect(Side.BUY, 60, D(60_000), 10_000, D(66_000), 500)
    assert new_margin == 10_000
    assert D(60_000) < new_entry < D(66_000)
    assert pnl_sats(Side.BUY, 60, new_entry, D(66_000)) == pnl_before - 500


def test_cash_in_beyond_pnl_takes_margin():
    pnl_before = pnl_sats(Side.BUY, 60, D(60_000), D(66_000))
    new_entry, new_margin = cash_in_effect(
        Side.BUY, 60, D(60_000), 10_000, D(66_000), pnl_before + 1_000
    )
    assert new_entry == D(66_000)
    assert new_margin == 9_000


def test_cash_in_from_margin_keeps_entry():
    new_entry, new_margin = cash_in_effect(Side.SELL, 60, D(60_000), 10_000, D(61_000), 2_000)
    assert new_entry == D(60_000)
    assert new_margin == 8_000


def test_cash_in_cannot_pass_100x():
    # At 60,000 the 100x margin of 60 USD is 1,000 sats, so at most 9,000 sats may go.
    assert max_cash_in_sats(Side.SELL, 60, D(60_000), 10_000, D(60_000)) == 9_000


# Properties.


@given(trades())
def test_liquidation_on_loss_side_of_entry(trade):
    side, quantity_usd, entry, margin_sats = trade
    liquidation = liquidation_price(side, quantity_usd, entry, margin_sats)
    if side is Side.BUY:
        assert liquidation is not None
        assert 0 < liquidation <= entry
    else:
        assert liquidation is None or liquidation >= entry


@given(trades(), st.integers(min_value=1, max_value=10**9))
def test_added_margin_moves_liquidation_away(trade, extra_sats):
    side, quantity_usd, entry, margin_sats = trade
    before = liquidation_price(side, quantity_usd, entry, margin_sats)
    after = liquidation_price(side, quantity_usd, entry, margin_sats + extra_sats)
    if side is Side.BUY:
        assert after <= before
    else:
        assert before is None or after is None or after >= before
        assert before is not None or after is None


@given(quantities, prices)
def test_short_at_1x_has_no_liquidation(quantity_usd, entry):
    margin_sats = margin_for(quantity_usd, D(1), entry)
    assert liquidation_price(Side.SELL, quantity_usd, entry, margin_sats) is None


@given(quantities, prices, leverages)
def test_margin_round_trips_leverage(quantity_usd, entry, leverage):
    margin_sats = margin_for(quantity_usd, leverage, entry)
    assert leverage_for(quantity_usd, margin_sats, entry) <= leverage
    if margin_sats > 1:
        assert leverage_for(quantity_usd, margin_sats - 1, entry) > leverage - D("0.000001")


@given(quantities, prices, st.integers(min_value=50_500, max_value=99_999))
def test_long_margin_for_liquidation_round_trips(quantity_usd, entry, target_per_100k):
    target = quantize_price(entry * target_per_100k / 100_000)
    assume(target < entry)
    margin_sats = margin_for_liquidation(Side.BUY, quantity_usd, entry, target)
    assert liquidation_price(Side.BUY, quantity_usd, entry, margin_sats) <= target
    if margin_sats > 1:
        assert liquidation_price(Side.BUY, quantity_usd, entry, margin_sats - 1) > target


@given(quantities, prices, st.integers(min_value=100_001, max_value=1_000_000))
def test_short_margin_for_liquidation_round_trips(quantity_usd, entry, target_per_100k):
    target = quantize_price(entry * target_per_100k / 100_000)
    assume(target > entry)
    margin_sats = margin_for_liquidation(Side.SELL, quantity_usd, entry, target)
    liquidation = liquidation_price(Side.SELL, quantity_usd, entry, margin_sats)
    assert liquidation is None or liquidation >= target
    if margin_sats > 1:
        below = liquidation_price(Side.SELL, quantity_usd, entry, margin_sats - 1)
        assert below is not None
        assert below < target


@given(trades(), prices, st.integers(min_value=1, max_value=10**12))
def test_cash_in_then_pnl_is_consistent(trade, price, amount_sats):
    side, quantity_usd, entry, margin_sats = trade
    limit_sats = max_cash_in_sats(side, quantity_usd, entry, margin_sats, price)
    assume(limit_sats >= 1)
    amount_sats = min(amount_sats, limit_sats)
    pnl_before = pnl_sats(side, quantity_usd, entry, price)
    from_pnl_sats = min(amount_sats, max(pnl_before, 0))

    new_entry, new_margin = cash_in_effect(
        side, quantity_usd, entry, margin_sats, price, amount_sats
    )

    assert pnl_sats(side, quantity_usd, new_entry, price) == pnl_before - from_pnl_sats
    assert new_margin == margin_sats - (amount_sats - from_pnl_sats)
    assert new_margin * new_entry * 100 >= quantity_usd * SATS_PER_BTC
    liquidation = liquidation_price(side, quantity_usd, new_entry, new_margin)
    if side is Side.BUY:
        assert liquidation < price
    else:
        assert liquidation is None or liquidation > price


@given(trades(), prices)
def test_cash_in_past_limit_rejected(trade, price):
    side, quantity_usd, entry, margin_sats = trade
    limit_sats = max_cash_in_sats(side, quantity_usd, entry, margin_sats, price)
    with pytest.raises(InvalidConfigError):
        cash_in_effect(side, quantity_usd, entry, margin_sats, price, limit_sats + 1)
