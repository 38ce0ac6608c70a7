"""Paper venue: LN Markets isolated rules, fills on price updates, faults and the mutation log."""

from __future__ import annotations

import random
import time
from decimal import Decimal

import pytest

from axisor.errors import (
    InsufficientFundsError,
    InvalidConfigError,
    NotSupportedError,
    RejectedError,
    RetryLaterError,
    StateUnknownError,
    TradeNotFoundError,
)
from axisor.exchange.math import pnl_sats
from axisor.exchange.models import CloseReason, OpenTradeRequest, Side, TradeStatus
from axisor.exchange.paper import LN_MARKETS_ISOLATED, PaperVenue
from axisor.exchange.protocol import Exchange

D = Decimal
START_SATS = 1_000_000


@pytest.fixture
def venue() -> PaperVenue:
    venue = PaperVenue()
    venue.set_price(D(60_000), 1_000)
    venue.create_account("alice", START_SATS)
    return venue


@pytest.fixture
def alice(venue):
    return venue.account("alice")


def long_60(**levels) -> OpenTradeRequest:
    """Return a 60 USD long at 10x, which at 60,000 USD has 10,000 sats of margin."""
    return OpenTradeRequest(side=Side.BUY, leverage=D(10), quantity_usd=60, **levels)


def short_60(**levels) -> OpenTradeRequest:
    """Return a 60 USD short at 10x, which at 60,000 USD has 10,000 sats of margin."""
    return OpenTradeRequest(side=Side.SELL, leverage=D(10), quantity_usd=60, **levels)


async def snapshot(venue, account):
    """Return the account state that a rejected request must leave unchanged."""
    return (
        await account.get_balance(),
        await account.get_running_trades(),
        await account.get_closed_trades(),
        len(venue.mutations),
        len(venue.events),
    )


# Protocol and opening.


async def test_account_implements_exchange(alice):
    assert isinstance(alice, Exchange)
    assert alice.capabilities == LN_MARKETS_ISOLATED


async def test_ticker_reports_tick_price(venue, alice):
    venue.set_price(D("60123.3"), 2_000)
    ticker = await alice.get_ticker()
    assert ticker.last_price == D("60123.5")
    assert ticker.time_ms == 2_000


async def test_open_long_fee_accounting(alice):
    trade = await alice.open_trade(long_60())
    balance = await alice.get_balance()
    assert trade.margin_sats == 10_000
    assert trade.leverage == D(10)
    assert trade.liquidation_price == D(54_545)
    assert trade.opening_fee_sats == 100
    assert trade.maintenance_margin_sats == 110
    assert trade.status is TradeStatus.RUNNING
    assert balance.free_sats == START_SATS - 10_210
    assert balance.total_sats == START_SATS - 100


async def test_close_long_fee_accounting(venue, alice):
    trade = await alice.open_trade(long_60())
    venue.set_price(D(66_000), 2_000)
    closed = await alice.close_trade(trade.id)
    balance = await alice.get_balance()
    # P&L is 6e9 * (1/60,000 - 1/66,000) = 9,090.9 and the closing fee 6e6 / 66,000 = 90.9.
    assert closed.pnl_sats == 9_090
    assert closed.closing_fee_sats == 90
    assert closed.exit_price == D(66_000)
    assert closed.close_reason is CloseReason.CLOSED
    assert balance.free_sats == START_SATS + 9_090 - 100 - 90
    assert balance.total_sats == balance.free_sats
    assert await alice.get_running_trades() == []


async def test_close_short_at_loss(venue, alice):
    trade = await alice.open_trade(short_60())
    venue.set_price(D(62_000), 2_000)
    closed = await alice.close_trade(trade.id)
    # P&L is 6e9 * (1/62,000 - 1/60,000) = -3,225.8 and the closing fee 6e6 / 62,000 = 96.8.
    assert closed.pnl_sats == -3_226
    assert closed.closing_fee_sats == 96
    assert (await alice.get_balance()).free_sats == START_SATS - 3_226 - 100 - 96


async def test_fee_tier_lowers_fees():
    venue = PaperVenue(fee_tier=4)
    venue.set_price(D(60_000), 1_000)
    venue.create_account("bob", START_SATS)
    bob = venue.account("bob")
    trade = await bob.open_trade(long_60())
    assert trade.opening_fee_sats == 60
    assert trade.maintenance_margin_sats == 150
    venue.set_price(D(60_000), 2_000)
    closed = await bob.close_trade(trade.id)
    assert closed.closing_fee_sats == 60
    assert (await bob.get_balance()).free_sats == START_SATS - 120


async def test_open_by_margin(alice):
    request = OpenTradeRequest(side=Side.BUY, leverage=D(10), margin_sats=10_500)
    trade = await alice.open_trade(request)
    # 10,500 sats at 10x buy 63 USD, whose margin is 10,500 sats.
    assert trade.quantity_usd == 63
    assert trade.margin_sats == 10_500


async def test_open_with_levels(alice):
    trade = await alice.open_trade(long_60(stoploss_price=D("58000.2"), takeprofit_price=D(65_000)))
    assert trade.stoploss_price == D(58_000)
    assert trade.takeprofit_price == D(65_000)


async def test_no_price_yet_retries():
    venue = PaperVenue()
    venue.create_account("carol", START_SATS)
    with pytest.raises(RetryLaterError):
        await venue.account("carol").open_trade(long_60())


async def test_clock_sets_timestamps():
    venue = PaperVenue(clock_ms=lambda: 42)
    venue.set_price(D(60_000), 1_000)
    venue.create_account("dave", START_SATS)
    trade = await venue.account("dave").open_trade(long_60())
    assert trade.created_ms == 42
    assert venue.mutations[-1].time_ms == 42


async def test_closed_trades_newest_first(venue, alice):
    first = await alice.open_trade(long_60())
    second = await alice.open_trade(short_60())
    await alice.close_trade(first.id)
    await alice.close_trade(second.id)
    closed = await alice.get_closed_trades()
    assert [trade.id for trade in closed] == [second.id, first.id]
    assert [trade.id for trade in await alice.get_closed_trades(limit=1)] == [second.id]


def test_unknown_account_rejected(venue):
    with pytest.raises(InvalidConfigError) as raised:
        venue.account("nobody")
    assert raised.value.field == "account_id"


def test_duplicate_account_rejected(venue):
    with pytest.raises(InvalidConfigError):
        venue.create_account("alice", 1)


async def test_deposit_adds_free_balance(venue, alice):
    venue.deposit("alice", 5_000)
    assert (await alice.get_balance()).free_sats == START_SATS + 5_000


# Liquidation.


async def test_long_liquidated_at_level(venue, alice):
    trade = await alice.open_trade(long_60())
    assert venue.set_price(D("54545.5"), 2_000) == []

    events = venue.set_price(D(54_545), 3_000)

    assert [(e.trade_id, e.reason) for e in events] == [(trade.id, CloseReason.LIQUIDATED)]
    assert events[0].pnl_sats == -10_000
    assert events[0].price == D(54_545)
    assert events[0].account_id == "alice"
    # The reserve left (110 sats) pays the closing fee at 54,545 (110 sats).
    assert (await alice.get_balance()).free_sats == START_SATS - 10_210


async def test_long_liquidation_gap_loses_margin_only(venue, alice):
    trade = await alice.open_trade(long_60())
    events = venue.set_price(D(40_000), 2_000)
    closed = (await alice.get_closed_trades())[0]
    assert [e.reason for e in events] == [CloseReason.LIQUIDATED]
    assert closed.id == trade.id
    assert closed.pnl_sats == -10_000
    assert closed.exit_price == D(54_545)
    assert closed.close_reason is CloseReason.LIQUIDATED
    assert (await alice.get_balance()).free_sats == START_SATS - 10_210


async def test_short_liquidated_at_level(venue, alice):
    trade = await alice.open_trade(short_60())
    assert trade.liquidation_price == D(66_667)
    assert venue.set_price(D("66666.5"), 2_000) == []

    events = venue.set_price(D(66_667), 3_000)

    assert [(e.trade_id, e.reason) for e in events] == [(trade.id, CloseReason.LIQUIDATED)]
    assert events[0].pnl_sats == -10_000


async def test_short_liquidation_gap_loses_margin_only(venue, alice):
    await alice.open_trade(short_60())
    events = venue.set_price(D(90_000), 2_000)
    assert [e.reason for e in events] == [CloseReason.LIQUIDATED]
    assert events[0].price == D(66_667)
    # The reserve is the opening fee (100) plus the closing fee at 66,667 (89). The 89 sats left
    # after opening pay that closing fee.
    assert (await alice.get_balance()).free_sats == START_SATS - 10_189


async def test_short_at_1x_never_liquidated(venue, alice):
    trade = await alice.open_trade(OpenTradeRequest(side=Side.SELL, leverage=D(1), quantity_usd=60))
    assert trade.liquidation_price is None
    assert venue.set_price(D(10_000_000), 2_000) == []
    assert (await alice.get_running_trades())[0].id == trade.id


async def test_liquidation_before_stoploss_in_gap(venue, alice):
    await alice.open_trade(long_60(stoploss_price=D(58_000)))
    events = venue.set_price(D(50_000), 2_000)
    assert [e.reason for e in events] == [CloseReason.LIQUIDATED]


# Margin changes.


async def test_add_margin_moves_liquidation(alice):
    trade = await alice.open_trade(long_60())
    updated = await alice.add_margin(trade.id, 5_000)
    # 1 / (1/60,000 + 15,000/6e9) = 52,173.9.
    assert updated.margin_sats == 15_000
    assert updated.liquidation_price == D(52_174)
    assert updated.leverage == D("6.666667")
    assert updated.entry_price == trade.entry_price
    assert (await alice.get_balance()).free_sats == START_SATS - 15_210


async def test_add_margin_to_short_removes_liquidation(alice):
    trade = await alice.open_trade(short_60())
    updated = await alice.add_margin(trade.id, 90_000)
    assert updated.margin_sats == 100_000
    assert updated.liquidation_price is None


async def test_add_margin_past_leverage_1_rejected(venue, alice):
    trade = await alice.open_trade(long_60())
    before = await snapshot(venue, alice)
    with pytest.raises(RejectedError) as raised:
        await alice.add_margin(trade.id, 90_001)
    assert "amount_sats" in str(raised.value)
    assert "90000" in str(raised.value)
    assert await snapshot(venue, alice) == before


async def test_add_margin_beyond_balance_rejected(venue):
    venue.create_account("erin", 10_300)
    erin = venue.account("erin")
    trade = await erin.open_trade(long_60())
    before = await snapshot(venue, erin)
    with pytest.raises(InsufficientFundsError) as raised:
        await erin.add_margin(trade.id, 91)
    assert "90 sats" in str(raised.value)
    assert await snapshot(venue, erin) == before


@pytest.mark.parametrize("amount_sats", [0, -5, True])
async def test_add_margin_invalid_amount_rejected(venue, alice, amount_sats):
    trade = await alice.open_trade(long_60())
    before = await snapshot(venue, alice)
    with pytest.raises(RejectedError):
        await alice.add_margin(trade.id, amount_sats)
    assert await snapshot(venue, alice) == before


async def test_cash_in_from_pnl(venue, alice):
    trade = await alice.open_trade(long_60())
    venue.set_price(D(66_000), 2_000)
    free_before = (await alice.get_balance()).free_sats

    updated = await alice.cash_in(trade.id, 500)

    assert (await alice.get_balance()).free_sats == free_before + 500
    assert updated.margin_sats == 10_000
    assert pnl_sats(Side.BUY, 60, updated.entry_price, D(66_000)) == 9_090 - 500
    assert updated.liquidation_price > trade.liquidation_price


async def test_cash_in_from_margin(venue, alice):
    trade = await alice.open_trade(short_60())
    updated = await alice.cash_in(trade.id, 4_000)
    assert updated.margin_sats == 6_000
    assert updated.entry_price == D(60_000)
    assert updated.leverage > trade.leverage
    assert updated.liquidation_price < trade.liquidation_price


async def test_cash_in_too_much_rejected(venue, alice):
    trade = await alice.open_trade(long_60())
    before = await snapshot(venue, alice)
    with pytest.raises(RejectedError) as raised:
        await alice.cash_in(trade.id, 9_001)
    assert "amount_sats" in str(raised.value)
    assert await snapshot(venue, alice) == before


# Stop loss and take profit.


async def test_long_stoploss_fills_at_tick(venue, alice):
    trade = await alice.open_trade(long_60())
    await alice.set_stoploss(trade.id, D(59_000))
    events = venue.set_price(D("59000.2"), 2_000)
    assert [(e.trade_id, e.reason) for e in events] == [(trade.id, CloseReason.STOPLOSS)]
    assert events[0].price == D(59_000)
    # 6e9 * (1/60,000 - 1/59,000) = -1,694.9.
    assert events[0].pnl_sats == -1_695


async def test_long_stoploss_gap_fills_at_price(venue, alice):
    trade = await alice.open_trade(long_60())
    await alice.set_stoploss(trade.id, D(59_000))
    events = venue.set_price(D(57_000), 2_000)
    assert events[0].reason is CloseReason.STOPLOSS
    assert events[0].price == D(57_000)


async def test_short_stoploss_fills(venue, alice):
    trade = await alice.open_trade(short_60())
    await alice.set_stoploss(trade.id, D(61_000))
    assert venue.set_price(D("60999.5"), 2_000) == []
    events = venue.set_price(D(61_000), 3_000)
    assert [(e.trade_id, e.reason) for e in events] == [(trade.id, CloseReason.STOPLOSS)]


async def test_long_takeprofit_fills(venue, alice):
    trade = await alice.open_trade(long_60())
    await alice.set_takeprofit(trade.id, D(65_000))
    assert venue.set_price(D("64999.5"), 2_000) == []
    events = venue.set_price(D("65000.5"), 3_000)
    assert [(e.trade_id, e.reason) for e in events] == [(trade.id, CloseReason.TAKEPROFIT)]
    assert events[0].price == D("65000.5")


async def test_short_takeprofit_fills(venue, alice):
    trade = await alice.open_trade(short_60())
    await alice.set_takeprofit(trade.id, D(55_000))
    events = venue.set_price(D(55_000), 2_000)
    assert [(e.trade_id, e.reason) for e in events] == [(trade.id, CloseReason.TAKEPROFIT)]
    assert events[0].pnl_sats > 0


async def test_cleared_levels_do_not_fill(venue, alice):
    trade = await alice.open_trade(long_60())
    await alice.set_stoploss(trade.id, D(59_000))
    await alice.set_takeprofit(trade.id, D(61_000))
    await alice.set_stoploss(trade.id, None)
    cleared = await alice.set_takeprofit(trade.id, None)
    assert cleared.stoploss_price is None
    assert cleared.takeprofit_price is None
    assert venue.set_price(D(58_000), 2_000) == []
    assert venue.set_price(D(62_000), 3_000) == []


async def test_moved_stoploss_uses_new_level(venue, alice):
    trade = await alice.open_trade(long_60())
    await alice.set_stoploss(trade.id, D(59_000))
    await alice.set_stoploss(trade.id, D(58_000))
    assert venue.set_price(D(58_500), 2_000) == []
    assert [e.reason for e in venue.set_price(D(58_000), 3_000)] == [CloseReason.STOPLOSS]


async def test_long_trailing_stop_follows(venue, alice):
    trade = await alice.open_trade(long_60())
    started = await alice.set_stoploss(trade.id, None, trailing_usd=D(1_000))
    assert started.stoploss_price == D(59_000)
    assert started.trailing_stoploss_usd == D(1_000)

    venue.set_price(D(62_000), 2_000)
    assert (await alice.get_running_trades())[0].stoploss_price == D(61_000)
    venue.set_price(D(61_500), 3_000)
    assert (await alice.get_running_trades())[0].stoploss_price == D(61_000)

    events = venue.set_price(D(61_000), 4_000)
    assert [(e.trade_id, e.reason) for e in events] == [(trade.id, CloseReason.STOPLOSS)]
    assert events[0].price == D(61_000)


async def test_short_trailing_stop_follows(venue, alice):
    trade = await alice.open_trade(short_60())
    await alice.set_stoploss(trade.id, D(62_000), trailing_usd=D(500))
    venue.set_price(D(61_000), 2_000)
    assert (await alice.get_running_trades())[0].stoploss_price == D(62_000)
    venue.set_price(D(58_000), 3_000)
    assert (await alice.get_running_trades())[0].stoploss_price == D(58_500)
    events = venue.set_price(D(59_000), 4_000)
    assert [e.reason for e in events] == [CloseReason.STOPLOSS]
    assert events[0].price == D(59_000)


async def test_trailing_stop_cleared_by_fixed_stop(venue, alice):
    trade = await alice.open_trade(long_60())
    await alice.set_stoploss(trade.id, None, trailing_usd=D(1_000))
    fixed = await alice.set_stoploss(trade.id, D(58_000))
    assert fixed.trailing_stoploss_usd is None
    venue.set_price(D(70_000), 2_000)
    assert (await alice.get_running_trades())[0].stoploss_price == D(58_000)


@pytest.mark.parametrize(
    ("request_", "stoploss", "takeprofit"),
    [
        (long_60(), D(60_000), None),
        (long_60(), D(61_000), None),
        (long_60(), None, D(59_000)),
        (short_60(), D(59_000), None),
        (short_60(), None, D(60_000)),
    ],
)
async def test_crossed_level_rejected(venue, alice, request_, stoploss, takeprofit):
    trade = await alice.open_trade(request_)
    before = await snapshot(venue, alice)
    with pytest.raises(RejectedError):
        if stoploss is not None:
            await alice.set_stoploss(trade.id, stoploss)
        else:
            await alice.set_takeprofit(trade.id, takeprofit)
    assert await snapshot(venue, alice) == before


async def test_trailing_distance_below_tick_rejected(venue, alice):
    trade = await alice.open_trade(long_60())
    before = await snapshot(venue, alice)
    with pytest.raises(RejectedError):
        await alice.set_stoploss(trade.id, None, trailing_usd=D("0.2"))
    assert await snapshot(venue, alice) == before


# Rejected requests leave state unchanged.


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (OpenTradeRequest(side=Side.BUY, leverage=D(101), quantity_usd=60), RejectedError),
        (OpenTradeRequest(side=Side.BUY, leverage=D("0.5"), quantity_usd=60), RejectedError),
        (OpenTradeRequest(side=Side.BUY, leverage=D(10), quantity_usd=0), RejectedError),
        (OpenTradeRequest(side=Side.BUY, leverage=D(10), quantity_usd=500_001), RejectedError),
        (OpenTradeRequest(side=Side.BUY, leverage=D(10)), RejectedError),
        (
            OpenTradeRequest(side=Side.BUY, leverage=D(10), quantity_usd=60, margin_sats=10_000),
            RejectedError,
        ),
        (OpenTradeRequest(side=Side.BUY, leverage=D(10), margin_sats=1), RejectedError),
        (OpenTradeRequest(side=Side.BUY, leverage=D(1), quantity_usd=600), InsufficientFundsError),
        (long_60(stoploss_price=D(60_500)), RejectedError),
        (short_60(takeprofit_price=D(61_000)), RejectedError),
        (
            OpenTradeRequest(side=Side.BUY, leverage=D(10), quantity_usd=60, price=D(59_000)),
            NotSupportedError,
        ),
    ],
)
async def test_open_rejected_unchanged(venue, alice, request_, error):
    before = await snapshot(venue, alice)
    with pytest.raises(error):
        await alice.open_trade(request_)
    assert await snapshot(venue, alice) == before


@pytest.mark.parametrize(
    "action",
    [
        lambda account, trade_id: account.close_trade(trade_id),
        lambda account, trade_id: account.add_margin(trade_id, 100),
        lambda account, trade_id: account.cash_in(trade_id, 100),
        lambda account, trade_id: account.set_stoploss(trade_id, D(50_000)),
        lambda account, trade_id: account.set_takeprofit(trade_id, D(70_000)),
    ],
)
async def test_not_running_trade_not_found(venue, alice, action):
    closed = await alice.open_trade(long_60())
    await alice.close_trade(closed.id)
    venue.create_account("frank", START_SATS)
    other = await venue.account("frank").open_trade(long_60())
    before = await snapshot(venue, alice)

    for trade_id in ("no-such-trade", closed.id, other.id):
        with pytest.raises(TradeNotFoundError):
            await action(alice, trade_id)

    assert await snapshot(venue, alice) == before


async def test_open_without_funds_rejected(venue):
    venue.create_account("gina", 10_209)
    gina = venue.account("gina")
    with pytest.raises(InsufficientFundsError) as raised:
        await gina.open_trade(long_60())
    assert "10210 sats" in str(raised.value)
    assert (await gina.get_balance()).free_sats == 10_209


# Faults.


async def test_fail_after_apply_once(venue, alice):
    trade = await alice.open_trade(long_60())
    venue.faults.fail_after_apply_once("add_margin")

    with pytest.raises(StateUnknownError):
        await alice.add_margin(trade.id, 1_000)

    assert (await alice.get_running_trades())[0].margin_sats == 11_000
    assert venue.mutations[-1].kind == "add_margin"
    updated = await alice.add_margin(trade.id, 1_000)
    assert updated.margin_sats == 12_000


async def test_fail_before_apply_once(venue, alice):
    trade = await alice.open_trade(long_60())
    venue.faults.fail_before_apply_once("close_trade")

    with pytest.raises(RetryLaterError):
        await alice.close_trade(trade.id)

    assert (await alice.get_running_trades())[0].id == trade.id
    closed = await alice.close_trade(trade.id)
    assert closed.status is TradeStatus.CLOSED


async def test_fail_after_apply_every_time(venue, alice):
    venue.faults.fail_after_apply.add("open_trade")
    for _ in range(2):
        with pytest.raises(StateUnknownError):
            await alice.open_trade(long_60())
    venue.faults.fail_after_apply.clear()
    assert len(await alice.get_running_trades()) == 2


async def test_fail_before_apply_every_time(venue, alice):
    venue.faults.fail_before_apply.add("get_balance")
    for _ in range(2):
        with pytest.raises(RetryLaterError):
            await alice.get_balance()


async def test_fault_after_rejection_not_used(venue, alice):
    venue.faults.fail_after_apply_once("add_margin")
    with pytest.raises(TradeNotFoundError):
        await alice.add_margin("no-such-trade", 1)
    trade = await alice.open_trade(long_60())
    with pytest.raises(StateUnknownError):
        await alice.add_margin(trade.id, 1)


def test_fault_unknown_method_rejected(venue):
    with pytest.raises(InvalidConfigError):
        venue.faults.fail_after_apply_once("add_margn")


async def test_latency_delays_calls(venue, alice):
    venue.faults.latency_s = 0.05
    started = time.monotonic()
    await alice.get_ticker()
    assert time.monotonic() - started >= 0.05


# Mutation log.


async def test_mutation_log(venue, alice):
    trade = await alice.open_trade(long_60())
    await alice.add_margin(trade.id, 2_000)
    await alice.set_stoploss(trade.id, D(55_000))
    await alice.set_takeprofit(trade.id, D(70_000))
    venue.set_price(D(66_000), 2_000)
    await alice.cash_in(trade.id, 300)
    closed = await alice.close_trade(trade.id)

    mutations = venue.mutations
    assert [m.kind for m in mutations] == [
        "open",
        "add_margin",
        "stoploss",
        "takeprofit",
        "cash_in",
        "close",
    ]
    assert {m.trade_id for m in mutations} == {trade.id}
    assert {m.account_id for m in mutations} == {"alice"}
    assert [m.amount_sats for m in mutations[:5]] == [10_000, 2_000, 0, 0, 300]
    assert mutations[2].details["price"] == D(55_000)
    assert mutations[3].details["price"] == D(70_000)
    assert mutations[0].time_ms == 1_000
    assert mutations[5].time_ms == 2_000
    # The close credits margin + P&L + reserve left - closing fee.
    assert mutations[5].amount_sats == 12_000 + closed.pnl_sats + 110 - closed.closing_fee_sats


async def test_events_recorded(venue, alice):
    await alice.open_trade(long_60())
    events = venue.set_price(D(50_000), 2_000)
    assert venue.events == events


# Many trades against a brute-force reference.


def expected_fill(trade, price):
    """Return the reason a brute-force scan fills ``trade`` at ``price``, or None."""
    falls = trade.side is Side.BUY
    liquidation = trade.liquidation_price
    if liquidation is not None and (price <= liquidation if falls else price >= liquidation):
        return CloseReason.LIQUIDATED, liquidation
    stoploss = trade.stoploss_price
    if stoploss is not None and (price <= stoploss if falls else price >= stoploss):
        return CloseReason.STOPLOSS, price
    takeprofit = trade.takeprofit_price
    if takeprofit is not None and (price >= takeprofit if falls else price <= takeprofit):
        return CloseReason.TAKEPROFIT, price
    return None


def open_random_trade(venue, rng, account_id, price):
    side = rng.choice(list(Side))
    sign = -1 if side is Side.BUY else 1
    request = OpenTradeRequest(
        side=side,
        leverage=D(rng.randint(100, 10_000)) / 100,
        quantity_usd=rng.randint(1, 5_000),
    )
    trade = venue.open_trade(account_id, request)
    roll = rng.random()
    distance = D(rng.randint(1, 4_000))
    if roll < 0.3:
        venue.set_stoploss(account_id, trade.id, price + sign * distance, None)
    elif roll < 0.4:
        venue.set_stoploss(account_id, trade.id, None, distance)
    if rng.random() < 0.4:
        venue.set_takeprofit(account_id, trade.id, price - sign * D(rng.randint(1, 4_000)))


def test_many_trades_match_brute_force():
    rng = random.Random(20240601)
    venue = PaperVenue()
    price = D(60_000)
    venue.set_price(price, 0)
    account_ids = [f"account-{n}" for n in range(20)]
    for account_id in account_ids:
        venue.create_account(account_id, 10**15)
    for n in range(10_000):
        open_random_trade(venue, rng, account_ids[n % 20], price)

    filled_total = 0
    for step in range(1, 121):
        jump_halves = rng.randint(-2_400, 2_400) if step % 15 else rng.randint(-12_000, 12_000)
        price = max(price + D(jump_halves) / 2, D(1_000))
        running = [t for a in account_ids for t in venue.running_trades(a)]
        expected = {t.id: fill for t in running if (fill := expected_fill(t, price))}

        events = venue.set_price(price, step)

        assert {e.trade_id: (e.reason, e.price) for e in events} == expected
        assert len(events) == len(expected)
        filled_total += len(events)
    still_running = sum(len(venue.running_trades(a)) for a in account_ids)
    assert filled_total + still_running == 10_000
    assert filled_total > 1_000
