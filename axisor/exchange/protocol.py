"""The one interface the platform uses to talk to any venue, for one account.

Every method may raise the ``ExchangeError`` subclasses of ``axisor.errors``. A method that
changes state raises ``StateUnknownError`` when the venue may have applied it without a reply.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from axisor.exchange.models import (
    Balance,
    Capabilities,
    CrossPosition,
    OpenTradeRequest,
    Side,
    Ticker,
    Trade,
)


@runtime_checkable
class Exchange(Protocol):
    """One account on one venue."""

    capabilities: Capabilities

    async def get_ticker(self) -> Ticker: ...

    async def get_balance(self) -> Balance: ...

    async def get_running_trades(self) -> list[Trade]: ...

    async def get_closed_trades(self, limit: int = 100) -> list[Trade]: ...

    async def open_trade(self, request: OpenTradeRequest) -> Trade: ...

    async def close_trade(self, trade_id: str) -> Trade: ...

    async def add_margin(self, trade_id: str, amount_sats: int) -> Trade: ...

    async def cash_in(self, trade_id: str, amount_sats: int) -> Trade: ...

    async def set_stoploss(
        self, trade_id: str, price: Decimal | None, trailing_usd: Decimal | None = None
    ) -> Trade: ...

    async def set_takeprofit(self, trade_id: str, price: Decimal | None) -> Trade: ...


@runtime_checkable
class CrossExchange(Protocol):
    """The cross margin position of one account, on a venue whose capabilities declare ``cross``.

    Optional: a venue implements it next to ``Exchange``. ``get_cross_position`` returns a value
    with the fields of ``CrossPosition`` (the LN Markets client returns its parsed equivalent).
    The order methods return the venue's record of the filled order.
    """

    async def get_cross_position(self) -> CrossPosition: ...

    async def open_cross_order(
        self, side: Side, quantity_usd: int, price: Decimal | None = None
    ) -> Any: ...

    async def close_cross_position(self) -> Any: ...


async def find_running_trade(exchange: Exchange, trade_id: str) -> Trade | None:
    """Return the running trade with ``trade_id``, or None when the venue no longer runs it."""
    for trade in await exchange.get_running_trades():
        if trade.id == trade_id:
            return trade
    return None
