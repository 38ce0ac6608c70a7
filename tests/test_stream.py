"""Stream API client, price feeds and the mock stream server, all on loopback."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from decimal import Decimal

import pytest
import structlog
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame

from axisor.db.crypto import Credentials
from axisor.errors import InvalidConfigError
from axisor.exchange.lnmarkets.client import LNMarketsClient
from axisor.exchange.lnmarkets.clock import wall_clock_ms
from axisor.exchange.lnmarkets.parse import decode_json, encode_json
from axisor.exchange.models import (
    CloseReason,
    OpenTradeRequest,
    Side,
    Trade,
    TradeEvent,
    TradeStatus,
)
from axisor.exchange.paper import PaperVenue
from axisor.market.feed import PriceFeed, ReplayFeed, StreamFeed, drive
from axisor.market.replay import Bar, Replay
from axisor.market.stream import (
    ISOLATED_TRADES_TOPIC,
    LAST_PRICE_TOPIC,
    POLLING_MODE,
    STREAM_MODE,
    PriceUpdate,
    StreamAccount,
    StreamClient,
    StreamSettings,
    authenticate_params,
    backoff_delay_s,
    parse_price_data,
    parse_trade_data,
)
from axisor.mockexchange import MockExchange, run_mock_exchange
from axisor.mockexchange.stream import (
    AUTHENTICATION_FAILED,
    NOT_AUTHENTICATED,
    MockStream,
    run_mock_stream,
)

D = Decimal
ACCOUNT_ID = "alice"
CREDENTIALS = Credentials(
    key="alice-key-7Hq2", secret="alice-secret-Zr81Xk", passphrase="alice-pass-Wm40"
)
ACCOUNT = StreamAccount(ACCOUNT_ID, CREDENTIALS)
FAST = StreamSettings(
    idle_ping_s=0.3,
    pong_timeout_s=0.3,
    request_timeout_s=2.0,
    open_timeout_s=2.0,
    backoff_base_s=0.05,
    backoff_max_s=0.2,
    poll_interval_s=0.05,
)
TIME_MS = 1_700_000_000_000


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait until ``predicate()`` is true, failing the test after ``timeout_s``."""
    deadline_s = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


class Recorder:
    """Async callbacks that keep what the client delivers."""

    def __init__(self) -> None:
        self.prices: list[PriceUpdate] = []
        self.trades: list[tuple[str, Trade | TradeEvent]] = []

    async def on_price(self, update: PriceUpdate) -> None:
        self.prices.append(update)

    async def on_trade(self, account_id: str, item: Trade | TradeEvent) -> None:
        self.trades.append((account_id, item))


@pytest.fixture
def venue() -> PaperVenue:
    venue = PaperVenue()
    venue.create_account(ACCOUNT_ID, 10_000_000)
    return venue


@pytest.fixture
def mock(venue) -> MockExchange:
    mock = MockExchange(venue)
    mock.register(ACCOUNT_ID, CREDENTIALS.key, CREDENTIALS.secret, CREDENTIALS.passphrase)
    mock.set_price(D(60_000), TIME_MS)
    return mock


@pytest.fixture
def stream(mock) -> MockStream:
    return MockStream(mock)


@pytest.fixture
async def url(stream):
    async with run_mock_stream(stream) as url:
        yield url


@pytest.fixture
async def rest_client(mock):
    """A REST client of the mock exchange, for the ticker polls."""
    async with run_mock_exchange(mock) as base_url, LNMarketsClient(base_url, None) as client:
        yield client


async def rpc(websocket, request_id: str, method: str, params=None) -> dict:
    frame = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        frame["params"] = params
    await websocket.send(encode_json(frame).decode())
    while True:
        reply = decode_json(await asyncio.wait_for(websocket.recv(), 2))
        if reply.get("id") == request_id:
            return reply


# Public prices


async def test_prices_arrive_as_decimals(url, stream):
    recorder = Recorder()
    async with StreamClient(url, on_price=recorder.on_price, settings=FAST) as client:
        await client.wait_connected(5)
        stream.publish_price(D("61000.5"), TIME_MS + 1000)
        await wait_until(lambda: recorder.prices)
        await asyncio.sleep(0.05)

    assert len(recorder.prices) == 1  # lastPrice and ticker carry the same price once
    update = recorder.prices[0]
    assert update.price == D("61000.5")
    assert isinstance(update.price, Decimal)
    assert update.time_ms == TIME_MS + 1000
    assert update.source == "stream"
    assert abs(update.received_ns - time.time_ns()) < 5 * 10**9


async def test_status_while_connected(url, stream):
    recorder = Recorder()
    async with StreamClient(url, on_price=recorder.on_price, settings=FAST) as client:
        await client.wait_connected(5)
        stream.publish_price(D(60_100), TIME_MS)
        await wait_until(lambda: recorder.prices)
        status = client.status()

    assert status.connected is True
    assert status.mode == STREAM_MODE
    assert status.gap_s == 0
    assert status.reconnects == 0
    assert status.last_message_ms is not None
    assert abs(status.last_message_ms - wall_clock_ms()) < 5000


async def test_delayed_messages_arrive_late(url, stream):
    recorder = Recorder()
    async with StreamClient(url, on_price=recorder.on_price, settings=FAST) as client:
        await client.wait_connected(5)
        stream.faults.delay_s = 0.25
        started_s = time.monotonic()
        stream.publish_price(D(60_200), TIME_MS)
        await wait_until(lambda: recorder.prices)
        elapsed_s = time.monotonic() - started_s

    assert elapsed_s >= 0.25


def test_parse_price_data_cases():
    assert parse_price_data({"time": TIME_MS, "lastPrice": D("60000.5")}, 7).price == D("60000.5")
    assert parse_price_data({"time": TIME_MS, "lastPrice": None, "index": D(1)}, 7) is None
    assert parse_price_data({"time": "1700000000000", "last_price": "42"}, 7).time_ms == TIME_MS


# Authentication


def auth_params(**changes) -> dict:
    params = authenticate_params(CREDENTIALS, wall_clock_ms(), "0123456789abcdef")
    params.update(changes)
    return params


@pytest.mark.parametrize(
    ("case", "changes"),
    [
        ("bad signature", {"signature": "AAAA" + auth_params()["signature"][4:]}),
        ("wrong passphrase", {"passphrase": "not-the-passphrase"}),
        ("unknown key", {"key": "nobody-key"}),
        ("stale timestamp", {"timestamp": wall_clock_ms() - 120_000}),
    ],
)
async def test_mock_rejects_authentication(url, stream, case, changes):
    """Each wrong field fails authenticate, and the private topic stays closed."""
    async with connect(url) as websocket:
        reply = await rpc(websocket, "1", "authenticate", auth_params(**changes))
        private = await rpc(websocket, "2", "subscribe", {"topics": [ISOLATED_TRADES_TOPIC]})

    assert reply["error"]["code"] == AUTHENTICATION_FAILED, case
    assert "result" not in reply
    assert private["error"]["code"] == NOT_AUTHENTICATED
    assert stream.rejected_authentications == 1


async def test_mock_accepts_signature_once(url):
    """A valid signature is accepted, and replaying its nonce is rejected."""
    params = auth_params()
    async with connect(url) as websocket:
        first = await rpc(websocket, "1", "authenticate", params)
        replayed = await rpc(websocket, "2", "authenticate", params)
        private = await rpc(websocket, "3", "subscribe", {"topics": [ISOLATED_TRADES_TOPIC]})

    assert first["result"]["authenticated"] is True
    assert replayed["error"]["code"] == AUTHENTICATION_FAILED
    assert private["result"]["subscribed"] == [ISOLATED_TRADES_TOPIC]


async def test_mock_rejects_unknown_path(url):
    with pytest.raises(InvalidStatus) as raised:
        async with connect(url.replace("/v1", "/v2")):
            pass

    assert raised.value.response.status_code == 404


async def test_client_bad_secret_keeps_prices(url, stream):
    """A rejected signature leaves the client on the public topics, with the error shown."""
    wrong = StreamAccount(ACCOUNT_ID, Credentials(CREDENTIALS.key, "wrong-secret", "x"))
    recorder = Recorder()
    client = StreamClient(
        url, on_price=recorder.on_price, on_trade=recorder.on_trade, account=wrong, settings=FAST
    )
    async with client:
        await client.wait_connected(5)
        stream.publish_price(D(59_000), TIME_MS)
        await wait_until(lambda: recorder.prices)
        status = client.status()

    assert status.authenticated is False
    assert "AuthenticationError" in status.last_error
    assert stream.rejected_authentications == 1
    assert recorder.prices[0].price == D(59_000)


# Private trade events


async def test_liquidation_arrives_as_trade_event(url, stream, venue):
    recorder = Recorder()
    client = StreamClient(
        url, on_price=recorder.on_price, on_trade=recorder.on_trade, account=ACCOUNT, settings=FAST
    )
    async with client:
        await client.wait_connected(5)
        assert client.status().authenticated is True

        opened = venue.open_trade(ACCOUNT_ID, OpenTradeRequest(Side.BUY, D(50), quantity_usd=1_000))
        stream.publish_trade_events()
        await wait_until(lambda: len(recorder.trades) == 1)
        stream.publish_price(opened.liquidation_price - 100, TIME_MS + 60_000)
        await wait_until(lambda: len(recorder.trades) == 2)

    account_id, filled = recorder.trades[0]
    assert account_id == ACCOUNT_ID
    assert isinstance(filled, Trade)
    assert filled.id == opened.id
    assert filled.status is TradeStatus.RUNNING
    assert filled.margin_sats == opened.margin_sats
    assert filled.liquidation_price == opened.liquidation_price

    account_id, event = recorder.trades[1]
    assert account_id == ACCOUNT_ID
    assert isinstance(event, TradeEvent)
    assert event.reason is CloseReason.LIQUIDATED
    assert event.trade_id == opened.id
    assert event.price == opened.liquidation_price
    assert event.pnl_sats == -opened.margin_sats
    assert event.time_ms == TIME_MS + 60_000


async def test_trade_events_reach_owner_only(url, stream, mock, venue):
    """Another account's stream gets none of this account's events."""
    venue.create_account("carol", 1_000_000)
    mock.register("carol", "carol-key-1", "carol-secret-2", "carol-pass-3")
    carol = StreamAccount("carol", Credentials("carol-key-1", "carol-secret-2", "carol-pass-3"))
    alice_seen, carol_seen = Recorder(), Recorder()
    async with (
        StreamClient(url, on_trade=alice_seen.on_trade, account=ACCOUNT, settings=FAST) as one,
        StreamClient(url, on_trade=carol_seen.on_trade, account=carol, settings=FAST) as two,
    ):
        await one.wait_connected(5)
        await two.wait_connected(5)
        venue.open_trade(ACCOUNT_ID, OpenTradeRequest(Side.SELL, D(10), quantity_usd=500))
        stream.publish_trade_events()
        await wait_until(lambda: alice_seen.trades)
        await asyncio.sleep(0.1)

    assert len(alice_seen.trades) == 1
    assert carol_seen.trades == []


@pytest.mark.parametrize(
    ("event", "trade", "expected"),
    [
        (
            "closed",
            {"id": "t1", "closedAt": TIME_MS, "closingFee": 5, "pl": -70, "exitPrice": 59_000},
            TradeEvent(ACCOUNT_ID, "t1", CloseReason.CLOSED, D(59_000), TIME_MS, -70),
        ),
        (
            "stoploss",
            {"id": "t2", "closedAt": TIME_MS, "closingFee": 5, "pl": -9, "exitPrice": "58000.5"},
            TradeEvent(ACCOUNT_ID, "t2", CloseReason.STOPLOSS, D("58000.5"), TIME_MS, -9),
        ),
        (
            "takeprofit",
            {"id": "t3", "closed_at": "2023-11-14T22:13:20Z", "pl": 40, "exit_price": 61_000},
            TradeEvent(ACCOUNT_ID, "t3", CloseReason.TAKEPROFIT, D(61_000), TIME_MS, 40),
        ),
        (
            "liquidation",
            {"id": "t4", "closedAt": TIME_MS, "closingFee": 5, "exitPrice": 54_545},
            TradeEvent(ACCOUNT_ID, "t4", CloseReason.LIQUIDATED, D(54_545), TIME_MS, 0),
        ),
        ("canceled", {"id": "t5", "closedAt": TIME_MS}, None),
        ("funding", {"id": "t6", "fundingFee": 3}, None),
    ],
)
def test_parse_trade_data_events(event, trade, expected):
    assert parse_trade_data(ACCOUNT_ID, {"pair": "btc_usd", "event": event, "trade": trade}) == (
        expected
    )


def test_parse_open_event_computes_liquidation():
    """An open limit order becomes an open Trade with a computed liquidation price."""
    data = {
        "event": "open",
        "trade": {
            "id": "t7",
            "side": "b",
            "type": "limit",
            "quantity": 1_000,
            "margin": 16_667,
            "leverage": 100,
            "price": 60_000,
            "openingFee": 0,
            "createdAt": TIME_MS,
        },
    }
    margins: dict[str, int] = {}

    trade = parse_trade_data(ACCOUNT_ID, data, margins)

    assert trade.status is TradeStatus.OPEN
    assert trade.side is Side.BUY
    assert trade.liquidation_price is not None
    assert trade.liquidation_price < D(60_000)
    assert trade.created_ms == TIME_MS
    assert margins == {"t7": 16_667}


# Disconnects, polling and reconnects


async def test_disconnect_polls_then_recovers(url, stream, mock, rest_client):
    recorder = Recorder()
    client = StreamClient(
        url, on_price=recorder.on_price, poll_ticker=rest_client.get_ticker, settings=FAST
    )
    async with client:
        await client.wait_connected(5)
        stream.reject_connections(1.0)
        assert stream.drop_connections() == 1

        await wait_until(lambda: client.status().mode == POLLING_MODE)
        mock.set_price(D("58000.5"))
        await wait_until(lambda: any(u.price == D("58000.5") for u in recorder.prices))
        first = client.status()
        await asyncio.sleep(0.2)
        second = client.status()

        await client.wait_connected(5)
        recovered = client.status()
        stream.publish_price(D(62_000), TIME_MS + 5_000)
        await wait_until(lambda: recorder.prices[-1].price == D(62_000))

    polled = [u for u in recorder.prices if u.price == D("58000.5")]
    assert polled[0].source == "poll"
    assert first.connected is False
    assert first.mode == POLLING_MODE
    assert second.gap_s > first.gap_s >= 0
    assert stream.rejected_handshakes >= 1
    assert recovered.connected is True
    assert recovered.mode == STREAM_MODE
    assert recovered.gap_s == 0
    assert recovered.reconnects == 1
    assert recorder.prices[-1].source == "stream"


async def test_ignored_ping_reconnects(url, stream):
    """A server that ignores pings is dropped and connected to again."""
    recorder = Recorder()
    stream.faults.ignore_pings = True
    async with StreamClient(url, on_price=recorder.on_price, settings=FAST) as client:
        await client.wait_connected(5)
        await wait_until(lambda: client.status().reconnects >= 1)
        status = client.status()
        stream.faults.ignore_pings = False
        await client.wait_connected(5)
        settled = client.status().reconnects
        await asyncio.sleep(1.0)  # three idle periods, each with a ping and its reply
        after = client.status()

    assert "no pong" in status.last_error
    assert stream.accepted >= 2
    assert after.connected is True
    assert after.reconnects == settled


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("idle_ping_s", 0),
        ("pong_timeout_s", -1.0),
        ("poll_interval_s", 0.0),
        ("backoff_max_s", 0.1),
    ],
)
def test_settings_reject_invalid(field, value):
    with pytest.raises(InvalidConfigError) as raised:
        StreamSettings(**{field: value, "backoff_base_s": 0.5})

    assert raised.value.field == field


def test_client_needs_a_topic():
    """Without on_price, a client needs an account and on_trade."""
    with pytest.raises(InvalidConfigError):
        StreamClient("ws://127.0.0.1:9/v1", account=ACCOUNT)


def test_backoff_delay_bounded():
    rng = random.Random(7)
    for attempt in range(60):
        ceiling_s = min(2.0, 0.1 * 2**attempt)
        delay_s = backoff_delay_s(attempt, 0.1, 2.0, rng)
        assert ceiling_s / 2 <= delay_s <= ceiling_s, attempt


async def test_rejecting_server_retried_with_backoff(url, stream):
    """While the server rejects handshakes, the client retries at least every backoff_max_s."""
    recorder = Recorder()
    stream.reject_connections(30)
    async with StreamClient(url, on_price=recorder.on_price, settings=FAST) as client:
        await asyncio.sleep(1.2)
        status = client.status()

    assert stream.rejected_handshakes >= 5
    assert status.connected is False
    assert status.failed_attempts == stream.rejected_handshakes
    assert status.gap_s >= 1.0


# Logging and shutdown


async def test_no_secret_in_logs(url, stream, rest_client, caplog, monkeypatch):
    """Authentication, a rejected signature, a drop and polling log no secret or passphrase.

    websockets would log whole frames here, since the elision of long frames is turned off.
    """
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(Frame, "MAX_LOG_SIZE", 10_000)
    wrong = StreamAccount(ACCOUNT_ID, Credentials(CREDENTIALS.key, "other-secret-Qa9", "pp-Zx7"))
    recorder = Recorder()
    with structlog.testing.capture_logs() as logs:
        good = StreamClient(
            url,
            on_price=recorder.on_price,
            on_trade=recorder.on_trade,
            account=ACCOUNT,
            poll_ticker=rest_client.get_ticker,
            settings=FAST,
        )
        bad = StreamClient(
            url,
            on_price=recorder.on_price,
            on_trade=recorder.on_trade,
            account=wrong,
            settings=FAST,
        )
        async with good, bad:
            await good.wait_connected(5)
            await bad.wait_connected(5)
            stream.drop_connections()
            await wait_until(lambda: good.status().reconnects >= 1)

    lines = [str(entry) for entry in logs] + [record.getMessage() for record in caplog.records]
    text = "\n".join(lines)
    assert any("stream.authentication_failed" in line for line in lines)
    for secret in ("alice-secret-Zr81Xk", "alice-pass-Wm40", "other-secret-Qa9", "pp-Zx7"):
        assert secret not in text
    assert CREDENTIALS.key not in text
    assert "alice-secret" not in repr(good)


async def test_aclose_stops_every_task(url, stream, rest_client):
    recorder = Recorder()
    client = StreamClient(
        url, on_price=recorder.on_price, poll_ticker=rest_client.get_ticker, settings=FAST
    )
    before = asyncio.all_tasks()
    client.start()
    await client.wait_connected(5)
    stream.reject_connections(5)
    stream.drop_connections()
    await wait_until(lambda: client.status().mode == POLLING_MODE)

    await client.aclose()
    await asyncio.sleep(0)

    left = [task for task in asyncio.all_tasks() - before if not task.done()]
    assert [task.get_name() for task in left] == []
    assert client.status().connected is False
    assert client.status().mode == STREAM_MODE


# Feeds


def make_replay() -> Replay:
    bars = [
        Bar(TIME_MS, D("60000.2"), D("60100.7"), D("59900.1"), D("60050.3"), D(1)),
        Bar(TIME_MS + 60_000, D("60050.3"), D("60060"), D("59000.4"), D("59010.6"), D(1)),
    ]
    return Replay(bars, resolution_ms=60_000)


async def test_replay_feed_quantizes_ticks():
    replay = make_replay()
    feed = ReplayFeed(replay)

    updates = [update async for update in feed]

    assert isinstance(feed, PriceFeed)
    assert len(updates) == len(replay)
    assert [u.time_ms for u in updates] == [tick.time_ms for tick in replay.ticks()]
    assert updates[0].price == D("60000")
    assert updates[1].price == D("59900")
    assert updates[2].price == D("60100.5")
    assert all(u.price % D("0.5") == 0 for u in updates)
    assert {u.source for u in updates} == {"replay"}


async def test_drive_calls_on_tick_per_update():
    seen: list[tuple[Decimal, int, int]] = []

    async def on_tick(price: Decimal, time_ms: int, received_ns: int) -> list:
        seen.append((price, time_ms, received_ns))
        return []

    count = await drive(ReplayFeed(make_replay()), on_tick)

    assert count == len(seen) == len(make_replay())
    assert seen[-1][0] == D("59010.5")


async def test_stream_feed_yields_until_closed(url, stream):
    feed = StreamFeed(url, settings=FAST)
    assert isinstance(feed, PriceFeed)
    received: list[PriceUpdate] = []

    async def read() -> None:
        async for update in feed:
            received.append(update)

    reader = asyncio.create_task(read())
    await feed.client.wait_connected(5)
    stream.publish_price(D(63_000), TIME_MS)
    stream.publish_price(D(63_500), TIME_MS + 1)
    await wait_until(lambda: len(received) == 2)
    await feed.aclose()
    await asyncio.wait_for(reader, 2)

    assert [u.price for u in received] == [D(63_000), D(63_500)]
    assert feed.status().connected is False


async def test_publish_reaches_subscribers_only(url, stream):
    async with connect(url) as websocket:
        await rpc(websocket, "1", "subscribe", {"topics": [LAST_PRICE_TOPIC]})

        sent = stream.publish(LAST_PRICE_TOPIC, {"time": TIME_MS, "lastPrice": D(1)})
        private = stream.publish(ISOLATED_TRADES_TOPIC, {"event": "closed"}, ACCOUNT_ID)
        frame = decode_json(await asyncio.wait_for(websocket.recv(), 2))

    assert sent == 1
    assert private == 0
    assert frame["params"]["topic"] == LAST_PRICE_TOPIC
