"""A mock LN Markets v3 REST server on loopback, backed by one ``PaperVenue``.

It serves the isolated-trade, cross margin, account, ticker, candle and time routes under
``/v3``, checks
each signature exactly as ``axisor.exchange.lnmarkets.signing`` makes it, and rejects a
timestamp more than ``timestamp_window_ms`` away from its clock with HTTP 401 and the code
``timestamp_out_of_window``. Errors are JSON objects with ``code`` and ``message``.

Routes under ``/_mock`` drive it without authentication: ``POST /_mock/accounts``,
``POST /_mock/price``, ``POST /_mock/faults``, ``POST /_mock/reset`` and
``GET /_mock/requests``. ``MockExchange.requests`` records every v3 request with its arrival
and reply times (``time.monotonic``), its account and its status.

Not modelled: limit orders (the paper venue fills market orders only), funding fees, cross
margin transfers history, pagination cursors, and candle resolutions other than 1m.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

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
from axisor.exchange.lnmarkets.clock import wall_clock_ms
from axisor.exchange.lnmarkets.parse import (
    decimal_field,
    decode_json,
    encode_json,
    field_value,
    sats_field,
    to_time_ms,
)
from axisor.exchange.lnmarkets.signing import (
    KEY_HEADER,
    PASSPHRASE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signed_params,
    verify,
)
from axisor.exchange.models import (
    CrossOrder,
    CrossPosition,
    OpenTradeRequest,
    Side,
    Trade,
    TradeStatus,
)
from axisor.exchange.paper import PaperVenue
from axisor.mockexchange.faults import MockFaults

TIMESTAMP_WINDOW_MS = 30_000
_LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass
class RequestRecord:
    """One request on a v3 route, with times in ``time.monotonic()`` seconds."""

    method: str
    path: str
    arrived_s: float
    account_id: str | None = None
    status: int | None = None
    responded_s: float | None = None
    retry_after: str | None = None


@dataclass(frozen=True)
class _Account:
    account_id: str
    secret: str
    passphrase: str

    def __repr__(self) -> str:
        return f"_Account(account_id={self.account_id!r}, secret=[secure], passphrase=[secure])"


class MockError(Exception):
    """An error reply: HTTP ``status`` with a JSON ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str, retry_after: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def response(self) -> Response:
        headers = {"Retry-After": self.retry_after} if self.retry_after is not None else None
        body = {"code": self.code, "message": self.message}
        return json_response(body, status=self.status, headers=headers)


_HUNDRED = Decimal(100)
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


def trade_json(trade: Trade) -> dict[str, Any]:
    """Serialise a trade as LN Markets v3 does (camelCase, 0 for an unset level).

    ``closeReason`` is an addition of the mock: the lnmarkets-sdk v3 trade models have no such
    field.
    """
    closed_at = iso_time(trade.closed_ms) if trade.closed_ms is not None else None
    return {
        "id": trade.id,
        "type": "market",
        "side": trade.side.value,
        "quantity": trade.quantity_usd,
        "margin": trade.margin_sats,
        "leverage": trade.leverage,
        "price": trade.entry_price,
        "entryPrice": trade.entry_price,
        "liquidation": trade.liquidation_price or 0,
        "maintenanceMargin": trade.maintenance_margin_sats,
        "openingFee": trade.opening_fee_sats,
        "closingFee": trade.closing_fee_sats,
        "stoploss": trade.stoploss_price or 0,
        "stoplossTrailingDistance": _trailing_percent(trade),
        "takeprofit": trade.takeprofit_price or 0,
        "exitPrice": trade.exit_price,
        "pl": trade.pnl_sats,
        "sumFundingFees": 0,
        "open": trade.status is TradeStatus.OPEN,
        "running": trade.status is TradeStatus.RUNNING,
        "closed": trade.status is TradeStatus.CLOSED,
        "canceled": trade.status is TradeStatus.CANCELED,
        "createdAt": iso_time(trade.created_ms),
        "filledAt": iso_time(trade.created_ms),
        "closedAt": closed_at,
        "closeReason": trade.close_reason.value if trade.close_reason else None,
    }


def cross_position_json(position: CrossPosition) -> dict[str, Any]:
    """Serialise a cross margin position with the v3 field names, ``quantity`` signed.

    The fields are those of the FuturesCrossPosition model of lnmarkets-sdk 0.0.19 that the paper
    venue tracks. ``margin`` is the cross balance and ``totalPl`` the realised P&L.
    ``runningMargin`` and ``deltaPl`` are left out because that model names them without saying
    what they contain.
    """
    return {
        "id": position.id,
        "quantity": position.quantity_usd,
        "entryPrice": position.entry_price,
        "leverage": position.leverage,
        "margin": position.margin_sats,
        "initialMargin": position.initial_margin_sats,
        "maintenanceMargin": position.maintenance_margin_sats,
        "liquidation": position.liquidation_price,
        "totalPl": position.total_pl_sats,
        "tradingFees": position.trading_fees_sats,
        "fundingFees": 0,
        "updatedAt": iso_time(position.updated_ms),
    }


def cross_order_json(fill: CrossOrder, client_id: str | None = None) -> dict[str, Any]:
    """Serialise a filled cross margin market order as the v3 filled-order model does."""
    filled_at = iso_time(fill.filled_ms)
    return {
        "id": fill.id,
        "type": "market",
        "side": fill.side.value,
        "quantity": fill.quantity_usd,
        "price": fill.price,
        "tradingFee": fill.trading_fee_sats,
        "open": False,
        "filled": True,
        "canceled": False,
        "createdAt": filled_at,
        "filledAt": filled_at,
        "clientId": client_id,
    }


def _trailing_percent(trade: Trade) -> Decimal:
    """Return the trailing distance as a percentage of the best price since it was set.

    The stop of a long sits the distance below the best price, and of a short above it.
    """
    distance = trade.trailing_stoploss_usd
    if distance is None or trade.stoploss_price is None:
        return Decimal(0)
    best_price = trade.stoploss_price + (distance if trade.side is Side.BUY else -distance)
    return (distance * _HUNDRED / best_price).quantize(Decimal("0.00000001"))


def _candle_json(start_ms: int, prices: list[Decimal]) -> dict[str, Any]:
    return {
        "time": iso_time(start_ms),
        "open": prices[0],
        "high": max(prices),
        "low": min(prices),
        "close": prices[-1],
        "volume": 0,
    }


def iso_time(time_ms: int) -> str:
    """Return epoch milliseconds as an ISO 8601 UTC time with milliseconds."""
    moment = datetime.fromtimestamp(time_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """Return ``data`` as JSON, Decimals written as exact numbers."""
    return Response(
        encode_json(data), status_code=status, headers=headers, media_type="application/json"
    )


class MockExchange:
    """The mock server's state: the venue, registered API keys, faults and the request log."""

    def __init__(self, venue: PaperVenue, *, timestamp_window_ms: int = TIMESTAMP_WINDOW_MS):
        self.venue = venue
        self.faults = MockFaults()
        self.timestamp_window_ms = timestamp_window_ms
        self.requests: list[RequestRecord] = []
        self._accounts: dict[str, _Account] = {}
        self._venue_routes = VenueRoutes(venue, self.server_now_ms)
        self.app = Starlette(routes=self._api_routes() + self._admin_routes())

    def register(
        self,
        account_id: str,
        key: str,
        secret: str,
        passphrase: str,
        balance_sats: int | None = None,
    ) -> None:
        """Accept ``key`` for ``account_id``, and create the account if ``balance_sats`` is set."""
        if balance_sats is not None:
            self.venue.create_account(account_id, balance_sats)
        self._accounts[key] = _Account(account_id, secret, passphrase)

    def account_for_key(self, key: str) -> _Account | None:
        """Return the account registered under API key ``key``, if any."""
        return self._accounts.get(key)

    def set_price(self, price: Decimal, time_ms: int | None = None) -> None:
        """Move the venue's price (USD per BTC), filling every crossed level."""
        self._venue_routes.set_price(price, time_ms if time_ms is not None else wall_clock_ms())

    def server_now_ms(self) -> int:
        """Return the server's clock in epoch milliseconds, skewed by ``faults.clock_skew_ms``."""
        return wall_clock_ms() + self.faults.clock_skew_ms

    def requests_for(self, account_id: str) -> list[RequestRecord]:
        return [record for record in self.requests if record.account_id == account_id]

    # Routing

    def _api_routes(self) -> list[Route]:
        routes = []
        for method, path, handler, kind in self._venue_routes.table():
            endpoint = self._endpoint(handler, kind)
            routes.append(Route(f"/v3{path}", endpoint, methods=[method]))
        return routes

    def _endpoint(
        self, handler: Callable[[Any], Awaitable[Any]], kind: str
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            record = RequestRecord(request.method, request.url.path, time.monotonic())
            self.requests.append(record)
            try:
                response = await self._respond(request, record, handler, kind)
            except MockError as exc:
                response = exc.response()
            record.status = response.status_code
            record.retry_after = response.headers.get("retry-after")
            record.responded_s = time.monotonic()
            return response

        return endpoint

    async def _respond(
        self, request: Request, record: RequestRecord, handler: Callable, kind: str
    ) -> Response:
        if self.faults.latency_s > 0:
            await asyncio.sleep(self.faults.latency_s)
        body = await request.body()
        account_id = None
        if kind != "public":
            account_id = self._authenticate(request, body, record)
        self._inject_faults(account_id)
        if kind == "read":
            self._venue_routes.liquidate_pending(account_id, self.faults.liquidate_before_read)

        call = self._venue_routes.call(account_id, request, body)
        try:
            result = await handler(call)
        except _MAPPED_ERRORS as exc:
            raise await self._error_for(exc) from exc
        return json_response(result)

    async def _error_for(self, exc: Exception) -> MockError:
        status, code = self._venue_routes.status_for(exc)
        if code == "gateway_timeout":
            await self.faults.hold()
        return MockError(status, code, str(exc))

    # Checks

    def _authenticate(self, request: Request, body: bytes, record: RequestRecord) -> str:
        headers = request.headers
        account = self._accounts.get(headers.get(KEY_HEADER, ""))
        if account is None:
            raise MockError(401, "invalid_credentials", "the API key is unknown")
        record.account_id = account.account_id

        passphrase = headers.get(PASSPHRASE_HEADER, "")
        if not hmac.compare_digest(passphrase.encode(), account.passphrase.encode()):
            raise MockError(401, "invalid_credentials", "the passphrase does not match the key")
        timestamp_ms = self._timestamp_ms(headers.get(TIMESTAMP_HEADER, ""))
        query = request.scope["query_string"].decode("latin-1")
        params = signed_params(request.method, query, body)
        signature = headers.get(SIGNATURE_HEADER, "")
        if not verify(
            account.secret, timestamp_ms, request.method, request.url.path, params, signature
        ):
            raise MockError(401, "invalid_signature", "the signature does not match the request")
        return account.account_id

    def _timestamp_ms(self, header: str) -> int:
        if not header.isdigit():
            raise MockError(401, "invalid_timestamp", f"the timestamp {header!r} is not an int")
        timestamp_ms = int(header)
        drift_ms = timestamp_ms - self.server_now_ms()
        if abs(drift_ms) > self.timestamp_window_ms:
            raise MockError(
                401,
                "timestamp_out_of_window",
                f"the timestamp is {drift_ms} ms from the server's clock, "
                f"outside the window of {self.timestamp_window_ms} ms",
            )
        return timestamp_ms

    def _inject_faults(self, account_id: str | None) -> None:
        if account_id is not None:
            retry_after_s = self.faults.throttle(account_id)
            if retry_after_s is not None:
                message = f"too many requests for account {account_id!r}"
                raise MockError(429, "rate_limited", message, str(retry_after_s))
        retry_after = self.faults.take_rate_limit()
        if retry_after is not None:
            raise MockError(429, "rate_limited", "too many requests (injected)", retry_after)
        status = self.faults.take_error_status()
        if status is not None:
            raise MockError(status, "service_unavailable", f"injected HTTP {status}")

    # Administration

    def _admin_routes(self) -> list[Route]:
        return [
            Route("/_mock/accounts", self._admin_account, methods=["POST"]),
            Route("/_mock/price", self._admin_price, methods=["POST"]),
            Route("/_mock/faults", self._admin_faults, methods=["POST"]),
            Route("/_mock/reset", self._admin_reset, methods=["POST"]),
            Route("/_mock/requests", self._admin_requests, methods=["GET"]),
        ]

    async def _admin_account(self, request: Request) -> Response:
        async def action(data: dict) -> Any:
            balance = field_value(data, "balance_sats", None)
            fields = [str(field_value(data, name)) for name in _ACCOUNT_FIELDS]
            self.register(*fields, balance_sats=int(balance) if balance is not None else None)
            return {"account_id": fields[0]}

        return await _admin_action(request, action)

    async def _admin_price(self, request: Request) -> Response:
        async def action(data: dict) -> Any:
            time_ms = field_value(data, "time_ms", None)
            self.set_price(
                decimal_field(data, "price"), to_time_ms(time_ms, "time_ms") if time_ms else None
            )
            return {"price": self.venue.price}

        return await _admin_action(request, action)

    async def _admin_faults(self, request: Request) -> Response:
        async def action(data: dict) -> Any:
            for method in data.pop("fail_after_apply_once", []):
                self.venue.faults.fail_after_apply_once(method)
            for method in data.pop("fail_before_apply_once", []):
                self.venue.faults.fail_before_apply_once(method)
            self.faults.update(data)
            return {"faults": _fault_summary(self.faults)}

        return await _admin_action(request, action)

    async def _admin_reset(self, request: Request) -> Response:
        self.faults.release_held()
        self.faults = MockFaults()
        self.requests.clear()
        return json_response({"reset": True})

    async def _admin_requests(self, request: Request) -> Response:
        return json_response([_record_json(record) for record in self.requests])


_ACCOUNT_FIELDS = ("account_id", "key", "secret", "passphrase")


async def _admin_action(request: Request, action: Callable[[dict], Awaitable[Any]]) -> Response:
    try:
        data = decode_json(await request.body())
        if not isinstance(data, dict):
            raise InvalidExchangeDataError("the body must be a JSON object")
        return json_response(await action(data))
    except (InvalidConfigError, InvalidExchangeDataError, ValueError, TypeError) as exc:
        return json_response({"code": "invalid_request", "message": str(exc)}, status=400)


def _fault_summary(faults: MockFaults) -> dict[str, Any]:
    summary = {name: getattr(faults, name) for name in faults.__dataclass_fields__}
    summary = {name: value for name, value in summary.items() if not name.startswith("_")}
    summary["liquidate_before_read"] = sorted(faults.liquidate_before_read)
    return {name: _json_safe(value) for name, value in summary.items()}


def _record_json(record: RequestRecord) -> dict[str, Any]:
    return {name: _json_safe(value) for name, value in asdict(record).items()}


def _json_safe(value: Any) -> Any:
    """Return time values in seconds as Decimals, since floats are not encoded."""
    return Decimal(repr(value)) if isinstance(value, float) else value


# Running the server


@asynccontextmanager
async def run_mock_exchange(
    target: PaperVenue | MockExchange, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``target`` on ``host`` (loopback only) in this event loop and yield the base URL.

    ``port=0`` picks a free ephemeral port. The server stops, and held replies are released,
    when the context exits.
    """
    require_loopback(host)
    mock = target if isinstance(target, MockExchange) else MockExchange(target)
    config = uvicorn.Config(
        mock.app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        bound_port = await _wait_started(server, task)
        yield f"http://{host}:{bound_port}"
    finally:
        mock.faults.release_held()
        server.should_exit = True
        await task


async def _wait_started(server: uvicorn.Server, task: asyncio.Task) -> int:
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the mock exchange stopped before it started listening")
        await asyncio.sleep(0.01)
    return server.servers[0].sockets[0].getsockname()[1]


def require_loopback(host: str) -> None:
    if host in _LOOPBACK_NAMES:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidConfigError("host", f"{host!r} is not a loopback address. Use 127.0.0.1")


__all__ = [
    "MockError",
    "MockExchange",
    "RequestRecord",
    "require_loopback",
    "run_mock_exchange",
]
