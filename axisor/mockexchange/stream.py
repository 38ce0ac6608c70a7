"""A mock LN Markets Stream API v1 on loopback, fed by a ``MockExchange`` and its paper venue.

It handles ``authenticate``, ``subscribe``, ``unsubscribe``, ``ping`` and ``time`` as JSON-RPC
2.0 on the path ``/v1``. ``authenticate`` checks the key and passphrase registered on the
MockExchange, a timestamp within its ``timestamp_window_ms``, a nonce not used before with
that key, and the signature as ``axisor.market.stream.stream_signature`` computes it.

``MockStream.publish_price`` moves the venue's price and sends the lastPrice and ticker
topics. It then sends the isolated trade events that the venue produced since the last call
to the connections of the owning account: ``filled`` and ``closed`` for trades opened and
closed on request, and ``liquidation``, ``stoploss`` and ``takeprofit`` for fills caused by
prices.

Faults: ``drop_connections`` aborts every connection, ``reject_connections(seconds)`` rejects
new handshakes with HTTP 503, ``faults.ignore_pings = True`` leaves pings without a reply, and
``faults.delay_s`` delays every outgoing message.

Not modelled: limit orders (no ``open`` or ``canceled`` events), funding events, the index,
buckets, funding and OHLC topics, cross margin and wallet topics, and rate limits.
Events of requests and of price fills are each sent in order, but a flush sends all request
events before the fill events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from axisor.errors import InvalidExchangeDataError
from axisor.exchange.lnmarkets.clock import wall_clock_ms
from axisor.exchange.lnmarkets.parse import decode_json, encode_json
from axisor.exchange.models import CloseReason, Mutation, Trade, TradeEvent
from axisor.market.stream import (
    AUTHENTICATE_METHOD,
    INDEX_TOPIC,
    ISOLATED_TRADES_TOPIC,
    LAST_PRICE_TOPIC,
    NOTIFICATION_METHOD,
    PING_METHOD,
    SUBSCRIBE_METHOD,
    TICKER_TOPIC,
    stream_signature,
)
from axisor.mockexchange.server import MockExchange, require_loopback

# websockets (17.x) logs frames at DEBUG, and authenticate frames contain the passphrase.
WIRE_LOGGER = logging.getLogger("axisor.mockexchange.stream.wire")
WIRE_LOGGER.setLevel(logging.INFO)

STREAM_PATH = "/v1"
PUBLIC_TOPICS = frozenset({LAST_PRICE_TOPIC, TICKER_TOPIC, INDEX_TOPIC})
PRIVATE_TOPICS = frozenset({ISOLATED_TRADES_TOPIC})

# JSON-RPC 2.0 error codes. The range from -32000 to -32099 is for server errors.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
# NOTE: LN Markets' stream v1 SDK code (sdk-typescript authenticate.ts and instance.ts) names no
# code for a failed authentication or for a private topic without one. These are the mock's own.
AUTHENTICATION_FAILED = -32001
NOT_AUTHENTICATED = -32002

_CLOSE_EVENT_NAMES = {
    CloseReason.CLOSED: "closed",
    CloseReason.LIQUIDATED: "liquidation",
    CloseReason.STOPLOSS: "stoploss",
    CloseReason.TAKEPROFIT: "takeprofit",
}
_PAIR = "btc_usd"


@dataclass
class StreamFaults:
    """Faults of the mock stream, switchable while it runs."""

    ignore_pings: bool = False
    delay_s: float = 0.0  # added before each outgoing message, keeping their order
    reject_until_s: float = 0.0  # time.monotonic() until which handshakes get HTTP 503


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Connection:
    """One client connection: its account once authenticated, its topics and its outbox."""

    def __init__(self, websocket: ServerConnection) -> None:
        self.websocket = websocket
        self.account_id: str | None = None
        self.topics: set[str] = set()
        self.outbox: asyncio.Queue[str] = asyncio.Queue()

    def send(self, frame: Mapping[str, Any]) -> None:
        self.outbox.put_nowait(encode_json(frame).decode("utf-8"))

    async def write(self, faults: StreamFaults) -> None:
        """Send the outbox in order, each message after ``faults.delay_s``."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                text = await self.outbox.get()
                if faults.delay_s > 0:
                    await asyncio.sleep(faults.delay_s)
                await self.websocket.send(text)


class MockStream:
    """The stream endpoint of one MockExchange, described in the module docstring."""

    def __init__(self, mock: MockExchange) -> None:
        self.mock = mock
        self.faults = StreamFaults()
        self.connections: set[_Connection] = set()
        self.accepted = 0
        self.rejected_handshakes = 0
        self.rejected_authentications = 0
        self._nonces: set[tuple[str, str]] = set()
        self._events_sent = len(mock.venue.events)
        self._mutations_sent = len(mock.venue.mutations)
        self._methods: dict[str, Callable[[_Connection, Any], Any]] = {
            AUTHENTICATE_METHOD: self._authenticate,
            SUBSCRIBE_METHOD: self._subscribe,
            "unsubscribe": self._unsubscribe,
            PING_METHOD: lambda connection, params: "pong",
            "time": lambda connection, params: {"time": self.mock.server_now_ms()},
        }

    # Publishing

    def publish_price(self, price: Decimal, time_ms: int | None = None) -> None:
        """Move the venue's price (USD per BTC), send it, then send the trade events it caused."""
        time_ms = wall_clock_ms() if time_ms is None else time_ms
        self.mock.set_price(price, time_ms)
        last_price = self.mock.venue.price
        self.publish(LAST_PRICE_TOPIC, {"time": time_ms, "lastPrice": last_price})
        funding = {"rate": None, "time": None}
        ticker = {"time": time_ms, "lastPrice": last_price, "index": last_price}
        self.publish(TICKER_TOPIC, ticker | {"funding": funding})
        self.publish_trade_events()

    def publish_trade_events(self) -> int:
        """Send the venue's trade events not sent yet and return how many there were."""
        venue = self.mock.venue
        mutations = venue.mutations[self._mutations_sent :]
        events = venue.events[self._events_sent :]
        self._mutations_sent += len(mutations)
        self._events_sent += len(events)

        sent = 0
        for mutation in mutations:
            data = self._mutation_data(mutation)
            if data is not None:
                self.publish(ISOLATED_TRADES_TOPIC, data, mutation.account_id)
                sent += 1
        for event in events:
            self.publish(ISOLATED_TRADES_TOPIC, self._fill_data(event), event.account_id)
            sent += 1
        return sent

    def publish(self, topic: str, data: Any, account_id: str | None = None) -> int:
        """Send ``data`` on ``topic`` to its subscribers (of ``account_id`` when given)."""
        frame = {
            "jsonrpc": "2.0",
            "method": NOTIFICATION_METHOD,
            "params": {"topic": topic, "data": data},
        }
        receivers = [
            connection
            for connection in self.connections
            if topic in connection.topics
            and (account_id is None or connection.account_id == account_id)
        ]
        for connection in receivers:
            connection.send(frame)
        return len(receivers)

    def _mutation_data(self, mutation: Mutation) -> dict[str, Any] | None:
        if mutation.kind == "open":
            trade = self._find_trade(mutation.account_id, mutation.trade_id)
            return {"pair": _PAIR, "event": "filled", "trade": _filled_json(trade)}
        if mutation.kind == "close":
            trade = self._find_trade(mutation.account_id, mutation.trade_id)
            return {"pair": _PAIR, "event": "closed", "trade": _closed_json(trade, with_pl=True)}
        return None

    def _fill_data(self, event: TradeEvent) -> dict[str, Any]:
        """Return a fill caused by a price. A liquidation has no ``pl``, as LN Markets sends it."""
        trade = self._find_trade(event.account_id, event.trade_id)
        with_pl = event.reason is not CloseReason.LIQUIDATED
        body = _closed_json(trade, with_pl=with_pl)
        return {"pair": _PAIR, "event": _CLOSE_EVENT_NAMES[event.reason], "trade": body}

    def _find_trade(self, account_id: str, trade_id: str) -> Trade:
        venue = self.mock.venue
        trades = venue.running_trades(account_id) + venue.closed_trades(account_id, sys.maxsize)
        for trade in trades:
            if trade.id == trade_id:
                return trade
        raise LookupError(f"trade {trade_id!r} of account {account_id!r} is not on the venue")

    # Faults

    def drop_connections(self) -> int:
        """Abort every connection without a close handshake; return how many were open."""
        count = len(self.connections)
        for connection in list(self.connections):
            connection.websocket.transport.abort()
        return count

    def reject_connections(self, seconds: float) -> None:
        """Reject new handshakes with HTTP 503 for ``seconds`` from now."""
        self.faults.reject_until_s = time.monotonic() + seconds

    # Serving

    def _check_request(self, websocket: ServerConnection, request: Request) -> Response | None:
        if request.path != STREAM_PATH:
            return websocket.respond(HTTPStatus.NOT_FOUND, f"no stream at {request.path}\n")
        if time.monotonic() < self.faults.reject_until_s:
            self.rejected_handshakes += 1
            return websocket.respond(
                HTTPStatus.SERVICE_UNAVAILABLE, "connections are rejected (injected fault)\n"
            )
        return None

    async def _serve_connection(self, websocket: ServerConnection) -> None:
        connection = _Connection(websocket)
        self.connections.add(connection)
        self.accepted += 1
        writer = asyncio.create_task(connection.write(self.faults))
        try:
            async for raw in websocket:
                reply = self._reply(connection, raw)
                if reply is not None:
                    connection.send(reply)
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(connection)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    def _reply(self, connection: _Connection, raw: str | bytes) -> dict[str, Any] | None:
        """Return the reply to one request frame, or None when no reply is due."""
        try:
            frame = decode_json(raw)
        except InvalidExchangeDataError as exc:
            return _error_frame(None, PARSE_ERROR, str(exc))
        if not isinstance(frame, dict) or not isinstance(frame.get("method"), str):
            return _error_frame(None, INVALID_REQUEST, "expected a JSON-RPC request object")

        request_id, method = frame.get("id"), frame["method"]
        if method == PING_METHOD and self.faults.ignore_pings:
            return None
        handler = self._methods.get(method)
        if handler is None:
            return _error_frame(request_id, METHOD_NOT_FOUND, f"unknown method {method!r}")
        try:
            result = handler(connection, frame.get("params") or {})
        except _RpcError as exc:
            return _error_frame(request_id, exc.code, exc.message)
        if request_id is None:
            return None  # a JSON-RPC notification gets no reply
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    # Methods

    def _authenticate(self, connection: _Connection, params: Any) -> dict[str, Any]:
        try:
            account_id = self._check_signature(params)
        except _RpcError:
            self.rejected_authentications += 1
            raise
        connection.account_id = account_id
        return {"authenticated": True, "permissions": ["futures:isolated:read"]}

    def _check_signature(self, params: Any) -> str:
        """Return the account of a valid authenticate request, or raise _RpcError."""
        if not isinstance(params, Mapping):
            raise _RpcError(INVALID_PARAMS, "authenticate takes an object")
        key = str(params.get("key", ""))
        # The registry of API keys belongs to the MockExchange, which the REST routes share.
        account = self.mock.account_for_key(key)
        if account is None:
            raise _RpcError(AUTHENTICATION_FAILED, "the API key is unknown")
        passphrase = str(params.get("passphrase", ""))
        if not hmac.compare_digest(passphrase.encode(), account.passphrase.encode()):
            raise _RpcError(AUTHENTICATION_FAILED, "the passphrase does not match the key")

        timestamp_ms, nonce = self._timestamp_ms(params), str(params.get("nonce", ""))
        if not nonce or (key, nonce) in self._nonces:
            raise _RpcError(AUTHENTICATION_FAILED, "the nonce is missing or was used before")
        expected = stream_signature(account.secret, timestamp_ms, nonce)
        signature = str(params.get("signature", ""))
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise _RpcError(AUTHENTICATION_FAILED, "the signature does not match")
        self._nonces.add((key, nonce))
        return account.account_id

    def _timestamp_ms(self, params: Mapping[str, Any]) -> int:
        timestamp = params.get("timestamp")
        if not isinstance(timestamp, int) or isinstance(timestamp, bool):
            raise _RpcError(INVALID_PARAMS, f"the timestamp {timestamp!r} is not an int")
        drift_ms = timestamp - self.mock.server_now_ms()
        if abs(drift_ms) > self.mock.timestamp_window_ms:
            raise _RpcError(
                AUTHENTICATION_FAILED,
                f"the timestamp is {drift_ms} ms from the server's clock, "
                f"outside the window of {self.mock.timestamp_window_ms} ms",
            )
        return timestamp

    def _subscribe(self, connection: _Connection, params: Any) -> dict[str, Any]:
        topics = _topics(params)
        for topic in topics:
            if topic not in PUBLIC_TOPICS | PRIVATE_TOPICS:
                raise _RpcError(INVALID_PARAMS, f"unknown topic {topic!r}")
            if topic in PRIVATE_TOPICS and connection.account_id is None:
                raise _RpcError(NOT_AUTHENTICATED, f"authenticate before subscribing to {topic}")
        connection.topics.update(topics)
        return {"subscribed": sorted(connection.topics)}

    def _unsubscribe(self, connection: _Connection, params: Any) -> dict[str, Any]:
        connection.topics.difference_update(_topics(params))
        return {"subscribed": sorted(connection.topics)}


def _topics(params: Any) -> list[str]:
    topics = params.get("topics") if isinstance(params, Mapping) else None
    if not isinstance(topics, list) or not all(isinstance(topic, str) for topic in topics):
        raise _RpcError(INVALID_PARAMS, "expected {'topics': [string, ...]}")
    return topics


def _error_frame(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _filled_json(trade: Trade) -> dict[str, Any]:
    """Return a trade as LN Markets' ``filled`` event carries it: no liquidation price."""
    return {
        "id": trade.id,
        "side": trade.side.value,
        "type": "market",
        "quantity": trade.quantity_usd,
        "margin": trade.margin_sats,
        "leverage": trade.leverage,
        "price": trade.entry_price,
        "openingFee": trade.opening_fee_sats,
        "createdAt": trade.created_ms,
        "clientId": None,
    }


def _closed_json(trade: Trade, *, with_pl: bool) -> dict[str, Any]:
    body = {
        "id": trade.id,
        "closedAt": trade.closed_ms,
        "closingFee": trade.closing_fee_sats,
        "exitPrice": trade.exit_price,
        "clientId": None,
    }
    if with_pl:
        body["pl"] = trade.pnl_sats
    return body


@asynccontextmanager
async def run_mock_stream(
    target: MockStream | MockExchange, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``target`` on ``host`` (loopback only) and yield the URL ``ws://host:port/v1``.

    ``port=0`` picks a free ephemeral port. Every connection is closed when the context exits.
    """
    require_loopback(host)
    stream = target if isinstance(target, MockStream) else MockStream(target)
    async with serve(
        stream._serve_connection,
        host,
        port,
        process_request=stream._check_request,
        ping_interval=None,
        close_timeout=1,
        logger=WIRE_LOGGER,
    ) as server:
        bound_port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://{host}:{bound_port}{STREAM_PATH}"


__all__ = ["MockStream", "StreamFaults", "run_mock_stream"]
