"""LN Markets client: error mapping at the transport seam, parsing, and round trips on the mock."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import structlog

from axisor.db.crypto import Credentials
from axisor.errors import (
    AuthenticationError,
    InsufficientFundsError,
    InvalidExchangeDataError,
    NotSupportedError,
    RejectedError,
    RetryLaterError,
    StateUnknownError,
    TradeNotFoundError,
)
from axisor.exchange.lnmarkets import LNMARKETS_CAPABILITIES, LNMarketsClient, ServerClock
from axisor.exchange.lnmarkets.parse import (
    decode_json,
    encode_json,
    parse_ticker,
    parse_trade,
    parse_trades,
)
from axisor.exchange.lnmarkets.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers
from axisor.exchange.models import (
    CloseReason,
    OpenTradeRequest,
    Side,
    TradeStatus,
)
from axisor.exchange.paper import PaperVenue
from axisor.exchange.protocol import Exchange
from axisor.mockexchange import MockExchange, run_mock_exchange

D = Decimal
KEY = "alice-key-0001"
SECRET = "alice-secret-Q9vX"
PASSPHRASE = "alice-pass-7Lk"
CREDENTIALS = Credentials(key=KEY, secret=SECRET, passphrase=PASSPHRASE, network="testnet")
LOOPBACK = "http://127.0.0.1:9"  # never contacted: MockTransport replaces the network
TRADE_ID = "5d1c4a3e-0000-4000-8000-000000000001"

RUNNING_TRADE = {
    "id": TRADE_ID,
    "side": "buy",
    "type": "market",
    "quantity": 60,
    "margin": 10000,
    "leverage": 10,
    "price": 60000,
    "entryPrice": 60000,
    "liquidation": D("54545.5"),
    "maintenanceMargin": 100,
    "openingFee": 100,
    "closingFee": 0,
    "stoploss": 0,
    "takeprofit": 0,
    "pl": 0,
    "open": False,
    "running": True,
    "closed": False,
    "canceled": False,
    "createdAt": "2024-08-05T10:00:00.000Z",
}


def measured_clock() -> ServerClock:
    """Return a clock that needs no GET /time, so a fake transport receives only the call."""
    clock = ServerClock()
    clock.record(0, 0, 0)
    return clock


def fake_client(handler, **options) -> LNMarketsClient:
    options.setdefault("clock", measured_clock())
    options.setdefault("backoff_s", 0.0)
    return LNMarketsClient(LOOPBACK, CREDENTIALS, transport=httpx.MockTransport(handler), **options)


def reply(status: int, body: object = None, headers: dict | None = None):
    content = encode_json(body if body is not None else {"code": "x", "message": "failed"})

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=content, headers=headers)

    return handler


# Error mapping at the transport seam


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"code": "bad_request", "message": "leverage too high"}, RejectedError),
        (400, {"code": "insufficient_funds", "message": "no"}, InsufficientFundsError),
        (400, {"message": "Not enough balance"}, InsufficientFundsError),
        (401, {"code": "invalid_signature", "message": "bad"}, AuthenticationError),
        (403, {"code": "forbidden", "message": "scope"}, AuthenticationError),
        (404, {"code": "not_found", "message": "no such trade"}, TradeNotFoundError),
        (422, {"code": "invalid", "message": "bad id"}, RejectedError),
        (429, {"code": "rate_limited", "message": "slow"}, RetryLaterError),
        (500, {"code": "internal", "message": "oops"}, StateUnknownError),
        (502, {"code": "bad_gateway", "message": ""}, StateUnknownError),
        (503, {"code": "unavailable", "message": ""}, RetryLaterError),
        (504, {"code": "gateway_timeout", "message": ""}, StateUnknownError),
    ],
)
async def test_post_status_maps_to_error(status, body, error):
    """A change maps by what the caller must do, and a 502 or 504 may have reached the exchange."""
    async with fake_client(reply(status, body)) as client:
        with pytest.raises(error) as raised:
            await client.close_trade(TRADE_ID)

    assert type(raised.value) is error
    if isinstance(raised.value, RejectedError):
        assert raised.value.code == body.get("code")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, RejectedError),
        (401, AuthenticationError),
        (404, RejectedError),
        (429, RetryLaterError),
        (500, StateUnknownError),
        (502, RetryLaterError),
        (503, RetryLaterError),
        (504, RetryLaterError),
    ],
)
async def test_get_status_maps_to_error(status, error):
    """A read has nothing to undo, so every gateway failure means retry later."""
    async with fake_client(reply(status), get_attempts=1) as client:
        with pytest.raises(error) as raised:
            await client.get_running_trades()

    assert type(raised.value) is error


@pytest.mark.parametrize(
    ("exception", "error"),
    [
        (httpx.ConnectError("connection refused"), RetryLaterError),
        (httpx.ConnectTimeout("connect timed out"), RetryLaterError),
        (httpx.PoolTimeout("no connection free"), RetryLaterError),
        (httpx.ReadTimeout("read timed out"), StateUnknownError),
        (httpx.WriteTimeout("write timed out"), StateUnknownError),
        (httpx.RemoteProtocolError("server disconnected"), StateUnknownError),
        (httpx.ReadError("connection reset"), StateUnknownError),
    ],
)
async def test_transport_error_maps_to_error(exception, error):
    """Nothing sent means retry later, and a failure after the request left means state unknown."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise exception

    async with fake_client(handler) as client:
        with pytest.raises(error) as raised:
            await client.add_margin(TRADE_ID, 1000)

    assert type(raised.value) is error
    assert raised.value.__cause__ is exception
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("header", "expected_s"),
    [("2", 2.0), ("0.5", 0.5), ("0", 0.0), ("soon", None), ("NaN", None)],
)
async def test_retry_after_seconds(header, expected_s):
    async with fake_client(reply(429, headers={"Retry-After": header})) as client:
        with pytest.raises(RetryLaterError) as raised:
            await client.close_trade(TRADE_ID)

    assert raised.value.retry_after_s == expected_s


async def test_retry_after_http_date():
    moment = datetime.now(UTC) + timedelta(seconds=30)
    header = moment.strftime("%a, %d %b %Y %H:%M:%S GMT")

    async with fake_client(reply(503, headers={"Retry-After": header})) as client:
        with pytest.raises(RetryLaterError) as raised:
            await client.cash_in(TRADE_ID, 1000)

    assert 25 <= raised.value.retry_after_s <= 30


async def test_get_retried_until_success():
    """A GET that fails with 502 then 503 is sent a third time, and each retry is logged."""
    statuses = [502, 503, 200]
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        status = statuses[len(calls) - 1]
        return httpx.Response(status, content=encode_json([RUNNING_TRADE] if status == 200 else {}))

    with structlog.testing.capture_logs() as logs:
        async with fake_client(handler, get_attempts=3) as client:
            trades = await client.get_running_trades()

    assert [trade.id for trade in trades] == [TRADE_ID]
    assert len(calls) == 3
    retries = [entry for entry in logs if entry["event"] == "lnm.request.retry"]
    assert [entry["attempts_left"] for entry in retries] == [2, 1]


async def test_get_gives_up_after_attempts():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, content=b"{}")

    async with fake_client(handler, get_attempts=2) as client:
        with pytest.raises(RetryLaterError):
            await client.get_ticker()

    assert len(calls) == 2


@pytest.mark.parametrize("status", [429, 502, 503, 504])
async def test_post_never_retried(status):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, content=b"{}")

    async with fake_client(handler, get_attempts=5) as client:
        with pytest.raises((RetryLaterError, StateUnknownError)):
            await client.open_trade(OpenTradeRequest(Side.BUY, D(10), quantity_usd=60))

    assert len(calls) == 1


async def test_post_sends_signed_exact_body():
    """The body bytes sent are the bytes signed, with Decimals as exact JSON numbers."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=encode_json(RUNNING_TRADE))

    order = OpenTradeRequest(Side.SELL, D("12.5"), margin_sats=20_000, stoploss_price=D("70000.3"))
    async with fake_client(handler) as client:
        await client.open_trade(order)

    request = seen[0]
    assert request.url.path == "/v3/futures/isolated/trade"
    assert request.content == (
        b'{"type":"market","side":"sell","leverage":12.5,"margin":20000,"stoploss":70000.5}'
    )
    timestamp_ms = int(request.headers[TIMESTAMP_HEADER])
    expected = signed_headers(
        CREDENTIALS, "POST", "/v3/futures/isolated/trade", request.content, timestamp_ms
    )
    assert request.headers[SIGNATURE_HEADER] == expected[SIGNATURE_HEADER]


async def test_delete_signs_query():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=encode_json(RUNNING_TRADE))

    async with fake_client(handler) as client:
        await client.set_takeprofit(TRADE_ID, None)

    request = seen[0]
    assert request.method == "DELETE"
    assert request.url.query == f"id={TRADE_ID}".encode()
    timestamp_ms = int(request.headers[TIMESTAMP_HEADER])
    path = "/v3/futures/isolated/trade/takeprofit"
    expected = signed_headers(CREDENTIALS, "DELETE", path, f"?id={TRADE_ID}", timestamp_ms)
    assert request.headers[SIGNATURE_HEADER] == expected[SIGNATURE_HEADER]


async def test_cross_margin_routes():
    """Cross margin is not in the mock, so its three routes are checked at the transport seam."""
    seen = []
    position = {
        "id": "p-1",
        "quantity": -100,
        "entryPrice": "61000",
        "leverage": 5,
        "margin": 30000,
        "maintenanceMargin": 200,
        "liquidation": 70000,
        "totalPl": -12,
        "runningMargin": 0,
        "initialMargin": 30000,
        "deltaPl": 0,
        "fundingFees": 0,
        "tradingFees": 0,
        "updatedAt": "2024-08-05T10:00:00Z",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET":
            return httpx.Response(200, content=encode_json(position))
        return httpx.Response(200, content=b'{"id":"o-1"}')

    async with fake_client(handler) as client:
        cross = await client.get_cross_position()
        order = await client.open_cross_order(Side.BUY, 50, price=D("60000.2"))
        closed = await client.close_cross_position()

    assert cross.quantity_usd == -100
    assert cross.entry_price == D(61000)
    assert cross.total_pl_sats == -12
    assert order == {"id": "o-1"}
    assert closed == {"id": "o-1"}
    assert [(r.method, r.url.path) for r in seen] == [
        ("GET", "/v3/futures/cross/position"),
        ("POST", "/v3/futures/cross/order"),
        ("POST", "/v3/futures/cross/position/close"),
    ]
    assert seen[1].content == b'{"type":"limit","side":"buy","quantity":50,"price":60000.0}'


def test_capabilities_and_protocol():
    client = LNMarketsClient(LOOPBACK, CREDENTIALS)

    assert isinstance(client, Exchange)
    assert LNMARKETS_CAPABILITIES.name == "lnmarkets"
    assert client.capabilities.cross is True
    assert client.capabilities.trailing_stoploss is True
    assert client.capabilities.partial_reduce_isolated is False


def test_repr_hides_secrets():
    client = LNMarketsClient(LOOPBACK, CREDENTIALS)

    text = repr(client)

    assert SECRET not in text
    assert PASSPHRASE not in text
    assert KEY not in text
    assert "alic…" in text


def test_default_base_url_follows_network():
    testnet = LNMarketsClient(None, CREDENTIALS)
    mainnet = LNMarketsClient(None, Credentials("k", "s", "p", network="mainnet"))

    assert testnet.base_url == "https://api.testnet4.lnmarkets.com"
    assert mainnet.base_url == "https://api.lnmarkets.com"


# Lenient parsing


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"side": "b"},
        {"side": "BUY"},
        {"quantity": "60", "margin": "10000", "leverage": "10", "entryPrice": "60000"},
        {"entry_price": 60000, "maintenance_margin": 100, "opening_fee": 100},
        {"createdAt": None, "creation_ts": 1722852000000},
        {"createdAt": "1722852000000"},
    ],
)
def test_parse_trade_spellings(variant):
    """camelCase or snake_case names, short sides and numbers as strings parse alike."""
    data = {**RUNNING_TRADE, **variant}
    if "entry_price" in variant:
        data.pop("entryPrice")
        data.pop("maintenanceMargin")
        data.pop("openingFee")

    trade = parse_trade(data)

    assert trade.side is Side.BUY
    assert trade.quantity_usd == 60
    assert trade.margin_sats == 10_000
    assert trade.entry_price == D(60000)
    assert trade.leverage == D(10)
    assert trade.liquidation_price == D("54545.5")
    assert trade.status is TradeStatus.RUNNING
    assert trade.stoploss_price is None
    assert trade.created_ms == 1_722_852_000_000


def test_parse_short_side_and_closed_trade():
    data = {
        **RUNNING_TRADE,
        "side": "s",
        "running": False,
        "closed": True,
        "exitPrice": "59000.5",
        "pl": -150,
        "closed_at": "2024-08-05T11:00:00+00:00",
    }

    trade = parse_trade(data)

    assert trade.side is Side.SELL
    assert trade.status is TradeStatus.CLOSED
    assert trade.exit_price == D("59000.5")
    assert trade.pnl_sats == -150
    assert trade.closed_ms == 1_722_855_600_000


@pytest.mark.parametrize(
    ("change", "field_name"),
    [
        ({"side": "up"}, "side"),
        ({"quantity": None}, "quantity"),
        ({"margin": "ten"}, "margin"),
        ({"margin": 10.5}, "margin"),
        ({"margin": "10000.5"}, "margin"),
        ({"leverage": 0}, "leverage"),
        ({"liquidation": 0}, "liquidation"),
        ({"price": -1, "entryPrice": None}, "entry_price"),
        ({"createdAt": "yesterday"}, "created_at"),
        ({"running": False}, "running"),
        ({"openingFee": -3}, "opening_fee"),
    ],
)
def test_parse_trade_rejects_impossible(change, field_name):
    """A missing or impossible field raises and the message names it."""
    with pytest.raises(InvalidExchangeDataError, match=field_name):
        parse_trade({**RUNNING_TRADE, **change})


def test_parse_short_1x_no_liquidation():
    trade = parse_trade({**RUNNING_TRADE, "side": "sell", "leverage": 1, "liquidation": 0})

    assert trade.liquidation_price is None


def test_parse_trades_paginated_or_bare():
    assert len(parse_trades([RUNNING_TRADE])) == 1
    assert len(parse_trades({"data": [RUNNING_TRADE], "nextCursor": None})) == 1


@pytest.mark.parametrize(
    "data",
    [
        {
            "index": 60010,
            "lastPrice": 60000,
            "prices": [{"bidPrice": D("59999.5"), "askPrice": D("60000.5")}],
        },
        {"index": "60010", "last_price": "60000", "bid_price": "59999.5", "ask_price": "60000.5"},
    ],
)
def test_parse_ticker_spellings(data):
    ticker = parse_ticker(data, now_ms=5)

    assert ticker.last_price == D(60000)
    assert ticker.index_price == D(60010)
    assert ticker.bid_price == D("59999.5")
    assert ticker.ask_price == D("60000.5")
    assert ticker.time_ms == 5


def test_decode_json_keeps_decimals_exact():
    data = decode_json(b'{"price": 60000.1, "quantity": 3}')

    assert data["price"] == D("60000.1")
    assert type(data["price"]) is Decimal
    assert type(data["quantity"]) is int


def test_encode_json_rejects_float():
    with pytest.raises(TypeError):
        encode_json({"price": 1.5})


# Round trips against the mock server


@pytest.fixture
def venue() -> PaperVenue:
    venue = PaperVenue()
    venue.create_account("alice", 1_000_000)
    return venue


@pytest.fixture
def mock(venue) -> MockExchange:
    mock = MockExchange(venue)
    mock.register("alice", KEY, SECRET, PASSPHRASE)
    mock.set_price(D(60_000))
    return mock


@pytest.fixture
async def base_url(mock):
    async with run_mock_exchange(mock) as url:
        yield url


@pytest.fixture
async def client(base_url):
    async with LNMarketsClient(base_url, CREDENTIALS, timeout_s=2.0, backoff_s=0.01) as client:
        yield client


def long_60(**levels) -> OpenTradeRequest:
    return OpenTradeRequest(side=Side.BUY, leverage=D(10), quantity_usd=60, **levels)


async def test_reads_round_trip(client, mock):
    ticker = await client.get_ticker()
    balance = await client.get_balance()
    server_ms = await client.get_server_time_ms()

    assert ticker.last_price == D(60_000)
    assert balance.free_sats == 1_000_000
    assert balance.total_sats == 1_000_000
    assert abs(server_ms - mock.server_now_ms()) < 5_000
    assert await client.get_running_trades() == []
    assert await client.get_open_trades() == []
    assert await client.get_closed_trades() == []


async def test_open_and_close_round_trip(client, venue):
    opened = await client.open_trade(long_60(takeprofit_price=D(66_000)))
    running = await client.get_running_trades()
    on_venue = venue.running_trades("alice")
    balance = await client.get_balance()
    closed = await client.close_trade(opened.id)
    history = await client.get_closed_trades(limit=10)

    assert running == [opened]
    assert running == on_venue
    assert opened.takeprofit_price == D(66_000)
    assert balance.total_sats == 1_000_000 - opened.opening_fee_sats
    assert closed.status is TradeStatus.CLOSED
    assert closed.close_reason is CloseReason.CLOSED
    assert [trade.id for trade in history] == [opened.id]
    assert [m.kind for m in venue.mutations] == ["open", "close"]


async def test_margin_and_levels_round_trip(client, venue):
    trade = await client.open_trade(long_60())

    with_margin = await client.add_margin(trade.id, 2_000)
    cashed = await client.cash_in(trade.id, 1_000)
    fixed = await client.set_stoploss(trade.id, D("57000.2"))
    cleared = await client.set_stoploss(trade.id, None)
    take = await client.set_takeprofit(trade.id, D(65_000))
    no_take = await client.set_takeprofit(trade.id, None)

    assert with_margin.margin_sats == trade.margin_sats + 2_000
    assert cashed.margin_sats == with_margin.margin_sats - 1_000
    assert fixed.stoploss_price == D("57000.0")
    assert cleared.stoploss_price is None
    assert take.takeprofit_price == D(65_000)
    assert no_take.takeprofit_price is None
    kinds = [m.kind for m in venue.mutations]
    assert kinds == [
        "open",
        "add_margin",
        "cash_in",
        "stoploss",
        "stoploss",
        "takeprofit",
        "takeprofit",
    ]


async def test_trailing_stoploss_round_trip(client, mock):
    """A 600 USD trailing stop starts 600 USD under the price and follows new highs."""
    trade = await client.open_trade(long_60())

    trailing = await client.set_stoploss(trade.id, None, trailing_usd=D(600))
    mock.set_price(D(61_000))
    (followed,) = await client.get_running_trades()

    assert trailing.trailing_stoploss_usd == D(600)
    assert trailing.stoploss_price == D(59_400)
    assert followed.stoploss_price == D(60_400)
    assert followed.trailing_stoploss_usd == D(600)


async def test_trailing_with_price_not_supported(client):
    with pytest.raises(NotSupportedError):
        await client.set_stoploss(TRADE_ID, D(50_000), trailing_usd=D(100))


async def test_candles_round_trip(client, mock):
    start_ms = 1_722_852_000_000
    for offset_ms, price in [(0, 60_000), (20_000, 60_500), (40_000, 59_500), (60_000, 61_000)]:
        mock.set_price(D(price), start_ms + offset_ms)

    candles = (await client.get_candles(start_ms, limit=10))[:2]

    assert [candle.time_ms for candle in candles] == [start_ms, start_ms + 60_000]
    first = candles[0]
    assert (first.open_price, first.high_price, first.low_price, first.close_price) == (
        D(60_000),
        D(60_500),
        D(59_500),
        D(59_500),
    )


async def test_unknown_trade_not_found(client):
    with pytest.raises(TradeNotFoundError):
        await client.close_trade("no-such-trade")
    with pytest.raises(TradeNotFoundError):
        await client.cancel_trade("no-such-trade")


async def test_insufficient_funds_from_mock(client):
    order = OpenTradeRequest(side=Side.BUY, leverage=D(1), quantity_usd=5_000)

    with pytest.raises(InsufficientFundsError):
        await client.open_trade(order)


async def test_wrong_secret_rejected(base_url, venue):
    wrong = Credentials(key=KEY, secret="not-the-secret", passphrase=PASSPHRASE)

    async with LNMarketsClient(base_url, wrong, timeout_s=2.0) as client:
        with pytest.raises(AuthenticationError, match="invalid_signature"):
            await client.open_trade(long_60())

    assert venue.mutations == []


async def test_unknown_key_rejected(base_url):
    stranger = Credentials(key="nobody", secret=SECRET, passphrase=PASSPHRASE)

    async with LNMarketsClient(base_url, stranger, timeout_s=2.0) as client:
        with pytest.raises(AuthenticationError):
            await client.get_running_trades()


async def test_rate_limited_change_not_applied(client, mock, venue):
    await client.sync_clock()
    mock.faults.update({"rate_limited": 1, "retry_after_header": "2"})

    with pytest.raises(RetryLaterError) as raised:
        await client.open_trade(long_60())

    assert raised.value.retry_after_s == 2.0
    assert venue.mutations == []


async def test_unavailable_change_not_applied(client, mock, venue):
    await client.sync_clock()
    mock.faults.update({"errors": 1, "error_status": 503})

    with pytest.raises(RetryLaterError):
        await client.open_trade(long_60())

    assert venue.mutations == []
    assert len(mock.requests_for("alice")) == 1


async def test_get_retried_on_502_against_mock(client, mock):
    await client.get_running_trades()
    mock.faults.update({"errors": 1, "error_status": 502})

    assert await client.get_running_trades() == []
    statuses = [r.status for r in mock.requests_for("alice") if r.path.endswith("/running")]
    assert statuses == [200, 502, 200]


async def test_timeout_after_apply_is_state_unknown(base_url, mock, venue):
    """The venue applies the change once, the reply is held, and the client does not resend."""
    async with LNMarketsClient(base_url, CREDENTIALS, timeout_s=2.0) as client:
        trade = await client.open_trade(long_60())
    mock.faults.update({"hold_s": 3.0})
    venue.faults.fail_after_apply_once("add_margin")

    async with LNMarketsClient(base_url, CREDENTIALS, timeout_s=0.5) as client:
        with pytest.raises(StateUnknownError):
            await client.add_margin(trade.id, 2_000)

    added = [m for m in venue.mutations if m.kind == "add_margin"]
    assert len(added) == 1
    sent = [r for r in mock.requests_for("alice") if r.path.endswith("/add-margin")]
    assert len(sent) == 1


async def test_caller_decides_after_state_unknown(base_url, mock, venue):
    """After StateUnknownError the caller re-reads and finds the change already applied."""
    mock.faults.update({"hold_s": 3.0})
    venue.faults.fail_after_apply_once("open_trade")

    async with LNMarketsClient(base_url, CREDENTIALS, timeout_s=0.5) as client:
        with pytest.raises(StateUnknownError):
            await client.open_trade(long_60())
        running = await client.get_running_trades()

    assert len(running) == 1
    assert [m.kind for m in venue.mutations] == ["open"]


async def test_short_held_reply_state_unknown(client, mock, venue):
    """A reply held less than the client's timeout arrives as 504, still state unknown."""
    mock.faults.update({"hold_s": 0.1})
    venue.faults.fail_after_apply_once("open_trade")

    with pytest.raises(StateUnknownError):
        await client.open_trade(long_60())

    assert [m.kind for m in venue.mutations] == ["open"]


async def test_clock_skew_measured_first(base_url, venue):
    """With the server 10 s ahead and a 5 s window, the first GET /time sets the offset."""
    mock = MockExchange(venue, timestamp_window_ms=5_000)
    mock.register("alice", KEY, SECRET, PASSPHRASE)
    mock.set_price(D(60_000))
    mock.faults.update({"clock_skew_ms": 10_000})

    async with run_mock_exchange(mock) as url, LNMarketsClient(url, CREDENTIALS) as client:
        trade = await client.open_trade(long_60())

        assert 9_000 <= client.clock.offset_ms <= 11_000
    assert [m.trade_id for m in venue.mutations] == [trade.id]
    assert [r.status for r in mock.requests_for("alice")] == [200]


async def test_clock_skew_change_resigns_once(client, mock, venue):
    """The server's clock jumps 40 s back: the rejected request is re-signed and sent once more."""
    await client.get_running_trades()
    mock.faults.update({"clock_skew_ms": -40_000})

    with structlog.testing.capture_logs() as logs:
        trade = await client.open_trade(long_60())

    assert -41_000 <= client.clock.offset_ms <= -39_000
    opens = [r.status for r in mock.requests_for("alice") if r.method == "POST"]
    assert opens == [401, 200]
    assert [m.trade_id for m in venue.mutations] == [trade.id]
    assert any(entry["event"] == "lnm.clock.rejected" for entry in logs)


async def test_trade_liquidated_between_reads(client, mock):
    trade = await client.open_trade(long_60())
    assert [t.id for t in await client.get_running_trades()] == [trade.id]
    mock.faults.update({"liquidate_before_read": [trade.id]})

    assert await client.get_running_trades() == []
    (closed,) = await client.get_closed_trades()
    assert closed.id == trade.id
    assert closed.close_reason is CloseReason.LIQUIDATED
    assert closed.pnl_sats == -trade.margin_sats


async def test_no_secret_in_logs(base_url, mock, venue, caplog):
    """Every log line of a busy session, structlog or standard logging, omits the secrets."""
    caplog.set_level(logging.DEBUG)
    mock.faults.update({"errors": 1, "error_status": 502, "clock_skew_ms": -40_000})

    with structlog.testing.capture_logs() as logs:
        async with LNMarketsClient(base_url, CREDENTIALS, backoff_s=0.01) as client:
            await client.get_running_trades()
            trade = await client.open_trade(long_60())
            mock.faults.update({"clock_skew_ms": 0})
            await client.close_trade(trade.id)
            with pytest.raises(TradeNotFoundError):
                await client.close_trade(trade.id)
            text = repr(client)

    lines = [str(entry) for entry in logs] + [r.getMessage() for r in caplog.records]
    lines += [text]
    assert logs
    for line in lines:
        assert SECRET not in line
        assert PASSPHRASE not in line


async def test_clock_offset_ignores_retry_delay(client, mock):
    """A GET /time rejected with 429 is retried, and only the successful round trip is timed."""
    mock.faults.update({"rate_limited": 1, "retry_after_header": "1"})

    offset_ms = await client.sync_clock()

    assert abs(offset_ms) < 300
    assert [r.status for r in mock.requests if r.path == "/v3/time"] == [429, 200]
