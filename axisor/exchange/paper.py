"""A paper venue that follows LN Markets v3 rules for isolated trades, for tests and simulations.

Cross margin follows the rules of ``axisor.exchange.paper_cross``.

``PaperVenue`` keeps the current price and many accounts. ``venue.account(account_id)`` returns a
``PaperAccount``, which implements the ``Exchange`` protocol for one account.

Rules, with the math of ``axisor.exchange.math``:

- Only market orders fill, at the current price. Limit orders raise ``NotSupportedError``.
- Opening debits the margin plus the maintenance margin reserve from the free balance and charges
  the opening fee (at the venue's fee tier) from the reserve. The rest of the reserve stays on
  the trade as ``maintenance_margin_sats`` and does not change when margin is added or cashed in.
- Closing credits P&L + margin + maintenance margin - closing fee. A trade never loses more than
  its margin, and the credit is never negative.
- A liquidation forfeits the margin exactly, whatever price the update gapped to, and charges
  the closing fee at the liquidation price.
- When one price update crosses several levels of a trade, the liquidation fills first, then the
  stop loss, then the take profit. Stops and take profits fill at the updated tick price.
  Cross margin liquidations come right after the isolated ones.

Every rejection raises before any state changes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from fractions import Fraction
from math import floor
from typing import TypeVar

from axisor.errors import (
    InsufficientFundsError,
    InvalidConfigError,
    NotSupportedError,
    RejectedError,
    RetryLaterError,
    StateUnknownError,
    TradeNotFoundError,
)
from axisor.exchange.math import (
    FEE_RATES,
    SATS_PER_BTC,
    cash_in_effect,
    leverage_for,
    liquidation_price,
    maintenance_margin_sats,
    margin_for,
    max_margin_sats,
    pnl_sats,
    quantize_price,
    trading_fee_sats,
)
from axisor.exchange.models import (
    Balance,
    Capabilities,
    CloseReason,
    CrossOrder,
    CrossPosition,
    Mutation,
    OpenTradeRequest,
    Side,
    Ticker,
    Trade,
    TradeEvent,
    TradeStatus,
)
from axisor.exchange.paper_books import TriggerBook
from axisor.exchange.paper_cross import CrossMargins
from axisor.exchange.paper_faults import PaperFaults

__all__ = ["LN_MARKETS_ISOLATED", "PaperAccount", "PaperFaults", "PaperVenue"]

LN_MARKETS_ISOLATED = Capabilities(
    name="paper-lnmarkets",
    isolated=True,
    cross=True,
    partial_reduce_isolated=False,
    partial_reduce_cross=True,
    exchange_stoploss=True,
    exchange_takeprofit=True,
    trailing_stoploss=True,
    price_tick_usd=Decimal("0.5"),
    min_leverage=1,
    max_leverage=100,
    max_quantity_usd=500_000,
)

# Levels kept in sorted books. Trailing stop losses are kept in PaperVenue._trailing instead.
_INDEXED_REASONS = (CloseReason.LIQUIDATED, CloseReason.STOPLOSS, CloseReason.TAKEPROFIT)

_Result = TypeVar("_Result")


@dataclass
class _AccountState:
    free_sats: int
    running: dict[str, Trade] = field(default_factory=dict)
    closed: list[Trade] = field(default_factory=list)


@dataclass
class _TrailingStop:
    distance_usd: Decimal
    best_price: Decimal  # highest price since set for a long, lowest for a short


class PaperVenue:
    """An in-memory LN Markets venue: accounts, the current price and every fill.

    ``mutations`` lists each change applied on request and ``events`` each fill made by
    ``set_price``. ``clock_ms`` returns epoch milliseconds for timestamps. Without it the venue
    uses the ``time_ms`` of the last price update.

    The synchronous methods that take an ``account_id`` do the work, without faults, for
    simulations that drive many accounts. ``PaperAccount`` runs them under ``faults``.
    """

    def __init__(self, *, fee_tier: int = 1, clock_ms: Callable[[], int] | None = None) -> None:
        if isinstance(fee_tier, bool) or fee_tier not in FEE_RATES:
            raise InvalidConfigError("fee_tier", f"{fee_tier!r} is not a tier. Pass 1, 2, 3 or 4")
        self.capabilities = LN_MARKETS_ISOLATED
        self.faults = PaperFaults()
        self.mutations: list[Mutation] = []
        self.events: list[TradeEvent] = []
        self._fee_tier = fee_tier
        self._clock_ms = clock_ms
        self._price: Decimal | None = None
        self._time_ms = 0
        self._accounts: dict[str, _AccountState] = {}
        self._owners: dict[str, str] = {}
        self._trailing: dict[str, _TrailingStop] = {}
        self._books = {
            (reason, side): TriggerBook(
                fires_on_rise=(side is Side.SELL) != (reason is CloseReason.TAKEPROFIT)
            )
            for reason in _INDEXED_REASONS
            for side in Side
        }
        self._cross = CrossMargins(fee_tier, self._now_ms, self.capabilities.max_quantity_usd)

    @property
    def price(self) -> Decimal | None:
        """Last price in USD per BTC on the 0.5 USD tick, or None before the first update."""
        return self._price

    def account(self, account_id: str) -> PaperAccount:
        """Return the Exchange of ``account_id``."""
        self._account_state(account_id)
        return PaperAccount(self, account_id)

    def create_account(self, account_id: str, balance_sats: int) -> None:
        """Create ``account_id`` with a free balance of ``balance_sats``."""
        if account_id in self._accounts:
            raise InvalidConfigError("account_id", f"account {account_id!r} already exists")
        self._accounts[account_id] = _AccountState(_sats(balance_sats, "balance_sats", 0))

    def deposit(self, account_id: str, amount_sats: int) -> None:
        """Add ``amount_sats`` to the free balance of ``account_id``."""
        self._account_state(account_id).free_sats += _sats(amount_sats, "amount_sats", 1)

    def set_price(self, price: Decimal, time_ms: int) -> list[TradeEvent]:
        """Move the price to the nearest tick and fill every level it crossed.

        Returns the fills of this update in order: liquidations, stop losses (trailing ones
        last), then take profits. Finding them costs O(log n + k) for n trades and k fills,
        plus one step per trailing stop, and each fill then costs O(log n) to unindex.
        """
        tick_price = quantize_price(price, self.capabilities.price_tick_usd)
        self._price = tick_price
        self._time_ms = _sats(time_ms, "time_ms", 0)

        events = self._fill_crossed(CloseReason.LIQUIDATED, tick_price)
        events += self._cross.liquidate_crossed(tick_price)
        events += self._fill_crossed(CloseReason.STOPLOSS, tick_price)
        events += self._fill_or_follow_trailing(tick_price)
        events += self._fill_crossed(CloseReason.TAKEPROFIT, tick_price)
        self.events.extend(events)
        return events

    async def run_with_faults(self, method: str, operation: Callable[[], _Result]) -> _Result:
        """Run one account operation under the injected faults."""
        if self.faults.latency_s > 0:
            await asyncio.sleep(self.faults.latency_s)
        if self.faults.take_before(method):
            raise RetryLaterError(f"injected fault: {method} was not applied. Send it again")
        result = operation()
        if self.faults.take_after(method):
            raise StateUnknownError(
                f"injected fault: {method} was applied but the reply was lost. Re-read the account"
            )
        return result

    # Reads

    def ticker(self) -> Ticker:
        price = self._require_price()
        return Ticker(price, price, price, price, self._now_ms())

    def balance(self, account_id: str) -> Balance:
        """Return the free balance and the total.

        The total adds the margin and reserve of running trades and the cross margin balance.
        """
        account = self._account_state(account_id)
        locked_sats = sum(
            t.margin_sats + t.maintenance_margin_sats for t in account.running.values()
        )
        locked_sats += self._cross.position(account_id).margin_sats
        return Balance(free_sats=account.free_sats, total_sats=account.free_sats + locked_sats)

    def running_trades(self, account_id: str) -> list[Trade]:
        return list(self._account_state(account_id).running.values())

    def closed_trades(self, account_id: str, limit: int) -> list[Trade]:
        """Return up to ``limit`` closed trades, the most recently closed first."""
        closed = self._account_state(account_id).closed
        return closed[::-1][: _sats(limit, "limit", 0)]

    # Changes requested by an account

    def open_trade(self, account_id: str, request: OpenTradeRequest) -> Trade:
        account = self._account_state(account_id)
        price = self._require_price()
        with _rejecting_invalid_input():
            quantity_usd, margin_sats = self._size_order(request, price)
            trade = self._new_trade(request.side, quantity_usd, margin_sats, price)
            trade = _with_order_levels(trade, request, price)

        reserve_sats = trade.maintenance_margin_sats + trade.opening_fee_sats
        _require_free_sats(account, margin_sats + reserve_sats, "opening the trade")
        account.free_sats -= margin_sats + reserve_sats
        self._owners[trade.id] = account_id
        self._store(trade)
        details = {"quantity_usd": quantity_usd, "entry_price": price, "reserve_sats": reserve_sats}
        self._record(account_id, trade.id, "open", margin_sats, details)
        return trade

    def close_trade(self, account_id: str, trade_id: str) -> Trade:
        self._running_trade(account_id, trade_id)
        price = self._require_price()
        closed, credit_sats = self._close(trade_id, CloseReason.CLOSED, price)
        self._record(account_id, trade_id, "close", credit_sats, {"exit_price": price})
        return closed

    def add_margin(self, account_id: str, trade_id: str, amount_sats: int) -> Trade:
        trade = self._running_trade(account_id, trade_id)
        account = self._account_state(account_id)
        amount = _requested_amount(amount_sats)
        _require_free_sats(account, amount, "adding margin")
        limit_sats = max(
            max_margin_sats(trade.quantity_usd, trade.entry_price) - trade.margin_sats, 0
        )
        if amount > limit_sats:
            raise RejectedError(
                f"amount_sats {amount} would bring trade {trade_id} below leverage 1. "
                f"Add at most {limit_sats} sats"
            )

        account.free_sats -= amount
        updated = _with_position(trade, trade.entry_price, trade.margin_sats + amount)
        self._replace(trade, updated)
        self._record(account_id, trade_id, "add_margin", amount, {})
        return updated

    def cash_in(self, account_id: str, trade_id: str, amount_sats: int) -> Trade:
        trade = self._running_trade(account_id, trade_id)
        amount = _requested_amount(amount_sats)
        price = self._require_price()
        with _rejecting_invalid_input():
            new_entry, new_margin = cash_in_effect(
                trade.side, trade.quantity_usd, trade.entry_price, trade.margin_sats, price, amount
            )

        self._account_state(account_id).free_sats += amount
        updated = _with_position(trade, new_entry, new_margin)
        self._replace(trade, updated)
        self._record(account_id, trade_id, "cash_in", amount, {"price": price})
        return updated

    def set_stoploss(
        self,
        account_id: str,
        trade_id: str,
        price: Decimal | None,
        trailing_usd: Decimal | None,
    ) -> Trade:
        """Set, replace or clear (both None) the stop loss of a running trade.

        With ``trailing_usd`` the stop starts at ``price``, or that distance from the current
        price when ``price`` is None. Each time the price makes a new best after that, the stop
        moves to that distance from the best if that is tighter, and it never moves back.
        """
        trade = self._running_trade(account_id, trade_id)
        current = self._require_price()
        with _rejecting_invalid_input():
            level, distance_usd = _stoploss_level(trade.side, price, trailing_usd, current)
        if level is not None:
            _require_level_side("stoploss", trade.side, level, current)

        updated = replace(trade, stoploss_price=level, trailing_stoploss_usd=distance_usd)
        self._replace(trade, updated)
        self._trailing.pop(trade_id, None)
        if distance_usd is not None:
            self._trailing[trade_id] = _TrailingStop(distance_usd, current)
        details = {"price": level, "trailing_usd": distance_usd}
        self._record(account_id, trade_id, "stoploss", 0, details)
        return updated

    def set_takeprofit(self, account_id: str, trade_id: str, price: Decimal | None) -> Trade:
        """Set, replace or clear (None) the take profit of a running trade."""
        trade = self._running_trade(account_id, trade_id)
        current = self._require_price()
        level = None
        if price is not None:
            with _rejecting_invalid_input():
                level = quantize_price(price, self.capabilities.price_tick_usd)
            _require_level_side("takeprofit", trade.side, level, current)

        updated = replace(trade, takeprofit_price=level)
        self._replace(trade, updated)
        self._record(account_id, trade_id, "takeprofit", 0, {"price": level})
        return updated

    # Cross margin

    def cross_position(self, account_id: str) -> CrossPosition:
        self._account_state(account_id)
        return self._cross.position(account_id)

    def cross_orders(self, account_id: str, limit: int) -> list[CrossOrder]:
        """Return up to ``limit`` filled cross orders, the most recent first."""
        self._account_state(account_id)
        return self._cross.filled_orders(account_id, _sats(limit, "limit", 0))

    def deposit_cross(self, account_id: str, amount_sats: int) -> CrossPosition:
        """Move ``amount_sats`` from the free balance to the cross margin balance."""
        account = self._account_state(account_id)
        amount = _requested_amount(amount_sats)
        _require_free_sats(account, amount, "depositing to cross margin")
        account.free_sats -= amount
        position = self._cross.deposit(account_id, amount)
        self._record(account_id, position.id, "cross_deposit", amount, {})
        return position

    def withdraw_cross(self, account_id: str, amount_sats: int) -> CrossPosition:
        """Move ``amount_sats`` from the cross margin balance back to the free balance."""
        account = self._account_state(account_id)
        amount = _requested_amount(amount_sats)
        position = self._cross.withdraw(account_id, amount, self._price)
        account.free_sats += amount
        self._record(account_id, position.id, "cross_withdraw", amount, {})
        return position

    def set_cross_leverage(self, account_id: str, leverage: Decimal) -> CrossPosition:
        self._account_state(account_id)
        position = self._cross.set_leverage(account_id, leverage, self._price)
        self._record(account_id, position.id, "cross_leverage", 0, {"leverage": leverage})
        return position

    def open_cross_order(
        self, account_id: str, side: Side, quantity_usd: int, price: Decimal | None = None
    ) -> CrossOrder:
        """Fill a market order on the cross margin position; limit orders are not supported."""
        self._account_state(account_id)
        if price is not None:
            raise NotSupportedError(
                "the paper venue fills market orders only. Send the order with price=None"
            )
        with _rejecting_invalid_input():
            side = Side(side)
        fill = self._cross.order(account_id, side, quantity_usd, self._require_price())
        self._record_cross_fill(account_id, fill)
        return fill

    def close_cross_position(self, account_id: str) -> CrossOrder:
        self._account_state(account_id)
        fill = self._cross.close(account_id, self._require_price())
        self._record_cross_fill(account_id, fill)
        return fill

    def _record_cross_fill(self, account_id: str, fill: CrossOrder) -> None:
        details = {
            "side": fill.side.value,
            "quantity_usd": fill.quantity_usd,
            "price": fill.price,
            "trading_fee_sats": fill.trading_fee_sats,
        }
        position_id = self._cross.position(account_id).id
        self._record(account_id, position_id, "cross_order", fill.realized_pl_sats, details)

    # Internals

    def _size_order(self, request: OpenTradeRequest, price: Decimal) -> tuple[int, int]:
        """Return ``(quantity_usd, margin_sats)`` of a market order at ``price``."""
        if request.price is not None:
            raise NotSupportedError(
                "the paper venue fills market orders only. Send the order with price=None"
            )
        if (request.quantity_usd is None) == (request.margin_sats is None):
            raise RejectedError("give exactly one of quantity_usd and margin_sats")

        quantity_usd = request.quantity_usd
        if quantity_usd is None:
            # The quantity the margin buys, rounded down, so the margin charged is at most the
            # requested one.
            budget_sats = _sats(request.margin_sats, "margin_sats", 1)
            notional = budget_sats * Fraction(request.leverage) * Fraction(price)
            quantity_usd = floor(notional / SATS_PER_BTC)
        margin_sats = margin_for(quantity_usd, request.leverage, price)
        _require_quantity(quantity_usd, self.capabilities.max_quantity_usd)
        return quantity_usd, margin_sats

    def _new_trade(self, side: Side, quantity_usd: int, margin_sats: int, price: Decimal) -> Trade:
        liquidation = liquidation_price(side, quantity_usd, price, margin_sats)
        reserve_sats = maintenance_margin_sats(quantity_usd, price, liquidation)
        opening_fee_sats = trading_fee_sats(quantity_usd, price, self._fee_tier)
        return Trade(
            id=str(uuid.uuid4()),
            side=Side(side),
            quantity_usd=quantity_usd,
            entry_price=price,
            margin_sats=margin_sats,
            leverage=leverage_for(quantity_usd, margin_sats, price),
            liquidation_price=liquidation,
            maintenance_margin_sats=reserve_sats - opening_fee_sats,
            status=TradeStatus.RUNNING,
            opening_fee_sats=opening_fee_sats,
            created_ms=self._now_ms(),
        )

    def _close(self, trade_id: str, reason: CloseReason, price: Decimal) -> tuple[Trade, int]:
        """Close a running trade and return it closed with the sats credited to the account."""
        account = self._accounts[self._owners.pop(trade_id)]
        trade = account.running.pop(trade_id)
        self._unindex(trade)
        self._trailing.pop(trade_id, None)

        if reason is CloseReason.LIQUIDATED:
            exit_price, pnl = trade.liquidation_price, -trade.margin_sats
        else:
            pnl_at_price = pnl_sats(trade.side, trade.quantity_usd, trade.entry_price, price)
            exit_price, pnl = price, max(pnl_at_price, -trade.margin_sats)
        closing_fee_sats = trading_fee_sats(trade.quantity_usd, exit_price, self._fee_tier)
        credit_sats = max(
            trade.margin_sats + pnl + trade.maintenance_margin_sats - closing_fee_sats, 0
        )

        account.free_sats += credit_sats
        closed = replace(
            trade,
            status=TradeStatus.CLOSED,
            exit_price=exit_price,
            pnl_sats=pnl,
            closing_fee_sats=closing_fee_sats,
            close_reason=reason,
            closed_ms=self._now_ms(),
        )
        account.closed.append(closed)
        return closed, credit_sats

    def _fill(self, trade_id: str, reason: CloseReason, price: Decimal) -> TradeEvent:
        account_id = self._owners[trade_id]
        closed, _ = self._close(trade_id, reason, price)
        return TradeEvent(
            account_id, trade_id, reason, closed.exit_price, self._now_ms(), closed.pnl_sats
        )

    def _fill_crossed(self, reason: CloseReason, price: Decimal) -> list[TradeEvent]:
        events = []
        for side in Side:
            for trade_id in self._books[(reason, side)].crossed(price):
                events.append(self._fill(trade_id, reason, price))
        return events

    def _fill_or_follow_trailing(self, price: Decimal) -> list[TradeEvent]:
        events = []
        for trade_id, stop in list(self._trailing.items()):
            trade = self._accounts[self._owners[trade_id]].running[trade_id]
            if _stop_crossed(trade.side, trade.stoploss_price, price):
                events.append(self._fill(trade_id, CloseReason.STOPLOSS, price))
                continue
            level = _follow(trade.side, stop, trade.stoploss_price, price)
            if level != trade.stoploss_price:
                self._replace(trade, replace(trade, stoploss_price=level))
        return events

    def _store(self, trade: Trade) -> None:
        self._accounts[self._owners[trade.id]].running[trade.id] = trade
        for reason, level in _trigger_levels(trade):
            self._books[(reason, trade.side)].add(level, trade.id)

    def _unindex(self, trade: Trade) -> None:
        for reason, level in _trigger_levels(trade):
            self._books[(reason, trade.side)].discard(level, trade.id)

    def _replace(self, old: Trade, new: Trade) -> None:
        self._unindex(old)
        self._store(new)

    def _record(
        self, account_id: str, trade_id: str, kind: str, amount_sats: int, details: dict
    ) -> None:
        mutation = Mutation(account_id, trade_id, kind, amount_sats, self._now_ms(), details)
        self.mutations.append(mutation)

    def _running_trade(self, account_id: str, trade_id: str) -> Trade:
        trade = self._account_state(account_id).running.get(trade_id)
        if trade is None:
            raise TradeNotFoundError(
                f"trade {trade_id!r} is not running on account {account_id!r}. "
                "Re-read the running trades"
            )
        return trade

    def _account_state(self, account_id: str) -> _AccountState:
        account = self._accounts.get(account_id)
        if account is None:
            raise InvalidConfigError(
                "account_id", f"unknown account {account_id!r}. Create it with create_account"
            )
        return account

    def _require_price(self) -> Decimal:
        if self._price is None:
            raise RetryLaterError("the paper venue has no price yet. Call set_price first")
        return self._price

    def _now_ms(self) -> int:
        return self._clock_ms() if self._clock_ms is not None else self._time_ms


class PaperAccount:
    """One account of a PaperVenue, implementing the ``Exchange`` protocol."""

    def __init__(self, venue: PaperVenue, account_id: str) -> None:
        self.capabilities = venue.capabilities
        self.account_id = account_id
        self._venue = venue

    async def get_ticker(self) -> Ticker:
        return await self._venue.run_with_faults("get_ticker", self._venue.ticker)

    async def get_balance(self) -> Balance:
        return await self._venue.run_with_faults(
            "get_balance", lambda: self._venue.balance(self.account_id)
        )

    async def get_running_trades(self) -> list[Trade]:
        venue = self._venue
        return await venue.run_with_faults(
            "get_running_trades", lambda: venue.running_trades(self.account_id)
        )

    async def get_closed_trades(self, limit: int = 100) -> list[Trade]:
        venue = self._venue
        return await venue.run_with_faults(
            "get_closed_trades", lambda: venue.closed_trades(self.account_id, limit)
        )

    async def open_trade(self, request: OpenTradeRequest) -> Trade:
        venue = self._venue
        return await venue.run_with_faults(
            "open_trade", lambda: venue.open_trade(self.account_id, request)
        )

    async def close_trade(self, trade_id: str) -> Trade:
        venue = self._venue
        return await venue.run_with_faults(
            "close_trade", lambda: venue.close_trade(self.account_id, trade_id)
        )

    async def add_margin(self, trade_id: str, amount_sats: int) -> Trade:
        venue = self._venue
        return await venue.run_with_faults(
            "add_margin", lambda: venue.add_margin(self.account_id, trade_id, amount_sats)
        )

    async def cash_in(self, trade_id: str, amount_sats: int) -> Trade:
        venue = self._venue
        return await venue.run_with_faults(
            "cash_in", lambda: venue.cash_in(self.account_id, trade_id, amount_sats)
        )

    async def set_stoploss(
        self, trade_id: str, price: Decimal | None, trailing_usd: Decimal | None = None
    ) -> Trade:
        venue = self._venue
        return await venue.run_with_faults(
            "set_stoploss",
            lambda: venue.set_stoploss(self.account_id, trade_id, price, trailing_usd),
        )

    async def set_takeprofit(self, trade_id: str, price: Decimal | None) -> Trade:
        venue = self._venue
        return await venue.run_with_faults(
            "set_takeprofit", lambda: venue.set_takeprofit(self.account_id, trade_id, price)
        )

    # Cross margin

    async def get_cross_position(self) -> CrossPosition:
        venue = self._venue
        return await venue.run_with_faults(
            "get_cross_position", lambda: venue.cross_position(self.account_id)
        )

    async def get_cross_orders(self, limit: int = 100) -> list[CrossOrder]:
        venue = self._venue
        return await venue.run_with_faults(
            "get_cross_orders", lambda: venue.cross_orders(self.account_id, limit)
        )

    async def open_cross_order(
        self, side: Side, quantity_usd: int, price: Decimal | None = None
    ) -> CrossOrder:
        venue = self._venue
        return await venue.run_with_faults(
            "open_cross_order",
            lambda: venue.open_cross_order(self.account_id, side, quantity_usd, price),
        )

    async def close_cross_position(self) -> CrossOrder:
        venue = self._venue
        return await venue.run_with_faults(
            "close_cross_position", lambda: venue.close_cross_position(self.account_id)
        )

    async def deposit_cross(self, amount_sats: int) -> CrossPosition:
        venue = self._venue
        return await venue.run_with_faults(
            "deposit_cross", lambda: venue.deposit_cross(self.account_id, amount_sats)
        )

    async def withdraw_cross(self, amount_sats: int) -> CrossPosition:
        venue = self._venue
        return await venue.run_with_faults(
            "withdraw_cross", lambda: venue.withdraw_cross(self.account_id, amount_sats)
        )

    async def set_cross_leverage(self, leverage: Decimal) -> CrossPosition:
        venue = self._venue
        return await venue.run_with_faults(
            "set_cross_leverage", lambda: venue.set_cross_leverage(self.account_id, leverage)
        )


def _with_position(trade: Trade, entry_price: Decimal, margin_sats: int) -> Trade:
    """Return ``trade`` with a new entry price and margin, and the leverage and liquidation."""
    return replace(
        trade,
        entry_price=entry_price,
        margin_sats=margin_sats,
        leverage=leverage_for(trade.quantity_usd, margin_sats, entry_price),
        liquidation_price=liquidation_price(
            trade.side, trade.quantity_usd, entry_price, margin_sats
        ),
    )


def _with_order_levels(trade: Trade, request: OpenTradeRequest, price: Decimal) -> Trade:
    stoploss = takeprofit = None
    if request.stoploss_price is not None:
        stoploss = quantize_price(request.stoploss_price)
        _require_level_side("stoploss", trade.side, stoploss, price)
    if request.takeprofit_price is not None:
        takeprofit = quantize_price(request.takeprofit_price)
        _require_level_side("takeprofit", trade.side, takeprofit, price)
    return replace(trade, stoploss_price=stoploss, takeprofit_price=takeprofit)


def _stoploss_level(
    side: Side, price: Decimal | None, trailing_usd: Decimal | None, current: Decimal
) -> tuple[Decimal | None, Decimal | None]:
    """Return the stop level and trailing distance, both on the tick, from a request."""
    distance_usd = None
    if trailing_usd is not None:
        distance_usd = quantize_price(trailing_usd)
        if distance_usd <= 0:
            raise InvalidConfigError(
                "trailing_usd", f"{trailing_usd} USD rounds to 0. Pass at least 0.5 USD"
            )
    if price is not None:
        return quantize_price(price), distance_usd
    if distance_usd is None:
        return None, None
    if side is Side.BUY:
        return current - distance_usd, distance_usd
    return current + distance_usd, distance_usd


def _require_level_side(kind: str, side: Side, level: Decimal, price: Decimal) -> None:
    """Reject a stop loss or take profit that the current price has already crossed."""
    below = (side is Side.BUY) == (kind == "stoploss")
    side_name = "long" if side is Side.BUY else "short"
    if level <= 0:
        raise RejectedError(f"{kind} {level} USD is not positive. Pass a price above 0")
    if below and level >= price:
        raise RejectedError(
            f"{kind} {level} USD of a {side_name} must be below the current price {price} USD"
        )
    if not below and level <= price:
        raise RejectedError(
            f"{kind} {level} USD of a {side_name} must be above the current price {price} USD"
        )


def _stop_crossed(side: Side, level: Decimal, price: Decimal) -> bool:
    return price <= level if side is Side.BUY else price >= level


def _follow(side: Side, stop: _TrailingStop, level: Decimal, price: Decimal) -> Decimal:
    """Return the stop level after ``price``, moving it only when the price makes a new best.

    The level then becomes the new best minus the distance for a long (plus for a short), when
    that is tighter than the current level.
    """
    if side is Side.BUY and price > stop.best_price:
        stop.best_price = price
        return max(level, price - stop.distance_usd)
    if side is Side.SELL and price < stop.best_price:
        stop.best_price = price
        return min(level, price + stop.distance_usd)
    return level


def _trigger_levels(trade: Trade) -> Iterator[tuple[CloseReason, Decimal]]:
    if trade.liquidation_price is not None:
        yield CloseReason.LIQUIDATED, trade.liquidation_price
    if trade.stoploss_price is not None and trade.trailing_stoploss_usd is None:
        yield CloseReason.STOPLOSS, trade.stoploss_price
    if trade.takeprofit_price is not None:
        yield CloseReason.TAKEPROFIT, trade.takeprofit_price


def _require_free_sats(account: _AccountState, needed_sats: int, action: str) -> None:
    if needed_sats > account.free_sats:
        raise InsufficientFundsError(
            f"{action} needs {needed_sats} sats but the free balance is {account.free_sats} sats. "
            "Deposit more or request less"
        )


def _require_quantity(quantity_usd: int, max_quantity_usd: int) -> None:
    if not 1 <= quantity_usd <= max_quantity_usd:
        raise RejectedError(
            f"quantity_usd {quantity_usd} is outside 1..{max_quantity_usd}. "
            "Pass a quantity in that range"
        )


def _requested_amount(amount_sats: int) -> int:
    if isinstance(amount_sats, bool) or not isinstance(amount_sats, int) or amount_sats < 1:
        raise RejectedError(f"amount_sats {amount_sats!r} is not a whole number of at least 1 sat")
    return amount_sats


def _sats(value: int, field_name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidConfigError(field_name, f"{value!r} is not an int of at least {minimum}")
    return value


@contextmanager
def _rejecting_invalid_input() -> Iterator[None]:
    """Raise an invalid request value (any ValueError) as the RejectedError a venue returns."""
    try:
        yield
    except ValueError as exc:
        raise RejectedError(str(exc)) from exc
