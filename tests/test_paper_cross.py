"""Paper cross margin: transfers, net position accounting to the sat, liquidation, mock routes.

The figures in the comments are worked by hand from the rules in axisor.exchange.paper_cross,
with the tier-1 fee of 0.1%.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import httpx
import pytest

from axisor.db.crypto import Credentials
from axisor.errors import (
    InsufficientFundsError,
    NotSupportedError,
    RejectedError,
    StateUnknownError,
)
from axisor.exchange.lnmarkets.client import LNMarketsClient
from axisor.exchange.lnmarkets.clock import wall_clock_ms
from axisor.exchange.lnmarkets.parse import decode_json, encode_json
from axisor.exchange.lnmarkets.signing import signed_headers
from axisor.exchange.models import CloseReason, Side
from axisor.exchange.paper import LN_MARKETS_ISOLATED, PaperFaults, PaperVenue
from axisor.exchange.paper_cross import CrossAccount, equity_sats, liquidation_level
from axisor.exchange.protocol import CrossExchange, Exchange
from axisor.mockexchange import MockExchange, run_mock_exchange

D = Decimal
START_SATS = 10_000_000
DEPOSIT_SATS = 1_000_000


@pytest.fixture
def venue() -> PaperVenue:
    venue = PaperVenue()
    venue.create_account("alice", START_SATS)
    venue.set_price(D(60_000), 1_000)
    return venue


@pytest.fixture
def alice(venue):
    return venue.account("alice")


async def funded(alice, deposit_sats: int = DEPOSIT_SATS, leverage: int = 10):
    await alice.deposit_cross(deposit_sats)
    return await alice.set_cross_leverage(D(leverage))


# Capabilities and the transfer between balances


def test_capabilities_declare_cross(alice):
    assert LN_MARKETS_ISOLATED.cross is True
    assert LN_MARKETS_ISOLATED.partial_reduce_cross is True
    assert LN_MARKETS_ISOLATED.partial_reduce_isolated is False
    assert isinstance(alice, CrossExchange)
    assert isinstance(alice, Exchange)


async def test_flat_account_position(alice):
    """An account that never used cross margin reads as flat with a zero balance."""
    position = await alice.get_cross_position()

    assert position.quantity_usd == 0
    assert position.side is None
    assert position.entry_price is None
    assert position.liquidation_price is None
    assert position.margin_sats == 0
    assert position.leverage == 1


async def test_deposit_and_withdraw(venue, alice):
    """Sats move between the free and the cross balance; the total counts both."""
    position = await alice.deposit_cross(DEPOSIT_SATS)

    assert position.margin_sats == DEPOSIT_SATS
    balance = await alice.get_balance()
    assert balance.free_sats == START_SATS - DEPOSIT_SATS
    assert balance.total_sats == START_SATS

    position = await alice.withdraw_cross(400_000)

    assert position.margin_sats == 600_000
    assert (await alice.get_balance()).free_sats == START_SATS - 600_000
    kinds = [(m.kind, m.amount_sats) for m in venue.mutations]
    assert kinds == [("cross_deposit", DEPOSIT_SATS), ("cross_withdraw", 400_000)]


async def test_deposit_beyond_free_balance(venue, alice):
    with pytest.raises(InsufficientFundsError, match="free balance"):
        await alice.deposit_cross(START_SATS + 1)

    assert (await alice.get_cross_position()).margin_sats == 0
    assert venue.mutations == []


async def test_withdraw_beyond_cross_balance(alice):
    await alice.deposit_cross(1_000)

    with pytest.raises(InsufficientFundsError, match="cross balance"):
        await alice.withdraw_cross(1_001)


# Orders: open, add, partial reduce, flip, close


async def test_open_position(venue, alice):
    """A 600 USD long at 60,000 and 10x: fee 1,000 sats, entry value 1,000,000 sats."""
    await funded(alice)

    fill = await alice.open_cross_order(Side.BUY, 600)
    position = await alice.get_cross_position()

    assert fill.price == D(60_000)
    assert fill.trading_fee_sats == 1_000
    assert fill.realized_pl_sats == 0
    assert position.quantity_usd == 600
    assert position.side is Side.BUY
    assert position.entry_price == D(60_000)
    assert position.margin_sats == 999_000
    assert position.initial_margin_sats == 100_000
    assert position.maintenance_margin_sats == 1_000
    # 600e8 / (999,000 + 1,000,000 - 1,000) = 30,030.03
    assert position.liquidation_price == D(30_030)
    assert position.trading_fees_sats == 1_000
    assert [m.kind for m in venue.mutations][-1] == "cross_order"


async def test_order_sequence_to_the_sat(venue, alice):
    """Add, partially reduce, flip and close; every realised P&L and fee is checked."""
    await funded(alice)
    await alice.open_cross_order(Side.BUY, 600)

    # Add 600 at 62,000: fee floor(967.74) = 967, entry the harmonic mean 60,983.6065...
    venue.set_price(D(62_000), 2_000)
    added = await alice.open_cross_order(Side.BUY, 600)
    position = await alice.get_cross_position()
    assert added.trading_fee_sats == 967
    assert position.quantity_usd == 1_200
    assert position.entry_price == D("60983.606557377049180")
    assert position.margin_sats == 998_033

    # Sell 400 at 61,000: P&L 1,000,000/5,673 = 176.27 -> 176, fee floor(655.74) = 655.
    venue.set_price(D(61_000), 3_000)
    reduced = await alice.open_cross_order(Side.SELL, 400)
    position = await alice.get_cross_position()
    assert reduced.realized_pl_sats == 176
    assert reduced.trading_fee_sats == 655
    assert position.quantity_usd == 800
    assert position.entry_price == D("60983.606557377049180")
    assert position.margin_sats == 998_033 + 176 - 655

    # Sell 1,000 at 59,000: closes 800 for -242,000,000/5,487 = -44,104.25 -> -44,105 and
    # opens a 200 USD short at 59,000. Fee floor(1,694.92) = 1,694 on the whole order.
    venue.set_price(D(59_000), 4_000)
    flipped = await alice.open_cross_order(Side.SELL, 1_000)
    position = await alice.get_cross_position()
    assert flipped.realized_pl_sats == -44_105
    assert flipped.trading_fee_sats == 1_694
    assert position.quantity_usd == -200
    assert position.side is Side.SELL
    assert position.entry_price == D(59_000)
    assert position.margin_sats == 951_755
    assert position.initial_margin_sats == 33_899  # ceil(338,983.05 / 10)

    # Close at 58,000: P&L 20,000,000/3,422 = 5,844.54 -> 5,844, fee floor(344.83) = 344.
    venue.set_price(D(58_000), 5_000)
    closed = await alice.close_cross_position()
    position = await alice.get_cross_position()
    assert closed.side is Side.BUY
    assert closed.quantity_usd == 200
    assert closed.realized_pl_sats == 5_844
    assert closed.trading_fee_sats == 344
    assert position.quantity_usd == 0
    assert position.entry_price is None
    assert position.liquidation_price is None
    assert position.margin_sats == 957_255
    assert position.total_pl_sats == 176 - 44_105 + 5_844
    assert position.trading_fees_sats == 1_000 + 967 + 655 + 1_694 + 344
    # The balance is the deposit plus realised P&L minus fees, to the sat.
    assert position.margin_sats == DEPOSIT_SATS + position.total_pl_sats - 4_660


async def test_filled_orders_listed(alice):
    await funded(alice)
    await alice.open_cross_order(Side.BUY, 600)
    await alice.open_cross_order(Side.SELL, 100)

    fills = await alice.get_cross_orders()

    assert [(f.side, f.quantity_usd) for f in fills] == [(Side.SELL, 100), (Side.BUY, 600)]


async def test_order_beyond_equity_rejected(venue, alice):
    """Adding exposure needs equity of at least the initial margin after the fee."""
    await funded(alice, deposit_sats=50_000)
    mutations_before = list(venue.mutations)

    with pytest.raises(InsufficientFundsError, match="initial margin of 100000 sats"):
        await alice.open_cross_order(Side.BUY, 600)

    position = await alice.get_cross_position()
    assert position.quantity_usd == 0
    assert position.margin_sats == 50_000
    assert venue.mutations == mutations_before


async def test_reduce_accepted_when_underfunded(venue, alice):
    """An order that only reduces is accepted even below the initial margin."""
    await funded(alice, deposit_sats=120_000)
    await alice.open_cross_order(Side.BUY, 600)
    venue.set_price(D(58_000), 2_000)  # equity 119,000 - 34,483 = 84,517 < 100,000

    fill = await alice.open_cross_order(Side.SELL, 300)

    assert fill.realized_pl_sats == -17_242  # floor(500,000 - 517,241.38)
    assert (await alice.get_cross_position()).quantity_usd == 300


async def test_withdraw_keeps_initial_margin(alice):
    await funded(alice)
    await alice.open_cross_order(Side.BUY, 600)

    with pytest.raises(InsufficientFundsError, match="initial margin"):
        await alice.withdraw_cross(899_001)  # leaves 99,999 of equity for 100,000 needed

    position = await alice.withdraw_cross(899_000)
    assert position.margin_sats == 100_000


async def test_leverage_change_checked(alice):
    await funded(alice, deposit_sats=200_000)
    await alice.open_cross_order(Side.BUY, 600)

    with pytest.raises(InsufficientFundsError, match="leverage 5"):
        await alice.set_cross_leverage(D(5))  # needs 200,000 with 199,000 of equity

    assert (await alice.set_cross_leverage(D(6))).initial_margin_sats == 166_667


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda a: a.open_cross_order(Side.BUY, 0), RejectedError, "outside 1..500000"),
        (lambda a: a.open_cross_order(Side.BUY, 500_001), RejectedError, "outside"),
        (lambda a: a.open_cross_order(Side.BUY, 10, D(59_000)), NotSupportedError, "market"),
        (lambda a: a.close_cross_position(), RejectedError, "no cross margin position"),
        (lambda a: a.set_cross_leverage(D(101)), RejectedError, "outside 1..100"),
        (lambda a: a.withdraw_cross(0), RejectedError, "at least 1 sat"),
    ],
)
async def test_invalid_requests_rejected(venue, alice, call, error, match):
    await funded(alice)
    mutations_before = list(venue.mutations)

    with pytest.raises(error, match=match):
        await call(alice)

    assert venue.mutations == mutations_before


async def test_fault_after_apply(venue, alice):
    """fail_after_apply_once applies a cross order and then loses the reply."""
    await funded(alice)
    venue.faults.fail_after_apply_once("open_cross_order")

    with pytest.raises(StateUnknownError):
        await alice.open_cross_order(Side.BUY, 600)

    assert (await alice.get_cross_position()).quantity_usd == 600


def test_fault_names_include_cross():
    faults = PaperFaults()
    for method in ("open_cross_order", "close_cross_position", "get_cross_position"):
        faults.fail_before_apply_once(method)
        assert faults.take_before(method) is True


# Liquidation


async def test_long_liquidated_at_maintenance(venue, alice):
    """A long with 119,000 sats after the fee: the level is 600e8 / 1,118,000 = 53,667.26."""
    await funded(alice, deposit_sats=120_000)
    await alice.open_cross_order(Side.BUY, 600)
    position = await alice.get_cross_position()
    assert position.liquidation_price == D(53_667)

    # At 53,667.5 the equity is 1,004.97 sats, above the 1,000 of maintenance margin.
    assert venue.set_price(D("53667.5"), 2_000) == []
    assert (await alice.get_cross_position()).quantity_usd == 600

    # At 53,667 it is 994.52 sats, at or below the maintenance margin.
    (event,) = venue.set_price(D(53_667), 3_000)

    assert event.reason is CloseReason.LIQUIDATED
    assert event.account_id == "alice"
    assert event.trade_id == position.id
    assert event.price == D(53_667)
    assert event.pnl_sats == -119_000
    after = await alice.get_cross_position()
    assert after.quantity_usd == 0
    assert after.margin_sats == 0
    assert after.total_pl_sats == -119_000
    assert venue.events == [event]


async def test_short_liquidated_at_maintenance(venue, alice):
    """A short with 119,000 sats: the level is 600e8 / (1,000,000 + 1,000 - 119,000) = 68,027.2."""
    await funded(alice, deposit_sats=120_000)
    await alice.open_cross_order(Side.SELL, 600)
    assert (await alice.get_cross_position()).liquidation_price == D(68_027)

    assert venue.set_price(D(68_027), 2_000) == []
    (event,) = venue.set_price(D("68027.5"), 3_000)

    assert event.reason is CloseReason.LIQUIDATED
    assert (await alice.get_cross_position()).margin_sats == 0


async def test_short_beyond_full_cover_not_liquidated(venue, alice):
    """A short whose balance exceeds entry value plus maintenance has no liquidation price."""
    await funded(alice, deposit_sats=2_000_000, leverage=1)
    await alice.open_cross_order(Side.SELL, 600)

    assert (await alice.get_cross_position()).liquidation_price is None
    assert venue.set_price(D(1_000_000), 2_000) == []


@pytest.mark.parametrize("price", [D(40_000), D("53667.5"), D(53_667), D(50_000)])
def test_liquidation_rule_matches_equity(price):
    """The level is exactly where equity with the exact P&L meets the maintenance margin."""
    account = CrossAccount("p", Decimal(10), 119_000, 600, Fraction(1_000_000))
    level = liquidation_level(account)
    exact_equity = 119_000 + Fraction(1_000_000) - Fraction(600 * 10**8) / Fraction(price)

    assert (price <= level) == (exact_equity <= 1_000)
    assert equity_sats(account, price) == 119_000 + (exact_equity - 119_000).__floor__()


async def test_flip_moves_liquidation_book(venue, alice):
    """After a flip the old long level no longer fires and the short one does."""
    await funded(alice, deposit_sats=120_000)
    await alice.open_cross_order(Side.BUY, 300)
    await alice.open_cross_order(Side.SELL, 600)
    short_level = (await alice.get_cross_position()).liquidation_price

    assert venue.set_price(D(40_000), 2_000) == []
    (event,) = venue.set_price(short_level + 1, 3_000)
    assert event.reason is CloseReason.LIQUIDATED


# Mock server routes through the LN Markets client

CREDENTIALS = Credentials(key="carol-key-01", secret="carol-secret-Xp2", passphrase="carol-pass-7")


async def signed_request(base_url: str, method: str, route: str, body: dict) -> httpx.Response:
    path = f"/v3{route}"
    content = encode_json(body)
    headers = signed_headers(CREDENTIALS, method, path, content, wall_clock_ms())
    headers["Content-Type"] = "application/json"
    async with httpx.AsyncClient(base_url=base_url) as http:
        return await http.request(method, path, content=content, headers=headers)


async def test_client_round_trip_against_mock():
    """Deposit, leverage, open, partial reduce and close through the mock's cross routes."""
    venue = PaperVenue()
    mock = MockExchange(venue)
    mock.register("carol", CREDENTIALS.key, CREDENTIALS.secret, CREDENTIALS.passphrase, START_SATS)
    mock.set_price(D(60_000))

    async with run_mock_exchange(mock) as base_url:
        deposit = await signed_request(
            base_url, "POST", "/futures/cross/deposit", {"amount": 10**6}
        )
        leverage = await signed_request(
            base_url, "PUT", "/futures/cross/leverage", {"leverage": 10}
        )
        async with LNMarketsClient(base_url, CREDENTIALS) as client:
            opened = await client.open_cross_order(Side.BUY, 600)
            after_open = await client.get_cross_position()
            reduced = await client.open_cross_order(Side.SELL, 200)
            after_reduce = await client.get_cross_position()
            closed = await client.close_cross_position()
            after_close = await client.get_cross_position()
            with pytest.raises(RejectedError):
                await client.close_cross_position()

    assert deposit.status_code == 200
    assert decode_json(deposit.content)["margin"] == 10**6
    assert decode_json(leverage.content)["leverage"] == 10
    assert opened["filled"] is True
    assert opened["price"] == 60_000
    assert opened["tradingFee"] == 1_000
    assert after_open.quantity_usd == 600
    assert after_open.entry_price == D(60_000)
    assert after_open.leverage == 10
    assert after_open.margin_sats == 999_000
    assert after_open.maintenance_margin_sats == 1_000
    assert after_open.liquidation_price == D(30_030)
    assert reduced["side"] == "sell"
    assert after_reduce.quantity_usd == 400
    assert closed["quantity"] == 400
    assert after_close.quantity_usd == 0
    assert after_close.entry_price is None
    assert after_close.liquidation_price is None
    # Fees: 1,000 + floor(333.33) + floor(666.67) at a flat price, so no P&L.
    assert after_close.margin_sats == 10**6 - 1_000 - 333 - 666
    assert venue.balance("carol").free_sats == START_SATS - 10**6
    routes = [(r.method, r.path, r.status) for r in mock.requests_for("carol")]
    assert ("POST", "/v3/futures/cross/order", 200) in routes
    assert ("POST", "/v3/futures/cross/position/close", 400) in routes


async def test_mock_withdraw_and_filled_orders():
    venue = PaperVenue()
    mock = MockExchange(venue)
    mock.register("carol", CREDENTIALS.key, CREDENTIALS.secret, CREDENTIALS.passphrase, START_SATS)
    mock.set_price(D(60_000))
    venue.deposit_cross("carol", 500_000)

    async with run_mock_exchange(mock) as base_url:
        withdrawn = await signed_request(base_url, "POST", "/futures/cross/withdraw", {"amount": 1})
        too_much = await signed_request(
            base_url, "POST", "/futures/cross/withdraw", {"amount": 10**7}
        )
        async with LNMarketsClient(base_url, CREDENTIALS) as client:
            await client.open_cross_order(Side.SELL, 60)
            filled_path = "/futures/cross/orders/filled"
            headers = signed_headers(CREDENTIALS, "GET", f"/v3{filled_path}", "", wall_clock_ms())
            async with httpx.AsyncClient(base_url=base_url) as http:
                filled = await http.get(f"/v3{filled_path}", headers=headers)

    assert decode_json(withdrawn.content)["margin"] == 499_999
    assert too_much.status_code == 400
    assert decode_json(too_much.content)["code"] == "insufficient_funds"
    (order,) = decode_json(filled.content)["data"]
    assert order["side"] == "sell"
    assert order["quantity"] == 60
