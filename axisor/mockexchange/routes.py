"""The v3 route handlers of the mock LN Markets server, run on a ``PaperVenue``, and the
mapping of venue exceptions to HTTP replies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from starlette.requests import Request

from axisor.errors import (
    InsufficientFundsError,
    InvalidConfigError,
    InvalidExchangeDataError,
    NotSupportedError,
    RejectedError,
    RetryLaterError,
    StateUnknownError,
    TradeNotFoundError,
)
from axisor.exchange.lnmarkets.parse import (
    decimal_field,
    decode_json,
    field_value,
    sats_field,
    to_time_ms,
)
from axisor.exchange.models import OpenTradeRequest, Side
from axisor.exchange.paper import PaperVenue
from axisor.mockexchange.payloads import (
    _HUNDRED,
    _candle_json,
    cross_order_json,
    cross_position_json,
    iso_time,
    trade_json,
)

_CANDLE_MS = 60_000

# Venue exceptions in the order they are matched, with the HTTP status and error code sent.
_ERROR_STATUSES: tuple[tuple[type[Exception], int, str], ...] = (
    (StateUnknownError, 504, "gateway_timeout"),
    (RetryLaterError, 503, "service_unavailable"),
    (TradeNotFoundError, 404, "trade_not_found"),
    (InsufficientFundsError, 400, "insufficient_funds"),
    (NotSupportedError, 400, "not_supported"),
    (RejectedError, 400, "bad_request"),
    (InvalidConfigError, 400, "invalid_request"),
    (InvalidExchangeDataError, 400, "invalid_request"),
    (ValueError, 400, "invalid_request"),
)
_MAPPED_ERRORS = tuple(error for error, _, _ in _ERROR_STATUSES)


@dataclass(frozen=True)
class VenueCall:
    """The parts of a request that a route handler reads."""

    account_id: str | None
    query: Mapping[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        data = decode_json(self.body) if self.body else {}
        if not isinstance(data, dict):
            raise InvalidExchangeDataError("the body must be a JSON object")
        return data

    def trade_id(self) -> str:
        return str(field_value(self.json(), "id"))


class VenueRoutes:
    """The v3 route handlers on a PaperVenue, each run under the venue's PaperFaults."""

    def __init__(self, venue: PaperVenue, now_ms: Callable[[], int]) -> None:
        self._venue = venue
        self._now_ms = now_ms
        self._prices: list[tuple[int, Decimal]] = []

    def table(self) -> list[tuple[str, str, Callable[[VenueCall], Awaitable[Any]], str]]:
        """Return (method, path after /v3, handler, kind) where kind is public, read or change."""
        isolated = "/futures/isolated"
        return [
            ("GET", "/time", self.time, "public"),
            ("GET", "/futures/ticker", self.ticker, "public"),
            ("GET", "/futures/candles", self.candles, "public"),
            ("GET", "/account", self.account, "read"),
            ("GET", f"{isolated}/trades/running", self.running, "read"),
            ("GET", f"{isolated}/trades/open", self.open_orders, "read"),
            ("GET", f"{isolated}/trades/closed", self.closed, "read"),
            ("POST", f"{isolated}/trade", self.open_trade, "change"),
            ("POST", f"{isolated}/trade/close", self.close_trade, "change"),
            ("POST", f"{isolated}/trade/cancel", self.cancel_trade, "change"),
            ("POST", f"{isolated}/trade/add-margin", self.add_margin, "change"),
            ("POST", f"{isolated}/trade/cash-in", self.cash_in, "change"),
            ("PUT", f"{isolated}/trade/stoploss", self.put_stoploss, "change"),
            ("DELETE", f"{isolated}/trade/stoploss", self.delete_stoploss, "change"),
            ("PUT", f"{isolated}/trade/takeprofit", self.put_takeprofit, "change"),
            ("DELETE", f"{isolated}/trade/takeprofit", self.delete_takeprofit, "change"),
            *self._cross_table(),
        ]

    def _cross_table(self) -> list[tuple[str, str, Callable[[VenueCall], Awaitable[Any]], str]]:
        cross = "/futures/cross"
        return [
            ("GET", f"{cross}/position", self.cross_position, "read"),
            ("GET", f"{cross}/orders/open", self.open_orders, "read"),
            ("GET", f"{cross}/orders/filled", self.cross_filled, "read"),
            ("POST", f"{cross}/order", self.cross_order, "change"),
            ("POST", f"{cross}/position/close", self.cross_close, "change"),
            ("POST", f"{cross}/deposit", self.cross_deposit, "change"),
            ("POST", f"{cross}/withdraw", self.cross_withdraw, "change"),
            ("PUT", f"{cross}/leverage", self.cross_leverage, "change"),
        ]

    def call(self, account_id: str | None, request: Request, body: bytes) -> VenueCall:
        return VenueCall(account_id, dict(request.query_params), body)

    @staticmethod
    def status_for(exc: Exception) -> tuple[int, str]:
        for error, status, code in _ERROR_STATUSES:
            if isinstance(exc, error):
                return status, code
        raise exc

    def set_price(self, price: Decimal, time_ms: int) -> None:
        self._venue.set_price(price, time_ms)
        self._prices.append((time_ms, self._venue.price))

    def liquidate_pending(self, account_id: str, trade_ids: set[str]) -> None:
        """Liquidate the account's trades named in ``trade_ids`` by moving the price there.

        Every other trade crossed at that price fills as well, as on the venue.
        """
        for trade in self._venue.running_trades(account_id):
            if trade.id in trade_ids and trade.liquidation_price is not None:
                trade_ids.discard(trade.id)
                self.set_price(trade.liquidation_price, self._now_ms())

    # Public routes

    async def time(self, call: VenueCall) -> Any:
        return {"time": iso_time(self._now_ms())}

    async def ticker(self, call: VenueCall) -> Any:
        ticker = await self._venue.run_with_faults("get_ticker", self._venue.ticker)
        bucket = {"askPrice": ticker.ask_price, "bidPrice": ticker.bid_price}
        return {
            "index": ticker.index_price,
            "lastPrice": ticker.last_price,
            "prices": [bucket | {"minSize": 1, "maxSize": 500_000}],
            "fundingRate": Decimal(0),
            "fundingTime": iso_time(self._now_ms()),
        }

    async def candles(self, call: VenueCall) -> Any:
        """Return 1m candles built from the prices set on the mock, oldest first."""
        if call.query.get("range", "1m") != "1m":
            raise NotSupportedError("the mock exchange builds 1m candles only")
        from_ms = to_time_ms(call.query.get("from", "0"), "from")
        limit = int(call.query.get("limit", "1000"))
        buckets: dict[int, list[Decimal]] = {}
        for time_ms, price in self._prices:
            if time_ms >= from_ms:
                buckets.setdefault(time_ms - time_ms % _CANDLE_MS, []).append(price)
        return [_candle_json(start_ms, prices) for start_ms, prices in sorted(buckets.items())][
            :limit
        ]

    # Reads

    async def account(self, call: VenueCall) -> Any:
        account_id = call.account_id
        balance = await self._venue.run_with_faults(
            "get_balance", lambda: self._venue.balance(account_id)
        )
        return {"id": account_id, "username": account_id, "balance": balance.free_sats}

    async def running(self, call: VenueCall) -> Any:
        trades = await self._venue.run_with_faults(
            "get_running_trades", lambda: self._venue.running_trades(call.account_id)
        )
        return [trade_json(trade) for trade in trades]

    async def open_orders(self, call: VenueCall) -> Any:
        return []

    async def closed(self, call: VenueCall) -> Any:
        limit = int(call.query.get("limit", "1000"))
        trades = await self._venue.run_with_faults(
            "get_closed_trades", lambda: self._venue.closed_trades(call.account_id, limit)
        )
        return {"data": [trade_json(trade) for trade in trades], "nextCursor": None}

    # Changes

    async def open_trade(self, call: VenueCall) -> Any:
        order = _order_request(call.json())
        trade = await self._venue.run_with_faults(
            "open_trade", lambda: self._venue.open_trade(call.account_id, order)
        )
        return trade_json(trade)

    async def close_trade(self, call: VenueCall) -> Any:
        trade_id = call.trade_id()
        trade = await self._venue.run_with_faults(
            "close_trade", lambda: self._venue.close_trade(call.account_id, trade_id)
        )
        return trade_json(trade)

    async def cancel_trade(self, call: VenueCall) -> Any:
        raise TradeNotFoundError(f"no open limit order {call.trade_id()!r} to cancel")

    async def add_margin(self, call: VenueCall) -> Any:
        return await self._amount_change("add_margin", call)

    async def cash_in(self, call: VenueCall) -> Any:
        return await self._amount_change("cash_in", call)

    async def put_stoploss(self, call: VenueCall) -> Any:
        """Set a fixed stop at ``value``, or a trailing one ``value`` percent from the price."""
        data = call.json()
        value = decimal_field(data, "value")
        price, trailing_usd = (value, None) if value != 0 else (None, None)
        if value != 0 and field_value(data, "mode", "fixed") == "trailing":
            current_price = self._venue.ticker().last_price
            price, trailing_usd = None, current_price * value / _HUNDRED
        return await self._set_stoploss(call.account_id, call.trade_id(), price, trailing_usd)

    async def delete_stoploss(self, call: VenueCall) -> Any:
        trade_id = call.query.get("id", "")
        return await self._set_stoploss(call.account_id, trade_id, None, None)

    async def put_takeprofit(self, call: VenueCall) -> Any:
        value = decimal_field(call.json(), "value")
        return await self._set_takeprofit(call.account_id, call.trade_id(), value or None)

    async def delete_takeprofit(self, call: VenueCall) -> Any:
        return await self._set_takeprofit(call.account_id, call.query.get("id", ""), None)

    # Cross margin

    async def cross_position(self, call: VenueCall) -> Any:
        position = await self._venue.run_with_faults(
            "get_cross_position", lambda: self._venue.cross_position(call.account_id)
        )
        return cross_position_json(position)

    async def cross_filled(self, call: VenueCall) -> Any:
        limit = int(call.query.get("limit", "1000"))
        fills = await self._venue.run_with_faults(
            "get_cross_orders", lambda: self._venue.cross_orders(call.account_id, limit)
        )
        return {"data": [cross_order_json(fill) for fill in fills], "nextCursor": None}

    async def cross_order(self, call: VenueCall) -> Any:
        data = call.json()
        order_type = field_value(data, "type")
        if order_type not in ("market", "limit"):
            raise InvalidExchangeDataError(f"type {order_type!r} is not 'market' or 'limit'")
        side = Side.parse(field_value(data, "side"))
        quantity_usd = sats_field(data, "quantity")
        price = decimal_field(data, "price", None)
        fill = await self._venue.run_with_faults(
            "open_cross_order",
            lambda: self._venue.open_cross_order(call.account_id, side, quantity_usd, price),
        )
        return cross_order_json(fill, field_value(data, "client_id", None))

    async def cross_close(self, call: VenueCall) -> Any:
        fill = await self._venue.run_with_faults(
            "close_cross_position", lambda: self._venue.close_cross_position(call.account_id)
        )
        return cross_order_json(fill)

    async def cross_deposit(self, call: VenueCall) -> Any:
        return await self._cross_transfer("deposit_cross", call)

    async def cross_withdraw(self, call: VenueCall) -> Any:
        return await self._cross_transfer("withdraw_cross", call)

    async def cross_leverage(self, call: VenueCall) -> Any:
        leverage = decimal_field(call.json(), "leverage")
        position = await self._venue.run_with_faults(
            "set_cross_leverage",
            lambda: self._venue.set_cross_leverage(call.account_id, leverage),
        )
        return cross_position_json(position)

    async def _cross_transfer(self, method: str, call: VenueCall) -> Any:
        amount_sats = sats_field(call.json(), "amount")
        operation = getattr(self._venue, method)
        position = await self._venue.run_with_faults(
            method, lambda: operation(call.account_id, amount_sats)
        )
        return cross_position_json(position)

    async def _amount_change(self, method: str, call: VenueCall) -> Any:
        data = call.json()
        trade_id = str(field_value(data, "id"))
        amount_sats = sats_field(data, "amount")
        operation = getattr(self._venue, method)
        trade = await self._venue.run_with_faults(
            method, lambda: operation(call.account_id, trade_id, amount_sats)
        )
        return trade_json(trade)

    async def _set_stoploss(
        self, account_id: str, trade_id: str, price: Decimal | None, trailing_usd: Decimal | None
    ) -> Any:
        trade = await self._venue.run_with_faults(
            "set_stoploss",
            lambda: self._venue.set_stoploss(account_id, trade_id, price, trailing_usd),
        )
        return trade_json(trade)

    async def _set_takeprofit(self, account_id: str, trade_id: str, price: Decimal | None) -> Any:
        trade = await self._venue.run_with_faults(
            "set_takeprofit", lambda: self._venue.set_takeprofit(account_id, trade_id, price)
        )
        return trade_json(trade)


def _order_request(data: dict[str, Any]) -> OpenTradeRequest:
    order_type = field_value(data, "type")
    if order_type not in ("market", "limit"):
        raise InvalidExchangeDataError(f"type {order_type!r} is not 'market' or 'limit'")
    price = decimal_field(data, "price", None)
    if (order_type == "limit") != (price is not None):
        raise InvalidExchangeDataError("a limit order needs a price and a market order none")
    quantity = field_value(data, "quantity", None)
    margin = field_value(data, "margin", None)
    return OpenTradeRequest(
        side=Side.parse(field_value(data, "side")),
        leverage=decimal_field(data, "leverage"),
        quantity_usd=sats_field(data, "quantity") if quantity is not None else None,
        margin_sats=sats_field(data, "margin") if margin is not None else None,
        price=price,
        stoploss_price=decimal_field(data, "stoploss", None),
        takeprofit_price=decimal_field(data, "takeprofit", None),
    )
