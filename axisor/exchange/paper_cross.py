"""Cross margin on the paper venue: one net position per account, funded from the free balance.

The rules, in exact rational arithmetic with the rounding of ``axisor.exchange.math``:

- ``deposit`` moves sats from the free balance to the cross balance (``margin_sats``) and
  ``withdraw`` moves them back. Leverage is a setting of the cross account (1 until set), as
  LN Markets sets it with PUT /futures/cross/leverage instead of per order (lnmarkets-sdk
  0.0.19 cross client).
- Market orders fill at the current price. An order on the side of the position, or on a flat
  account, adds to it. The entry value of the position is the sum of quantity * 1e8 / fill price
  over its contracts, in sats, and the entry price is quantity * 1e8 / entry value: the
  contract-weighted harmonic mean of the fills, which keeps the P&L of inverse contracts exact.
- An opposite order closes up to the position's quantity at the entry price and realises the
  P&L of those contracts, rounded down to whole sats. The rest of the order, if any, opens a
  position on the other side at the fill price (a flip).
- Every order pays ``trading_fee_sats`` of its whole quantity at the fill price, at the venue's
  fee tier, from the cross balance. A balance that this would take below 0 stays at 0.
- initial margin = entry value / leverage, rounded up. maintenance margin = entry value times
  the tier-1 fee rate, rounded down: the fee to close the position at its entry price.
- equity = cross balance + unrealised P&L. An order that adds exposure, a withdrawal and a
  leverage change are rejected unless the equity afterwards (P&L rounded down) is at least the
  initial margin. An order that only reduces the position is always accepted.
- Liquidation: on the first price update at which equity, with the exact unrealised P&L, is at
  or below the maintenance margin. With Q = |quantity| * 1e8 that is a long at a price at or
  below Q / (balance + entry value - maintenance) and a short at or above
  Q / (entry value + maintenance - balance), which a short funded beyond that never reaches.
  The position closes at the updated price and the whole cross balance is forfeited.
  ``liquidation_price`` reports that level rounded to the nearest whole USD, halves up.

NOTE: LN Markets does not state its cross maintenance margin or what a liquidation leaves in
the cross balance in the sources we read (the lnmarkets-sdk 0.0.19 v3 models name the position
fields only). Both rules above are this venue's assumptions, not LN Markets' published ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal, localcontext
from fractions import Fraction
from math import ceil, floor

from axisor.errors import InsufficientFundsError, RejectedError
from axisor.exchange.math import FEE_RATES, SATS_PER_BTC, trading_fee_sats
from axisor.exchange.models import CloseReason, CrossOrder, CrossPosition, Side, TradeEvent
from axisor.exchange.paper_books import TriggerBook

_MAINTENANCE_RATE = Fraction(FEE_RATES[1])
_ENTRY_PRICE_DIGITS = 20
_HALF = Fraction(1, 2)


@dataclass
class CrossAccount:
    """The cross margin state of one account; ``entry_value`` is in sats, exact."""

    position_id: str
    leverage: Decimal = Decimal(1)
    margin_sats: int = 0
    quantity_usd: int = 0
    entry_value: Fraction = Fraction(0)
    total_pl_sats: int = 0
    trading_fees_sats: int = 0
    updated_ms: int = 0
    fills: list[CrossOrder] = field(default_factory=list)
    # The exact level under which the account is indexed in a liquidation book, if any.
    indexed_level: Fraction | None = None


def unrealized_pl(account: CrossAccount, price: Decimal) -> Fraction:
    """Return the exact P&L in sats of the open position at ``price`` (USD per BTC)."""
    if account.quantity_usd == 0:
        return Fraction(0)
    value_now = Fraction(_notional(account.quantity_usd)) / Fraction(price)
    if account.quantity_usd > 0:
        return account.entry_value - value_now
    return value_now - account.entry_value


def equity_sats(account: CrossAccount, price: Decimal) -> int:
    """Return the cross balance plus the unrealised P&L at ``price``, rounded down."""
    return account.margin_sats + floor(unrealized_pl(account, price))


def initial_margin_sats(account: CrossAccount) -> int:
    return ceil(account.entry_value / Fraction(account.leverage))


def maintenance_margin_sats(account: CrossAccount) -> int:
    return floor(account.entry_value * _MAINTENANCE_RATE)


def liquidation_level(account: CrossAccount) -> Fraction | None:
    """Return the exact price at which equity meets the maintenance margin, or None."""
    if account.quantity_usd == 0:
        return None
    maintenance_sats = maintenance_margin_sats(account)
    if account.quantity_usd > 0:
        # Positive, because the balance is never negative and the fee rate is below 1.
        denominator = account.margin_sats + account.entry_value - maintenance_sats
    else:
        denominator = account.entry_value + maintenance_sats - account.margin_sats
    if denominator <= 0:
        return None
    return Fraction(_notional(account.quantity_usd)) / denominator


def entry_price(account: CrossAccount) -> Decimal | None:
    """Return the entry price in USD per BTC to 20 significant digits, or None when flat."""
    if account.quantity_usd == 0:
        return None
    exact = Fraction(_notional(account.quantity_usd)) / account.entry_value
    with localcontext() as context:
        context.prec = _ENTRY_PRICE_DIGITS
        return Decimal(exact.numerator) / Decimal(exact.denominator)


def position_view(account: CrossAccount) -> CrossPosition:
    level = liquidation_level(account)
    return CrossPosition(
        id=account.position_id,
        quantity_usd=account.quantity_usd,
        entry_price=entry_price(account),
        leverage=account.leverage,
        margin_sats=account.margin_sats,
        maintenance_margin_sats=maintenance_margin_sats(account),
        liquidation_price=None if level is None else Decimal(floor(level + _HALF)),
        total_pl_sats=account.total_pl_sats,
        initial_margin_sats=initial_margin_sats(account),
        trading_fees_sats=account.trading_fees_sats,
        updated_ms=account.updated_ms,
    )


def apply_fill(account: CrossAccount, side: Side, quantity_usd: int, price: Decimal) -> int:
    """Apply a filled order of ``quantity_usd`` at ``price`` and return the realised P&L in sats.

    The caller charges the trading fee.
    """
    signed_usd = quantity_usd if side is Side.BUY else -quantity_usd
    held_usd = account.quantity_usd
    if held_usd == 0 or (held_usd > 0) == (signed_usd > 0):
        account.entry_value += Fraction(_notional(quantity_usd)) / Fraction(price)
        account.quantity_usd += signed_usd
        return 0

    closing_usd = min(quantity_usd, abs(held_usd))
    realized_sats = _close_part(account, closing_usd, price)
    rest_usd = quantity_usd - closing_usd
    if rest_usd > 0:
        account.entry_value = Fraction(_notional(rest_usd)) / Fraction(price)
        account.quantity_usd = rest_usd if signed_usd > 0 else -rest_usd
    return realized_sats


def _close_part(account: CrossAccount, closing_usd: int, price: Decimal) -> int:
    held_usd = account.quantity_usd
    closed_value = account.entry_value * Fraction(closing_usd, abs(held_usd))
    value_now = Fraction(_notional(closing_usd)) / Fraction(price)
    exact_pl = closed_value - value_now if held_usd > 0 else value_now - closed_value
    account.entry_value -= closed_value
    account.quantity_usd = held_usd - closing_usd if held_usd > 0 else held_usd + closing_usd
    return floor(exact_pl)


def _adds_exposure(before_usd: int, after_usd: int) -> bool:
    flipped = before_usd != 0 and after_usd != 0 and (before_usd > 0) != (after_usd > 0)
    return flipped or abs(after_usd) > abs(before_usd)


def _notional(quantity_usd: int) -> int:
    return abs(quantity_usd) * SATS_PER_BTC


class CrossMargins:
    """The cross margin accounts of a PaperVenue and the books that find their liquidations.

    The venue moves sats between the free balance and these accounts. Every rejection raises
    before any state changes.
    """

    def __init__(self, fee_tier: int, now_ms: Callable[[], int], max_quantity_usd: int) -> None:
        self._fee_tier = fee_tier
        self._now_ms = now_ms
        self._max_quantity_usd = max_quantity_usd
        self._accounts: dict[str, CrossAccount] = {}
        self._books = {
            Side.BUY: TriggerBook(fires_on_rise=False),
            Side.SELL: TriggerBook(fires_on_rise=True),
        }

    def position(self, account_id: str) -> CrossPosition:
        return position_view(self._account(account_id))

    def filled_orders(self, account_id: str, limit: int) -> list[CrossOrder]:
        """Return up to ``limit`` filled orders, the most recent first."""
        return self._account(account_id).fills[::-1][:limit]

    def deposit(self, account_id: str, amount_sats: int) -> CrossPosition:
        """Credit ``amount_sats``, which the venue has taken from the free balance."""
        trial = replace(self._account(account_id))
        trial.margin_sats += amount_sats
        return self._commit(account_id, trial)

    def withdraw(self, account_id: str, amount_sats: int, price: Decimal | None) -> CrossPosition:
        """Debit ``amount_sats``, which the venue then credits to the free balance."""
        trial = replace(self._account(account_id))
        if amount_sats > trial.margin_sats:
            raise InsufficientFundsError(
                f"withdrawing {amount_sats} sats exceeds the cross balance of "
                f"{trial.margin_sats} sats. Withdraw less"
            )
        trial.margin_sats -= amount_sats
        self._require_initial_margin(trial, price, f"withdrawing {amount_sats} sats")
        return self._commit(account_id, trial)

    def set_leverage(
        self, account_id: str, leverage: Decimal, price: Decimal | None
    ) -> CrossPosition:
        if isinstance(leverage, bool | float) or not 1 <= leverage <= 100:
            raise RejectedError(f"leverage {leverage!r} is outside 1..100. Pass one in that range")
        trial = replace(self._account(account_id), leverage=Decimal(leverage))
        self._require_initial_margin(trial, price, f"setting leverage {leverage}")
        return self._commit(account_id, trial)

    def order(self, account_id: str, side: Side, quantity_usd: int, price: Decimal) -> CrossOrder:
        """Fill a market order of ``quantity_usd`` contracts at ``price``."""
        account = self._account(account_id)
        quantity_usd = self._order_quantity(account, side, quantity_usd)
        trial = replace(account)
        realized_sats = apply_fill(trial, side, quantity_usd, price)
        fee_sats = trading_fee_sats(quantity_usd, price, self._fee_tier)
        trial.margin_sats = max(trial.margin_sats + realized_sats - fee_sats, 0)
        trial.total_pl_sats += realized_sats
        trial.trading_fees_sats += fee_sats
        if _adds_exposure(account.quantity_usd, trial.quantity_usd):
            self._require_initial_margin(trial, price, f"a {side} order of {quantity_usd} USD")

        fill = CrossOrder(
            str(uuid.uuid4()), side, quantity_usd, price, fee_sats, realized_sats, self._now_ms()
        )
        trial.fills = [*account.fills, fill]
        self._commit(account_id, trial)
        return fill

    def close(self, account_id: str, price: Decimal) -> CrossOrder:
        """Close the whole position with an opposite market order."""
        held_usd = self._account(account_id).quantity_usd
        if held_usd == 0:
            raise RejectedError(f"account {account_id!r} has no cross margin position to close")
        side = Side.SELL if held_usd > 0 else Side.BUY
        return self.order(account_id, side, abs(held_usd), price)

    def liquidate_crossed(self, price: Decimal) -> list[TradeEvent]:
        """Liquidate every position whose level ``price`` reached; return one event for each."""
        events = []
        for side in Side:
            for account_id in self._books[side].crossed(Fraction(price)):
                events.append(self._liquidate(account_id, price))
        return events

    def _liquidate(self, account_id: str, price: Decimal) -> TradeEvent:
        account = self._accounts[account_id]
        forfeited_sats = account.margin_sats
        trial = replace(account, margin_sats=0, quantity_usd=0, entry_value=Fraction(0))
        trial.total_pl_sats -= forfeited_sats
        self._commit(account_id, trial)
        return TradeEvent(
            account_id,
            account.position_id,
            CloseReason.LIQUIDATED,
            price,
            trial.updated_ms,
            -forfeited_sats,
        )

    def _order_quantity(self, account: CrossAccount, side: Side, quantity_usd: int) -> int:
        if isinstance(quantity_usd, bool) or not isinstance(quantity_usd, int):
            raise RejectedError(f"quantity_usd {quantity_usd!r} is not a whole number of USD")
        signed_usd = quantity_usd if side is Side.BUY else -quantity_usd
        limit_usd = self._max_quantity_usd
        if not 1 <= quantity_usd <= limit_usd:
            raise RejectedError(
                f"quantity_usd {quantity_usd} is outside 1..{limit_usd}. Pass one in that range"
            )
        if abs(account.quantity_usd + signed_usd) > limit_usd:
            raise RejectedError(
                f"a {side} order of {quantity_usd} USD would take the cross position past "
                f"{limit_usd} USD. Request less"
            )
        return quantity_usd

    def _require_initial_margin(
        self, trial: CrossAccount, price: Decimal | None, action: str
    ) -> None:
        if trial.quantity_usd == 0:
            return
        equity = equity_sats(trial, price)
        needed_sats = initial_margin_sats(trial)
        if equity < needed_sats:
            raise InsufficientFundsError(
                f"{action} leaves a cross equity of {equity} sats, below the initial margin of "
                f"{needed_sats} sats at leverage {trial.leverage}. Deposit more or request less"
            )

    def _account(self, account_id: str) -> CrossAccount:
        account = self._accounts.get(account_id)
        if account is None:
            account = CrossAccount(position_id=str(uuid.uuid4()))
            self._accounts[account_id] = account
        return account

    def _commit(self, account_id: str, trial: CrossAccount) -> CrossPosition:
        """Store ``trial`` as the account's state and move it to its new liquidation level."""
        old = self._accounts.get(account_id)
        if old is not None and old.indexed_level is not None:
            self._books[_book_side(old)].discard(old.indexed_level, account_id)
        trial.indexed_level = liquidation_level(trial)
        if trial.indexed_level is not None:
            self._books[_book_side(trial)].add(trial.indexed_level, account_id)
        trial.updated_ms = self._now_ms()
        self._accounts[account_id] = trial
        return position_view(trial)


def _book_side(account: CrossAccount) -> Side:
    return Side.BUY if account.quantity_usd > 0 else Side.SELL
