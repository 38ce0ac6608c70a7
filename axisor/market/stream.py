"""A client of the LN Markets Stream API v1: JSON-RPC 2.0 over one WebSocket.

Protocol, as LN Markets' own SDKs (TypeScript and Python, ``stream/v1``) implement it:

- Requests are ``{"jsonrpc": "2.0", "id": "<string>", "method": ..., "params": ...}`` and
  replies carry the same ``id`` with ``result`` or ``error`` (``code``, ``message``).
- ``authenticate`` takes ``key``, ``passphrase``, ``timestamp`` (epoch ms), a random ``nonce``
  and ``signature = base64(HMAC-SHA256(secret, f"{timestamp}{nonce}"))``.
- ``subscribe`` takes ``{"topics": [...]}``. ``ping`` returns ``"pong"``.
- Topic data arrives as ``{"method": "subscription", "params": {"topic": ..., "data": ...}}``.

``StreamClient`` keeps one connection open. It delivers prices (``PriceUpdate``) to one
callback and, with credentials, the account's isolated trade events to another. It pings
after ``idle_ping_s`` of silence and treats a missing pong as a dead connection. It reconnects
with bounded exponential backoff and jitter, and while disconnected it polls the REST ticker
every ``poll_interval_s`` so that prices keep arriving.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Literal

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from axisor.db.crypto import Credentials, mask_key
from axisor.errors import (
    AuthenticationError,
    ExchangeError,
    InvalidConfigError,
    InvalidExchangeDataError,
    RejectedError,
)
from axisor.exchange.lnmarkets.clock import wall_clock_ms
from axisor.exchange.lnmarkets.parse import (
    decimal_field,
    decode_json,
    encode_json,
    field_value,
    parse_trade,
    sats_field,
    side_field,
    time_ms_field,
)
from axisor.exchange.math import liquidation_price
from axisor.exchange.models import CloseReason, Ticker, Trade, TradeEvent, TradeStatus

log = structlog.get_logger("axisor.market.stream")

# websockets (17.x) logs every frame at DEBUG, and the authenticate frame contains the passphrase.
# Its frames go to this logger, which stays at INFO whatever the root level is.
WIRE_LOGGER = logging.getLogger("axisor.market.stream.wire")
WIRE_LOGGER.setLevel(logging.INFO)

MAINNET_STREAM_URL = "wss://stream.lnmarkets.com/v1"
SIGNET_STREAM_URL = "wss://stream.signet.lnmarkets.com/v1"

LAST_PRICE_TOPIC = "futures/inverse/btc_usd/lastPrice"
TICKER_TOPIC = "futures/inverse/btc_usd/ticker"
INDEX_TOPIC = "futures/inverse/btc_usd/index"
ISOLATED_TRADES_TOPIC = "futures/inverse/btc_usd/isolated/trades"
PRICE_TOPICS = (LAST_PRICE_TOPIC, TICKER_TOPIC)

AUTHENTICATE_METHOD = "authenticate"
SUBSCRIBE_METHOD = "subscribe"
PING_METHOD = "ping"
NOTIFICATION_METHOD = "subscription"

# Isolated trade events by the ``event`` field. LN Markets sends "filled" and "liquidation";
# "running" and "liquidated" are accepted as well.
_TRADE_STATUS_EVENTS = {
    "open": TradeStatus.OPEN,
    "filled": TradeStatus.RUNNING,
    "running": TradeStatus.RUNNING,
}
_CLOSE_EVENTS = {
    "closed": CloseReason.CLOSED,
    "liquidation": CloseReason.LIQUIDATED,
    "liquidated": CloseReason.LIQUIDATED,
    "stoploss": CloseReason.STOPLOSS,
    "takeprofit": CloseReason.TAKEPROFIT,
}
_STATUS_FLAGS = {TradeStatus.OPEN: "open", TradeStatus.RUNNING: "running"}

Mode = Literal["stream", "polling"]
STREAM_MODE: Mode = "stream"
POLLING_MODE: Mode = "polling"


@dataclass(frozen=True, slots=True)
class PriceUpdate:
    """One BTC price in USD per BTC.

    ``time_ms`` is the exchange's epoch milliseconds and ``received_ns`` the local wall clock in
    epoch nanoseconds when it arrived. ``source`` is "stream", "poll" or "replay".
    """

    price: Decimal
    time_ms: int
    received_ns: int
    source: str = "stream"


@dataclass(frozen=True)
class StreamAccount:
    """The account whose private topics the client subscribes to."""

    account_id: str
    credentials: Credentials


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Timings of a StreamClient, all in seconds."""

    idle_ping_s: float = 10.0  # send a ping after this much silence
    pong_timeout_s: float = 5.0  # a ping without a reply this long means a dead connection
    request_timeout_s: float = 10.0  # for authenticate and subscribe
    open_timeout_s: float = 10.0  # for the TCP and WebSocket handshakes
    backoff_base_s: float = 0.5  # the first reconnect waits between half this and this
    backoff_max_s: float = 30.0  # no reconnect waits longer
    poll_interval_s: float = 2.0  # REST ticker polling period while disconnected

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not value > 0:
                raise InvalidConfigError(item.name, f"is {value!r}, but must be above 0 seconds")
        if self.backoff_max_s < self.backoff_base_s:
            raise InvalidConfigError(
                "backoff_max_s", f"{self.backoff_max_s} is below backoff_base_s"
            )


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """Health of a StreamClient.

    ``gap_s`` is the time since the last stream message while disconnected, and 0 while
    connected. ``reconnects`` counts connections made after the first one. ``failed_attempts``
    counts the disconnects and failed attempts since the last successful subscribe.
    ``last_message_ms`` is local epoch milliseconds, or None before the first message.
    """

    connected: bool
    mode: Mode
    gap_s: float
    reconnects: int
    failed_attempts: int
    last_message_ms: int | None
    authenticated: bool
    last_error: str | None


PriceCallback = Callable[[PriceUpdate], Awaitable[None]]
TradeCallback = Callable[[str, Trade | TradeEvent], Awaitable[None]]
TickerPoller = Callable[[], Awaitable[Ticker]]


class _DeadConnectionError(Exception):
    """The server sent no reply to a ping in time."""


_SESSION_ERRORS = (
    AuthenticationError,
    OSError,
    TimeoutError,
    WebSocketException,
    RejectedError,
    InvalidExchangeDataError,
    _DeadConnectionError,
)


# Signing and backoff


def stream_signature(secret: str, timestamp_ms: int, nonce: str) -> str:
    """Return the base64 HMAC-SHA256 signature of ``f"{timestamp_ms}{nonce}"``."""
    message = f"{timestamp_ms}{nonce}".encode()
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def authenticate_params(credentials: Credentials, timestamp_ms: int, nonce: str) -> dict:
    """Return the params of one ``authenticate`` request."""
    return {
        "key": credentials.key,
        "passphrase": credentials.passphrase,
        "timestamp": timestamp_ms,
        "nonce": nonce,
        "signature": stream_signature(credentials.secret, timestamp_ms, nonce),
    }


def backoff_delay_s(
    attempt: int, base_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Return the wait before reconnect ``attempt`` (0 for the first).

    The ceiling doubles from ``base_s`` up to ``max_s``, and the wait is drawn uniformly between
    half the ceiling and the ceiling, so clients that lost the server together spread out.
    """
    ceiling_s = min(max_s, base_s * 2 ** min(attempt, 32))
    return (rng or random).uniform(ceiling_s / 2, ceiling_s)


# Parsing topic data


def parse_price_data(data: Any, received_ns: int) -> PriceUpdate | None:
    """Parse lastPrice or ticker data, returning None when the ticker has no last price yet."""
    last_price = field_value(data, "last_price", None)
    if last_price is None:
        return None
    price = decimal_field(data, "last_price")
    if price <= 0:
        raise InvalidExchangeDataError(f"the field 'lastPrice' is {price}, but must be above 0")
    return PriceUpdate(price, time_ms_field(data, "time"), received_ns)


def parse_trade_data(
    account_id: str, data: Any, margins_sats: dict[str, int] | None = None
) -> Trade | TradeEvent | None:
    """Parse one isolated trade event, returning None for events that change no position.

    ``open`` and ``filled`` become a ``Trade``, and closes, stop fills, take profits and
    liquidations a ``TradeEvent``. ``canceled`` and ``funding`` return None. The data may wrap
    the trade as ``{"event": ..., "trade": {...}}`` or carry the fields at the top level.
    ``margins_sats`` maps trade ids to margins seen in earlier events, for liquidations.
    """
    margins_sats = {} if margins_sats is None else margins_sats
    event = str(field_value(data, "event")).lower()
    payload = field_value(data, "trade", data)
    if event in _TRADE_STATUS_EVENTS:
        trade = _trade_from_event(payload, _TRADE_STATUS_EVENTS[event])
        margins_sats[trade.id] = trade.margin_sats
        return trade
    if event in _CLOSE_EVENTS:
        return _close_event(account_id, payload, _CLOSE_EVENTS[event], margins_sats)
    return None


def _trade_from_event(payload: Mapping[str, Any], status: TradeStatus) -> Trade:
    """Build a Trade from an open or filled event, which carries no liquidation price.

    The liquidation price is computed from quantity, entry price and margin as the venue does.
    The maintenance margin is not in the event and is left at 0.
    """
    data = dict(payload)
    data[_STATUS_FLAGS[status]] = True
    if field_value(data, "liquidation", None) is None:
        entry_price = decimal_field(data, "entry_price", None) or decimal_field(data, "price")
        level = liquidation_price(
            side_field(data), sats_field(data, "quantity"), entry_price, sats_field(data, "margin")
        )
        data["liquidation"] = level or 0
    return parse_trade(data)


def _close_event(
    account_id: str, payload: Mapping[str, Any], reason: CloseReason, margins_sats: dict[str, int]
) -> TradeEvent:
    """Build a TradeEvent. A liquidation without ``pl`` loses the whole margin."""
    trade_id = str(field_value(payload, "id"))
    margin_sats = margins_sats.pop(trade_id, None)
    default_pnl_sats = 0
    if reason is CloseReason.LIQUIDATED and margin_sats is not None:
        default_pnl_sats = -margin_sats
    # NOTE: LN Markets' liquidation event has no ``pl``. When this stream never saw the trade's
    # margin, pnl_sats is 0 and the closed trade must be re-read over REST for the real figure.
    return TradeEvent(
        account_id=account_id,
        trade_id=trade_id,
        reason=reason,
        price=decimal_field(payload, "exit_price"),
        time_ms=time_ms_field(payload, "closed_at", None) or wall_clock_ms(),
        pnl_sats=sats_field(payload, "pl", default_pnl_sats),
    )


# The client


class _Heartbeat:
    """The ping in flight on one connection, if any, with its deadline in monotonic seconds."""

    def __init__(self, settings: StreamSettings) -> None:
        self._settings = settings
        self.ping_id: str | None = None
        self._deadline_s = 0.0

    def wait_s(self) -> float:
        """Return how long to wait for the next message before acting."""
        if self.ping_id is None:
            return self._settings.idle_ping_s
        return max(self._deadline_s - time.monotonic(), 0.0)

    def sent(self, ping_id: str) -> None:
        self.ping_id = ping_id
        self._deadline_s = time.monotonic() + self._settings.pong_timeout_s

    def received(self, frame: Mapping[str, Any]) -> None:
        if self.ping_id is not None and frame.get("id") == self.ping_id:
            self.ping_id = None


class StreamClient:
    """One WebSocket connection to the Stream API, kept open until ``aclose``.

    ``on_price`` receives every new last price. With ``account``, the client authenticates and
    ``on_trade`` receives ``(account_id, Trade or TradeEvent)`` for the account's isolated
    trades. ``poll_ticker`` (such as ``LNMarketsClient.get_ticker``) is called while the
    stream is down. ``now_ms`` is the clock used for the authentication timestamp, such as
    ``ServerClock.now_ms``. Callbacks run one at a time, in the order messages arrive.
    """

    def __init__(
        self,
        url: str,
        *,
        on_price: PriceCallback | None = None,
        on_trade: TradeCallback | None = None,
        account: StreamAccount | None = None,
        poll_ticker: TickerPoller | None = None,
        settings: StreamSettings | None = None,
        now_ms: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
    ) -> None:
        if on_price is None and (account is None or on_trade is None):
            raise InvalidConfigError(
                "on_price", "give on_price, or account with on_trade, so there is a topic to read"
            )
        self.url = url
        self._on_price = on_price
        self._on_trade = on_trade
        self._account = account
        self._poll_ticker = poll_ticker if on_price is not None else None
        self._settings = settings or StreamSettings()
        self._now_ms = now_ms
        self._rng = rng or random.Random()
        self._request_ids = itertools.count(1)
        self._margins_sats: dict[str, int] = {}
        self._connected = asyncio.Event()
        self._deliver_lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self._poll_stop: asyncio.Event | None = None
        self._poll_tasks: set[asyncio.Task] = set()
        self._ever_connected = False
        self._reconnects = 0
        self._failed_attempts = 0
        self._authenticated = False
        self._last_error: str | None = None
        self._last_message_ms: int | None = None
        self._last_message_s = time.monotonic()
        self._last_price: tuple[Decimal, int] | None = None

    def __repr__(self) -> str:
        account = self._account.account_id if self._account else None
        return f"StreamClient(url={self.url!r}, account={account!r})"

    async def __aenter__(self) -> StreamClient:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start connecting in the background. Calling it again does nothing."""
        if self._task is None:
            self._last_message_s = time.monotonic()
            self._task = asyncio.create_task(self._run(), name=f"stream {self.url}")
            self._task.add_done_callback(self._log_crash)

    async def wait_connected(self, timeout_s: float) -> None:
        """Wait until the client is connected and subscribed, or raise TimeoutError."""
        async with asyncio.timeout(timeout_s):
            await self._connected.wait()

    async def aclose(self) -> None:
        """Stop the connection and the REST poller, and wait for both to end."""
        tasks = [task for task in (self._task, *self._poll_tasks) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._poll_stop = None
        self._poll_tasks.clear()
        self._set_disconnected()
        log.info("stream.closed", url=self.url)

    def status(self) -> StreamStatus:
        connected = self._connected.is_set()
        gap_s = 0.0 if connected else time.monotonic() - self._last_message_s
        polling = self._poll_stop is not None and not self._poll_stop.is_set()
        return StreamStatus(
            connected=connected,
            mode=POLLING_MODE if polling else STREAM_MODE,
            gap_s=gap_s,
            reconnects=self._reconnects,
            failed_attempts=self._failed_attempts,
            last_message_ms=self._last_message_ms,
            authenticated=self._authenticated,
            last_error=self._last_error,
        )

    def _log_crash(self, task: asyncio.Task) -> None:
        """Log an error that ended a background task, which otherwise shows only in aclose."""
        if not task.cancelled() and task.exception() is not None:
            log.error("stream.crashed", url=self.url, error=repr(task.exception()))

    # Connection life cycle

    async def _run(self) -> None:
        while True:
            try:
                await self._connect_and_read()
            except _SESSION_ERRORS as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
            self._set_disconnected()
            self._start_polling()

            delay_s = backoff_delay_s(
                self._failed_attempts,
                self._settings.backoff_base_s,
                self._settings.backoff_max_s,
                self._rng,
            )
            self._failed_attempts += 1
            log.warning(
                "stream.disconnected",
                url=self.url,
                error=self._last_error,
                retry_in_s=round(delay_s, 3),
                failed_attempts=self._failed_attempts,
            )
            await asyncio.sleep(delay_s)

    async def _connect_and_read(self) -> None:
        async with connect(
            self.url,
            open_timeout=self._settings.open_timeout_s,
            ping_interval=None,
            close_timeout=1,
            logger=WIRE_LOGGER,
        ) as websocket:
            await self._subscribe_all(websocket)
            self._set_connected()
            await self._read_until_closed(websocket)

    def _set_connected(self) -> None:
        if self._ever_connected:
            self._reconnects += 1
        self._ever_connected = True
        self._failed_attempts = 0
        self._connected.set()
        self._stop_polling()
        log.info(
            "stream.connected",
            url=self.url,
            reconnects=self._reconnects,
            authenticated=self._authenticated,
        )

    def _set_disconnected(self) -> None:
        self._connected.clear()
        self._authenticated = False

    async def _subscribe_all(self, websocket: ClientConnection) -> None:
        if self._on_price is not None:
            await self._request(websocket, SUBSCRIBE_METHOD, {"topics": list(PRICE_TOPICS)})
        if self._account is None or self._on_trade is None:
            return
        self._authenticated = await self._authenticate(websocket, self._account)
        if self._authenticated:
            await self._request(websocket, SUBSCRIBE_METHOD, {"topics": [ISOLATED_TRADES_TOPIC]})

    async def _authenticate(self, websocket: ClientConnection, account: StreamAccount) -> bool:
        """Authenticate, and return False when rejected so that a price client keeps its topics.

        The next connection tries again.
        """
        params = authenticate_params(account.credentials, self._now_ms(), secrets.token_hex(8))
        try:
            await self._request(websocket, AUTHENTICATE_METHOD, params)
        except RejectedError as exc:
            self._last_error = f"AuthenticationError: {exc}"
            log.error(
                "stream.authentication_failed",
                account_id=account.account_id,
                key=mask_key(account.credentials.key),
                error=str(exc),
            )
            if self._on_price is None:
                raise AuthenticationError(str(exc)) from exc
            return False
        return True

    async def _request(self, websocket: ClientConnection, method: str, params: Any) -> Any:
        """Send one request and read until its reply, handling notifications on the way."""
        request_id = await self._send(websocket, method, params)
        async with asyncio.timeout(self._settings.request_timeout_s):
            while True:
                frame = await self._receive(websocket)
                if frame is not None and frame.get("id") == request_id:
                    return _result(method, frame)
                if frame is not None:
                    await self._handle_frame(frame)

    async def _send(self, websocket: ClientConnection, method: str, params: Any) -> str:
        request_id = str(next(self._request_ids))
        frame = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            frame["params"] = params
        await websocket.send(encode_json(frame).decode("utf-8"))
        return request_id

    async def _receive(self, websocket: ClientConnection) -> dict | None:
        """Return the next frame as a dict, or None for a frame that is not a JSON object."""
        raw = await websocket.recv()
        self._last_message_ms = wall_clock_ms()
        self._last_message_s = time.monotonic()
        try:
            frame = decode_json(raw)
        except InvalidExchangeDataError as exc:
            log.warning("stream.invalid_frame", url=self.url, error=str(exc))
            return None
        return frame if isinstance(frame, dict) else None

    async def _read_until_closed(self, websocket: ClientConnection) -> None:
        heartbeat = _Heartbeat(self._settings)
        while True:
            try:
                frame = await asyncio.wait_for(self._receive(websocket), heartbeat.wait_s())
            except TimeoutError:
                await self._on_silence(websocket, heartbeat)
                continue
            if frame is not None:
                heartbeat.received(frame)
                await self._handle_frame(frame)

    async def _on_silence(self, websocket: ClientConnection, heartbeat: _Heartbeat) -> None:
        if heartbeat.ping_id is not None:
            raise _DeadConnectionError(
                f"no pong within {self._settings.pong_timeout_s} s of a ping"
            )
        heartbeat.sent(await self._send(websocket, PING_METHOD, None))

    # Topic data

    async def _handle_frame(self, frame: Mapping[str, Any]) -> None:
        if frame.get("method") != NOTIFICATION_METHOD:
            return  # a reply to a ping, or a frame this client does not use
        params = frame.get("params")
        if not isinstance(params, Mapping):
            log.warning("stream.invalid_notification", url=self.url, reason="params missing")
            return
        topic, data = params.get("topic"), params.get("data")
        try:
            if topic in PRICE_TOPICS:
                await self._on_price_data(data)
            elif topic == ISOLATED_TRADES_TOPIC:
                await self._on_trade_data(data)
        except InvalidExchangeDataError as exc:
            log.warning("stream.invalid_notification", url=self.url, topic=topic, error=str(exc))

    async def _on_price_data(self, data: Any) -> None:
        update = parse_price_data(data, time.time_ns())
        if update is not None:
            await self._deliver_price(update)

    async def _deliver_price(self, update: PriceUpdate) -> None:
        """Pass the update on unless it repeats the last one (lastPrice and ticker overlap)."""
        key = (update.price, update.time_ms)
        if key == self._last_price or self._on_price is None:
            return
        self._last_price = key
        try:
            async with self._deliver_lock:
                await self._on_price(update)
        except Exception:
            log.exception("stream.price_callback_failed", url=self.url, price=str(update.price))

    async def _on_trade_data(self, data: Any) -> None:
        if self._account is None or self._on_trade is None:
            return
        account_id = self._account.account_id
        item = parse_trade_data(account_id, data, self._margins_sats)
        if item is None:
            log.debug("stream.trade_event_ignored", account_id=account_id)
            return
        try:
            await self._on_trade(account_id, item)
        except Exception:
            log.exception(
                "stream.trade_callback_failed", account_id=account_id, trade_id=_trade_id(item)
            )

    # REST polling while disconnected

    def _start_polling(self) -> None:
        polling = self._poll_stop is not None and not self._poll_stop.is_set()
        if self._poll_ticker is None or polling:
            return
        self._poll_stop = asyncio.Event()
        task = asyncio.create_task(self._poll(self._poll_stop), name=f"ticker poll {self.url}")
        self._poll_tasks.add(task)
        task.add_done_callback(self._poll_tasks.discard)
        task.add_done_callback(self._log_crash)
        log.info("stream.polling_started", interval_s=self._settings.poll_interval_s)

    def _stop_polling(self) -> None:
        """Ask the poller to stop. A poll in flight finishes, but its price is dropped."""
        if self._poll_stop is not None and not self._poll_stop.is_set():
            self._poll_stop.set()
            log.info("stream.polling_stopped")

    async def _poll(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            update = await self._poll_once()
            if update is not None and not stop.is_set():
                await self._deliver_price(update)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.poll_interval_s)

    async def _poll_once(self) -> PriceUpdate | None:
        try:
            ticker = await self._poll_ticker()
        except ExchangeError as exc:
            log.warning("stream.poll_failed", error=f"{type(exc).__name__}: {exc}")
            return None
        return PriceUpdate(ticker.last_price, ticker.time_ms, time.time_ns(), "poll")


def _result(method: str, frame: Mapping[str, Any]) -> Any:
    """Return the result of a reply, raising RejectedError for a JSON-RPC error."""
    error = frame.get("error")
    if error is None:
        return frame.get("result")
    if isinstance(error, Mapping):
        code, message = error.get("code"), error.get("message")
    else:
        code, message = None, error
    text_code = None if code is None else str(code)
    raise RejectedError(f"{method} failed: {message} (code {text_code})", code=text_code)


def _trade_id(item: Trade | TradeEvent) -> str:
    return item.id if isinstance(item, Trade) else item.trade_id


__all__ = [
    "AUTHENTICATE_METHOD",
    "INDEX_TOPIC",
    "ISOLATED_TRADES_TOPIC",
    "LAST_PRICE_TOPIC",
    "MAINNET_STREAM_URL",
    "NOTIFICATION_METHOD",
    "PING_METHOD",
    "POLLING_MODE",
    "PRICE_TOPICS",
    "SIGNET_STREAM_URL",
    "STREAM_MODE",
    "SUBSCRIBE_METHOD",
    "TICKER_TOPIC",
    "PriceUpdate",
    "StreamAccount",
    "StreamClient",
    "StreamSettings",
    "StreamStatus",
    "authenticate_params",
    "backoff_delay_s",
    "parse_price_data",
    "parse_trade_data",
    "stream_signature",
]
