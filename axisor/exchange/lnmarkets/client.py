"""The LN Markets v3 REST client: one account, the ``Exchange`` protocol on httpx.

Every request goes through ``LNMarketsClient._call``, which applies the one retry policy:

- GET requests are retried, at most ``get_attempts`` times in all with exponential backoff,
  when the exchange or the network reports that nothing was done (``RetryLaterError``).
- POST, PUT and DELETE requests are never retried. The only resend is after the exchange
  rejected a request for its timestamp: a rejected request was not applied, so the client
  measures the clock again, signs again and sends it once more.

``_error_for_status`` and ``_error_for_transport`` map every failure to the exception tree of
``axisor.errors`` by what the caller must do next.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import structlog

from axisor.db.crypto import Credentials, mask_key
from axisor.errors import (
    AuthenticationError,
    ExchangeError,
    InsufficientFundsError,
    InvalidConfigError,
    InvalidExchangeDataError,
    NotSupportedError,
    RejectedError,
    RetryLaterError,
    StateUnknownError,
    TradeNotFoundError,
)
from axisor.exchange.lnmarkets.clock import ServerClock
from axisor.exchange.lnmarkets.parse import (
    Candle,
    CrossPosition,
    decode_json,
    encode_json,
    field_value,
    parse_candles,
    parse_cross_position,
    parse_server_time_ms,
    parse_ticker,
    parse_trade,
    parse_trades,
    sats_field,
    trailing_percent,
)
from axisor.exchange.lnmarkets.ratelimit import PUBLIC_KEY, RateLimiter, key_fingerprint
from axisor.exchange.lnmarkets.signing import signed_headers, signed_params
from axisor.exchange.math import quantize_price
from axisor.exchange.models import Balance, Capabilities, OpenTradeRequest, Side, Ticker, Trade

log = structlog.get_logger("axisor.exchange.lnmarkets")

MAINNET_BASE_URL = "https://api.lnmarkets.com"
TESTNET_BASE_URL = "https://api.testnet4.lnmarkets.com"
BASE_URLS = {"mainnet": MAINNET_BASE_URL, "testnet": TESTNET_BASE_URL, "testnet4": TESTNET_BASE_URL}
API_PREFIX = "/v3"

# NOTE: the code LN Markets returns for a stale timestamp is not documented where we looked.
# This is the code the mock server uses, and any 401 whose message names the timestamp is
# treated the same way.
TIMESTAMP_REJECTED_CODE = "timestamp_out_of_window"

LNMARKETS_CAPABILITIES = Capabilities(
    name="lnmarkets",
    isolated=True,
    cross=True,
    partial_reduce_isolated=False,
    partial_reduce_cross=True,
    exchange_stoploss=True,
    exchange_takeprofit=True,
    trailing_stoploss=True,
)

# Statuses that mean the request was not processed, whatever the method.
_NOT_APPLIED_STATUSES = frozenset({429, 503})
# Gateway failures: nothing to undo for a read, but a change may have reached the exchange.
_GATEWAY_STATUSES = frozenset({502, 504})
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_FUNDS_WORDS = ("insufficient", "not enough", "balance")
_DEFAULT_RETRY_AFTER_S = 1.0
_MAX_MESSAGE_CHARS = 300


@dataclass(frozen=True, slots=True)
class _Request:
    """One API call; ``route`` follows the ``/v3`` prefix and ``body`` is the exact bytes sent."""

    method: str
    route: str
    query: str = ""
    body: bytes = b""
    authenticated: bool = True
    trade_id: str | None = None

    def describe(self) -> str:
        return f"{self.method} {API_PREFIX}{self.route}"


_TIME_REQUEST = _Request("GET", "/time", authenticated=False)


def base_url_for(network: str) -> str:
    """Return the default base URL of ``network`` (mainnet, testnet or testnet4)."""
    try:
        return BASE_URLS[network]
    except KeyError as exc:
        raise InvalidConfigError(
            "network", f"{network!r} is not a network. Pass one of {sorted(BASE_URLS)}"
        ) from exc


class LNMarketsClient:
    """One LN Markets account through the v3 REST API.

    ``base_url`` is the scheme and host (the ``/v3`` prefix is added), or None for the default
    host of ``credentials.network``. ``limiter`` shares the rate limits with other processes.
    ``transport`` replaces the network, for tests.
    """

    capabilities = LNMARKETS_CAPABILITIES

    def __init__(
        self,
        base_url: str | None,
        credentials: Credentials | None,
        *,
        limiter: RateLimiter | None = None,
        timeout_s: float = 10.0,
        clock: ServerClock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        get_attempts: int = 3,
        backoff_s: float = 0.25,
    ) -> None:
        if base_url is None:
            base_url = base_url_for(credentials.network if credentials else "mainnet")
        self.base_url = base_url.rstrip("/")
        self._path_prefix = urlsplit(self.base_url).path + API_PREFIX
        self._credentials = credentials
        self._limiter = limiter
        self._clock = clock or ServerClock()
        self._get_attempts = max(get_attempts, 1)
        self._backoff_s = backoff_s
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, transport=transport, follow_redirects=False
        )

    def __repr__(self) -> str:
        key = mask_key(self._credentials.key) if self._credentials else None
        return f"LNMarketsClient(base_url={self.base_url!r}, key={key!r})"

    async def __aenter__(self) -> LNMarketsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def clock(self) -> ServerClock:
        return self._clock

    # Public data

    async def get_server_time_ms(self) -> int:
        """Return the exchange's clock in epoch milliseconds (GET /time)."""
        return parse_server_time_ms(await self._call(_TIME_REQUEST))

    async def sync_clock(self) -> int:
        """Measure the offset of the exchange's clock and return it in milliseconds.

        Each attempt times one GET /time round trip, so a retry's delay never counts.
        """

        async def fetch_server_ms() -> int:
            return parse_server_time_ms(await self._call_once(_TIME_REQUEST))

        return await self._retrying(
            _TIME_REQUEST, self._get_attempts, lambda: self._clock.measure(fetch_server_ms)
        )

    async def get_ticker(self) -> Ticker:
        data = await self._call(_Request("GET", "/futures/ticker", authenticated=False))
        return parse_ticker(data, self._clock.now_ms())

    async def get_candles(
        self, from_ms: int, resolution: str = "1m", limit: int = 100
    ) -> list[Candle]:
        """Return up to ``limit`` candles of ``resolution`` starting at ``from_ms``."""
        query = urlencode({"from": _iso_time(from_ms), "range": resolution, "limit": limit})
        request = _Request("GET", "/futures/candles", query=query, authenticated=False)
        return parse_candles(await self._call(request))

    # Account

    async def get_account(self) -> dict[str, Any]:
        """Return the account object as sent, with Decimal numbers."""
        return await self._call(_Request("GET", "/account"))

    async def get_balance(self) -> Balance:
        """Return the free balance and the total with margin and reserve of running trades.

        This reads GET /account and then the running trades, so it costs two requests.
        """
        free_sats = sats_field(await self.get_account(), "balance")
        locked_sats = sum(
            trade.margin_sats + trade.maintenance_margin_sats
            for trade in await self.get_running_trades()
        )
        return Balance(free_sats=free_sats, total_sats=free_sats + locked_sats)

    # Isolated trades: reads

    async def get_running_trades(self) -> list[Trade]:
        return parse_trades(await self._call(_Request("GET", "/futures/isolated/trades/running")))

    async def get_open_trades(self) -> list[Trade]:
        """Return the limit orders not yet filled."""
        return parse_trades(await self._call(_Request("GET", "/futures/isolated/trades/open")))

    async def get_closed_trades(self, limit: int = 100) -> list[Trade]:
        query = urlencode({"limit": limit})
        request = _Request("GET", "/futures/isolated/trades/closed", query=query)
        return parse_trades(await self._call(request))

    # Isolated trades: changes, never retried

    async def open_trade(self, request: OpenTradeRequest) -> Trade:
        return parse_trade(await self._post("/futures/isolated/trade", _order_body(request)))

    async def close_trade(self, trade_id: str) -> Trade:
        return await self._trade_post("/futures/isolated/trade/close", trade_id, {})

    async def cancel_trade(self, trade_id: str) -> Trade:
        """Cancel a limit order that is not filled yet."""
        return await self._trade_post("/futures/isolated/trade/cancel", trade_id, {})

    async def add_margin(self, trade_id: str, amount_sats: int) -> Trade:
        body = {"amount": _whole_sats(amount_sats)}
        return await self._trade_post("/futures/isolated/trade/add-margin", trade_id, body)

    async def cash_in(self, trade_id: str, amount_sats: int) -> Trade:
        body = {"amount": _whole_sats(amount_sats)}
        return await self._trade_post("/futures/isolated/trade/cash-in", trade_id, body)

    async def set_stoploss(
        self, trade_id: str, price: Decimal | None, trailing_usd: Decimal | None = None
    ) -> Trade:
        """Set a fixed stop (``price``), a trailing one (``trailing_usd``), or clear it (both None).

        A trailing stop starts at ``trailing_usd`` from the current price, which the client
        reads from the ticker first because the API takes the distance as a percentage.
        """
        route = "/futures/isolated/trade/stoploss"
        if price is None and trailing_usd is None:
            return await self._trade_delete(route, trade_id)
        if trailing_usd is None:
            return await self._trade_put(route, trade_id, {"value": quantize_price(price)})
        if price is not None:
            raise NotSupportedError(
                "LN Markets starts a trailing stop from the current price. "
                "Pass price=None with trailing_usd"
            )
        # NOTE: the unit of a trailing "value" (percentage of the price) is inferred from the
        # lnmarkets-sdk 0.0.x models, which give a range of 0.001 to 10; it is not confirmed.
        last_price = (await self.get_ticker()).last_price
        body = {
            "value": trailing_percent(quantize_price(trailing_usd), last_price),
            "mode": "trailing",
        }
        return await self._trade_put(route, trade_id, body)

    async def set_takeprofit(self, trade_id: str, price: Decimal | None) -> Trade:
        route = "/futures/isolated/trade/takeprofit"
        if price is None:
            return await self._trade_delete(route, trade_id)
        return await self._trade_put(route, trade_id, {"value": quantize_price(price)})

    # Cross margin

    async def get_cross_position(self) -> CrossPosition:
        return parse_cross_position(await self._call(_Request("GET", "/futures/cross/position")))

    async def open_cross_order(
        self, side: Side, quantity_usd: int, price: Decimal | None = None
    ) -> dict[str, Any]:
        """Send a market (``price`` None) or limit order on the cross margin position."""
        body: dict[str, Any] = {"type": "market" if price is None else "limit"}
        body |= {"side": Side(side).value, "quantity": _whole_sats(quantity_usd, "quantity_usd")}
        if price is not None:
            body["price"] = quantize_price(price)
        return await self._post("/futures/cross/order", body)

    async def close_cross_position(self) -> dict[str, Any]:
        return await self._post("/futures/cross/position/close", None)

    # Plumbing

    async def _post(self, route: str, body: dict[str, Any] | None) -> Any:
        content = b"" if body is None else encode_json(body)
        return await self._call(_Request("POST", route, body=content))

    async def _trade_post(self, route: str, trade_id: str, fields: dict[str, Any]) -> Trade:
        body = encode_json({"id": trade_id, **fields})
        return parse_trade(await self._call(_Request("POST", route, body=body, trade_id=trade_id)))

    async def _trade_put(self, route: str, trade_id: str, fields: dict[str, Any]) -> Trade:
        body = encode_json({"id": trade_id, **fields})
        return parse_trade(await self._call(_Request("PUT", route, body=body, trade_id=trade_id)))

    async def _trade_delete(self, route: str, trade_id: str) -> Trade:
        query = urlencode({"id": trade_id})
        return parse_trade(
            await self._call(_Request("DELETE", route, query=query, trade_id=trade_id))
        )

    async def _call(self, request: _Request) -> Any:
        """Send ``request`` under the retry policy and return its decoded JSON."""
        attempts = self._get_attempts if request.method == "GET" else 1
        return await self._retrying(request, attempts, lambda: self._call_once(request))

    async def _retrying(
        self, request: _Request, attempts: int, operation: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Run ``operation`` up to ``attempts`` times while it raises a plain RetryLaterError."""
        for attempt in range(1, attempts + 1):
            try:
                return await operation()
            except RetryLaterError as exc:
                attempts_left = attempts - attempt
                if attempts_left == 0 or type(exc) is not RetryLaterError:
                    raise
                delay_s = max(self._backoff_s * 2 ** (attempt - 1), exc.retry_after_s or 0)
                log.warning(
                    "lnm.request.retry",
                    request=request.describe(),
                    attempts_left=attempts_left,
                    delay_s=delay_s,
                    error=str(exc),
                )
                await asyncio.sleep(delay_s)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _call_once(self, request: _Request) -> Any:
        if request.authenticated and not self._clock.measured:
            await self.sync_clock()
        response = await self._send(request)
        if request.authenticated and _is_timestamp_rejection(response):
            log.warning(
                "lnm.clock.rejected", request=request.describe(), offset_ms=self._clock.offset_ms
            )
            await self.sync_clock()
            response = await self._send(request)
        if not response.is_success:
            raise _error_for_status(request, response)
        return decode_json(response.content) if response.content else None

    async def _send(self, request: _Request) -> httpx.Response:
        limiter_key = self._limiter_key(request)
        if self._limiter is not None:
            await self._limiter.acquire(limiter_key)

        path = self._path_prefix + request.route
        url = f"{path}?{request.query}" if request.query else path
        headers = self._headers(request, path)
        started_s = time.monotonic()
        try:
            response = await self._http.request(
                request.method, url, content=request.body or None, headers=headers
            )
        except httpx.TransportError as exc:
            raise _error_for_transport(request, exc) from exc

        log.debug(
            "lnm.response",
            request=request.describe(),
            status=response.status_code,
            duration_ms=round((time.monotonic() - started_s) * 1000),
        )
        if response.status_code == 429 and self._limiter is not None:
            retry_after_s = _retry_after_s(response) or _DEFAULT_RETRY_AFTER_S
            await self._limiter.block(limiter_key, retry_after_s)
        return response

    def _headers(self, request: _Request, path: str) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if request.body:
            headers["Content-Type"] = "application/json"
        if request.authenticated:
            if self._credentials is None:
                raise AuthenticationError(
                    f"{request.describe()} needs credentials. Build the client with them"
                )
            params = signed_params(request.method, request.query, request.body)
            timestamp_ms = self._clock.now_ms()
            headers |= signed_headers(self._credentials, request.method, path, params, timestamp_ms)
        return headers

    def _limiter_key(self, request: _Request) -> str:
        if request.authenticated and self._credentials is not None:
            return key_fingerprint(self._credentials.key)
        return PUBLIC_KEY


# Request bodies


def _order_body(request: OpenTradeRequest) -> dict[str, Any]:
    if (request.quantity_usd is None) == (request.margin_sats is None):
        raise RejectedError("give exactly one of quantity_usd and margin_sats")
    body: dict[str, Any] = {
        "type": "market" if request.price is None else "limit",
        "side": Side(request.side).value,
        "leverage": Decimal(request.leverage),
    }
    if request.quantity_usd is not None:
        body["quantity"] = _whole_sats(request.quantity_usd, "quantity_usd")
    else:
        body["margin"] = _whole_sats(request.margin_sats, "margin_sats")
    levels = (("price", request.price), ("stoploss", request.stoploss_price))
    for name, level in (*levels, ("takeprofit", request.takeprofit_price)):
        if level is not None:
            body[name] = quantize_price(level)
    return body


def _whole_sats(amount: int, name: str = "amount_sats") -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
        raise InvalidConfigError(name, f"{amount!r} is not a whole number of at least 1")
    return amount


def _iso_time(time_ms: int) -> str:
    moment = datetime.fromtimestamp(time_ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Error mapping: the one place where HTTP and network failures become axisor errors


def _error_for_transport(request: _Request, exc: httpx.TransportError) -> ExchangeError:
    where = request.describe()
    if isinstance(exc, _NOT_SENT_ERRORS):
        return RetryLaterError(
            f"{where} failed before it was sent ({type(exc).__name__}: {exc}). "
            "Nothing was applied. Send it again later"
        )
    return StateUnknownError(
        f"{where} was sent but no complete reply arrived ({type(exc).__name__}: {exc}). "
        "It may have been applied. Re-read the account before acting again"
    )


def _error_for_status(request: _Request, response: httpx.Response) -> ExchangeError:
    status = response.status_code
    code, message = _error_details(response)
    where = f"{request.describe()} returned HTTP {status} ({code or 'no code'}: {message})"

    if status in _NOT_APPLIED_STATUSES or (status in _GATEWAY_STATUSES and request.method == "GET"):
        retry_after_s = _retry_after_s(response)
        return RetryLaterError(f"{where}. Nothing was applied. Send it again later", retry_after_s)
    if status in (401, 403):
        return AuthenticationError(f"{where}. Check the API key, secret, passphrase and scopes")
    if status == 404 and request.trade_id is not None:
        return TradeNotFoundError(
            f"{where}: trade {request.trade_id!r} is not running. Re-read the trades", code
        )
    if 400 <= status < 500:
        return _rejection(where, code, message)
    return StateUnknownError(
        f"{where}. The exchange failed while handling it and may have applied it. "
        "Re-read the account before acting again"
    )


def _rejection(where: str, code: str | None, message: str) -> RejectedError:
    text = f"{code or ''} {message}".lower()
    if any(word in text for word in _FUNDS_WORDS):
        return InsufficientFundsError(f"{where}. Deposit more or request less", code)
    return RejectedError(f"{where}. Do not send it again unchanged", code)


def _error_details(response: httpx.Response) -> tuple[str | None, str]:
    """Return the error code and message of an error reply, JSON or plain text."""
    try:
        data = decode_json(response.content)
    except InvalidExchangeDataError:
        data = None
    if isinstance(data, dict):
        code = field_value(data, "code", None)
        message = field_value(data, "message", None) or field_value(data, "error", "")
        return (str(code) if code is not None else None), str(message)[:_MAX_MESSAGE_CHARS]
    return None, response.text[:_MAX_MESSAGE_CHARS] or response.reason_phrase


def _is_timestamp_rejection(response: httpx.Response) -> bool:
    if response.status_code != 401:
        return False
    code, message = _error_details(response)
    return code == TIMESTAMP_REJECTED_CODE or "timestamp" in message.lower()


def _retry_after_s(response: httpx.Response) -> float | None:
    """Return Retry-After in seconds, given as seconds or as an HTTP date, or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = Decimal(value)
    except ArithmeticError:
        return _retry_after_date_s(value)
    return max(float(seconds), 0.0) if seconds.is_finite() else None


def _retry_after_date_s(value: str) -> float | None:
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((moment - datetime.now(UTC)).total_seconds(), 0.0)
