"""Values exchanged with a venue. Prices are USD per BTC as ``Decimal``; money is int sats."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal


class Side(enum.StrEnum):
    """Direction of an isolated trade: ``buy`` is long, ``sell`` is short."""

    BUY = "buy"
    SELL = "sell"

    @classmethod
    def parse(cls, value: str) -> Side:
        """Parse ``buy``/``b``/``long`` and ``sell``/``s``/``short`` in any case."""
        text = str(value).strip().lower()
        if text in ("buy", "b", "long"):
            return cls.BUY
        if text in ("sell", "s", "short"):
            return cls.SELL
        raise ValueError(f"invalid side {value!r}: expected 'buy' or 'sell'")


class TradeStatus(enum.StrEnum):
    """Life cycle of an isolated trade on the venue."""

    OPEN = "open"  # a limit order not yet filled
    RUNNING = "running"
    CLOSED = "closed"
    CANCELED = "canceled"


class CloseReason(enum.StrEnum):
    """Reason a trade stopped running."""

    CLOSED = "closed"  # closed on request
    LIQUIDATED = "liquidated"
    STOPLOSS = "stoploss"
    TAKEPROFIT = "takeprofit"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Features of a venue, which the platform reads instead of testing the venue's name."""

    name: str
    isolated: bool = True
    cross: bool = False
    partial_reduce_isolated: bool = False
    # An opposite market order on the cross margin position reduces it by that quantity.
    partial_reduce_cross: bool = False
    exchange_stoploss: bool = True
    exchange_takeprofit: bool = True
    trailing_stoploss: bool = False
    price_tick_usd: Decimal = Decimal("0.5")
    min_leverage: int = 1
    max_leverage: int = 100
    max_quantity_usd: int = 500_000


@dataclass(frozen=True, slots=True)
class Ticker:
    """Last price and quotes, USD per BTC; ``time_ms`` is epoch milliseconds."""

    last_price: Decimal
    bid_price: Decimal
    ask_price: Decimal
    index_price: Decimal
    time_ms: int


@dataclass(frozen=True, slots=True)
class Balance:
    """Account balance in sats; ``free_sats`` is what new margin can be drawn from."""

    free_sats: int
    total_sats: int


@dataclass(frozen=True, slots=True)
class Trade:
    """One isolated trade as the venue reports it.

    ``quantity_usd`` is the number of 1 USD contracts. ``liquidation_price`` is ``None`` only for
    a trade that cannot be liquidated (a 1x short).
    """

    id: str
    side: Side
    quantity_usd: int
    entry_price: Decimal
    margin_sats: int
    leverage: Decimal
    liquidation_price: Decimal | None
    maintenance_margin_sats: int
    status: TradeStatus
    opening_fee_sats: int = 0
    closing_fee_sats: int = 0
    stoploss_price: Decimal | None = None
    takeprofit_price: Decimal | None = None
    trailing_stoploss_usd: Decimal | None = None
    exit_price: Decimal | None = None
    pnl_sats: int = 0
    close_reason: CloseReason | None = None
    created_ms: int = 0
    closed_ms: int | None = None

    @property
    def running(self) -> bool:
        return self.status is TradeStatus.RUNNING


@dataclass(frozen=True, slots=True)
class OpenTradeRequest:
    """A market (``price`` None) or limit order for a new isolated trade.

    Give exactly one of ``quantity_usd`` and ``margin_sats``.
    """

    side: Side
    leverage: Decimal
    quantity_usd: int | None = None
    margin_sats: int | None = None
    price: Decimal | None = None
    stoploss_price: Decimal | None = None
    takeprofit_price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class TradeEvent:
    """Something the venue did by itself on a price update: a liquidation or a stop fill."""

    account_id: str
    trade_id: str
    reason: CloseReason
    price: Decimal
    time_ms: int
    pnl_sats: int


@dataclass(frozen=True, slots=True)
class Mutation:
    """One state change the venue applied on request, kept for audits and duplicate checks."""

    account_id: str
    trade_id: str
    # "open", "close", "add_margin", "cash_in", "stoploss", "takeprofit", or for cross margin
    # "cross_deposit", "cross_withdraw", "cross_leverage", "cross_order"
    kind: str
    amount_sats: int
    time_ms: int
    details: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CrossPosition:
    """The cross margin position of an account: one net position built from market orders.

    ``quantity_usd`` is signed: above 0 long, below 0 short, 0 flat (then ``entry_price`` and
    ``liquidation_price`` are None). ``margin_sats`` is the cross balance: deposits minus
    withdrawals plus realised P&L minus trading fees. ``initial_margin_sats`` is the part of it
    the position needs at ``leverage``. ``total_pl_sats`` is the realised P&L since the account
    opened. The first eight fields match ``axisor.exchange.lnmarkets.parse.CrossPosition``.
    """

    id: str
    quantity_usd: int
    entry_price: Decimal | None
    leverage: Decimal
    margin_sats: int
    maintenance_margin_sats: int
    liquidation_price: Decimal | None
    total_pl_sats: int
    initial_margin_sats: int = 0
    trading_fees_sats: int = 0
    updated_ms: int = 0

    @property
    def side(self) -> Side | None:
        """The side of the net position, or None when it is flat."""
        if self.quantity_usd == 0:
            return None
        return Side.BUY if self.quantity_usd > 0 else Side.SELL


@dataclass(frozen=True, slots=True)
class CrossOrder:
    """One filled market order on the cross margin position.

    ``realized_pl_sats`` is the P&L the order realised on the contracts it closed.
    """

    id: str
    side: Side
    quantity_usd: int
    price: Decimal
    trading_fee_sats: int
    realized_pl_sats: int
    filled_ms: int
