"""Mock LN Markets server: signature and timestamp checks, admin routes and fault switches."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
import pytest

from axisor.db.crypto import Credentials
from axisor.errors import InvalidConfigError
from axisor.exchange.lnmarkets.clock import wall_clock_ms
from axisor.exchange.lnmarkets.parse import decode_json, encode_json
from axisor.exchange.lnmarkets.signing import signed_headers
from axisor.exchange.paper import PaperVenue
from axisor.mockexchange import MockExchange, MockFaults, run_mock_exchange

D = Decimal
CREDENTIALS = Credentials(key="bob-key-01", secret="bob-secret-Vt3", passphrase="bob-pass-9Qe")
ORDER_PATH = "/v3/futures/isolated/trade"
ORDER = b'{"type":"market","side":"buy","leverage":10,"quantity":60}'


@pytest.fixture
def venue() -> PaperVenue:
    venue = PaperVenue()
    venue.create_account("bob", 1_000_000)
    return venue


@pytest.fixture
def mock(venue) -> MockExchange:
    mock = MockExchange(venue)
    mock.register("bob", CREDENTIALS.key, CREDENTIALS.secret, CREDENTIALS.passphrase)
    mock.set_price(D(60_000))
    return mock


@pytest.fixture
async def http(mock):
    async with run_mock_exchange(mock) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        yield http


def signed(method: str, path: str, params: bytes | str, **changes) -> dict[str, str]:
    timestamp_ms = wall_clock_ms() + changes.pop("offset_ms", 0)
    headers = signed_headers(CREDENTIALS, method, path, params, timestamp_ms)
    headers["Content-Type"] = "application/json"
    headers.update(changes)
    return headers


async def test_signed_post_accepted(http, venue):
    response = await http.post(ORDER_PATH, content=ORDER, headers=signed("POST", ORDER_PATH, ORDER))

    assert response.status_code == 200
    assert decode_json(response.content)["running"] is True
    assert [m.kind for m in venue.mutations] == ["open"]


async def test_tampered_body_rejected(http, venue):
    """A body changed after signing fails the check, and nothing is applied."""
    tampered = ORDER.replace(b'"quantity":60', b'"quantity":600')

    response = await http.post(
        ORDER_PATH, content=tampered, headers=signed("POST", ORDER_PATH, ORDER)
    )

    assert response.status_code == 401
    assert decode_json(response.content)["code"] == "invalid_signature"
    assert venue.mutations == []


async def test_tampered_query_rejected(http):
    path = "/v3/futures/isolated/trades/closed"

    response = await http.get(f"{path}?limit=5", headers=signed("GET", path, "?limit=50"))

    assert response.status_code == 401
    assert decode_json(response.content)["code"] == "invalid_signature"


async def test_signed_query_accepted(http):
    path = "/v3/futures/isolated/trades/closed"

    response = await http.get(f"{path}?limit=5", headers=signed("GET", path, "?limit=5"))

    assert response.status_code == 200
    assert decode_json(response.content) == {"data": [], "nextCursor": None}


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"LNM-ACCESS-PASSPHRASE": "wrong"}, "invalid_credentials"),
        ({"LNM-ACCESS-KEY": "unknown"}, "invalid_credentials"),
        ({"LNM-ACCESS-TIMESTAMP": "yesterday"}, "invalid_timestamp"),
        ({"offset_ms": -31_000}, "timestamp_out_of_window"),
        ({"offset_ms": 31_000}, "timestamp_out_of_window"),
    ],
)
async def test_bad_authentication_rejected(http, venue, changes, code):
    headers = signed("POST", ORDER_PATH, ORDER, **changes)

    response = await http.post(ORDER_PATH, content=ORDER, headers=headers)

    assert response.status_code == 401
    assert decode_json(response.content)["code"] == code
    assert venue.mutations == []


async def test_skewed_clock_moves_window(http, mock):
    """With the server 40 s behind, a timestamp from the local clock is out of the window."""
    await http.post("/_mock/faults", content=b'{"clock_skew_ms": -40000}')
    path = "/v3/account"

    local = await http.get(path, headers=signed("GET", path, ""))
    skewed = await http.get(path, headers=signed("GET", path, "", offset_ms=-40_000))
    server_time = decode_json((await http.get("/v3/time")).content)["time"]

    assert local.status_code == 401
    assert skewed.status_code == 200
    assert server_time < _iso_now_minus_s(30)


def _iso_now_minus_s(seconds: int) -> str:
    from axisor.mockexchange.server import iso_time

    return iso_time(wall_clock_ms() - seconds * 1000)


async def test_admin_account_and_price(http, venue):
    account = {"account_id": "carol", "key": "ck", "secret": "cs", "passphrase": "cp"}
    created = await http.post(
        "/_mock/accounts", content=encode_json(account | {"balance_sats": 5000})
    )
    priced = await http.post("/_mock/price", content=b'{"price": 61234.3}')
    ticker = decode_json((await http.get("/v3/futures/ticker")).content)

    assert created.status_code == 200
    assert venue.balance("carol").free_sats == 5000
    assert decode_json(priced.content) == {"price": D("61234.5")}
    assert ticker["lastPrice"] == D("61234.5")


async def test_admin_rejects_bad_input(http):
    unknown_fault = await http.post("/_mock/faults", content=b'{"no_such_fault": 1}')
    not_object = await http.post("/_mock/price", content=b"[1]")
    bad_method = await http.post("/_mock/faults", content=b'{"fail_after_apply_once": ["fly"]}')

    assert unknown_fault.status_code == 400
    assert not_object.status_code == 400
    assert bad_method.status_code == 400


async def test_admin_requests_log_and_reset(http):
    await http.get("/v3/time")
    await http.get("/v3/futures/ticker")

    logged = decode_json((await http.get("/_mock/requests")).content)
    await http.post("/_mock/reset")
    after_reset = decode_json((await http.get("/_mock/requests")).content)

    assert [entry["path"] for entry in logged] == ["/v3/time", "/v3/futures/ticker"]
    assert [entry["status"] for entry in logged] == [200, 200]
    assert after_reset == []


async def test_injected_errors_then_recovery(http, mock):
    await http.post("/_mock/faults", content=b'{"errors": 2, "error_status": 502}')

    statuses = [(await http.get("/v3/futures/ticker")).status_code for _ in range(3)]

    assert statuses == [502, 502, 200]


async def test_injected_429_has_retry_after(http):
    body = b'{"rate_limited": 1, "retry_after_header": "Wed, 21 Oct 2037 07:28:00 GMT"}'
    await http.post("/_mock/faults", content=body)

    limited = await http.get("/v3/futures/ticker")

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "Wed, 21 Oct 2037 07:28:00 GMT"
    assert (await http.get("/v3/futures/ticker")).status_code == 200


async def test_latency_delays_reply(http, mock):
    mock.faults.update({"latency_s": 0.3})
    began_s = time.monotonic()

    await http.get("/v3/time")

    assert time.monotonic() - began_s >= 0.3


async def test_fail_before_apply_is_503(http, venue):
    await http.post("/_mock/faults", content=b'{"fail_before_apply_once": ["open_trade"]}')

    response = await http.post(ORDER_PATH, content=ORDER, headers=signed("POST", ORDER_PATH, ORDER))

    assert response.status_code == 503
    assert venue.mutations == []


async def test_throttle_blocks_account_until_retry_after(http, mock):
    mock.faults.update({"throttle_per_s": 2, "throttle_retry_after_s": 1})
    path = "/v3/account"

    statuses = [
        (await http.get(path, headers=signed("GET", path, ""))).status_code for _ in range(4)
    ]

    assert statuses == [200, 200, 429, 429]
    assert [r.retry_after for r in mock.requests_for("bob")][2:] == ["1", "1"]


async def test_held_reply_released_on_exit(venue):
    """Stopping the server sends a held reply at once instead of after hold_s."""
    mock = MockExchange(venue)
    mock.register("bob", CREDENTIALS.key, CREDENTIALS.secret, CREDENTIALS.passphrase)
    mock.set_price(D(60_000))
    mock.faults.update({"hold_s": 30.0})
    venue.faults.fail_after_apply_once("open_trade")
    began_s = time.monotonic()

    async with (
        run_mock_exchange(mock) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=0.3) as http,
    ):
        with pytest.raises(httpx.ReadTimeout):
            await http.post(ORDER_PATH, content=ORDER, headers=signed("POST", ORDER_PATH, ORDER))

    assert time.monotonic() - began_s < 5
    assert [m.kind for m in venue.mutations] == ["open"]


async def test_candles_reject_other_resolutions(http):
    response = await http.get("/v3/futures/candles?range=1h")

    assert response.status_code == 400
    assert decode_json(response.content)["code"] == "not_supported"


async def test_cross_position_needs_signature(http):
    """The cross routes exist and, like every private route, reject an unsigned request."""
    assert (await http.get("/v3/futures/cross/position")).status_code == 401


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.com"])
async def test_run_rejects_non_loopback_host(venue, host):
    with pytest.raises(InvalidConfigError, match="loopback"):
        async with run_mock_exchange(venue, host=host):
            pass


async def test_run_accepts_venue_directly(venue):
    venue.set_price(D(60_000), 1)

    async with run_mock_exchange(venue) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/v3/futures/ticker")

    assert base_url.startswith("http://127.0.0.1:")
    assert response.status_code == 200


def test_faults_update_rejects_private_names():
    faults = MockFaults()

    with pytest.raises(InvalidConfigError):
        faults.update({"_blocked_until_s": {}})
