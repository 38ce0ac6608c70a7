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

The v3 handlers are in ``axisor.mockexchange.routes`` and the JSON they return is shaped in
``axisor.mockexchange.payloads``. This module holds authentication, faults, the ``/_mock``
routes and the server's lifetime.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from axisor.errors import InvalidConfigError, InvalidExchangeDataError
from axisor.exchange.lnmarkets.clock import wall_clock_ms
from axisor.exchange.lnmarkets.parse import decimal_field, decode_json, field_value, to_time_ms
from axisor.exchange.lnmarkets.signing import (
    KEY_HEADER,
    PASSPHRASE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signed_params,
    verify,
)
from axisor.exchange.paper import PaperVenue
from axisor.mockexchange.faults import MockFaults
from axisor.mockexchange.payloads import iso_time, json_response
from axisor.mockexchange.routes import _MAPPED_ERRORS, VenueRoutes

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
    "iso_time",
    "require_loopback",
    "run_mock_exchange",
]
