"""LN Markets v3 request signing, checked against HMAC-SHA256 computed here independently."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from axisor.db.crypto import Credentials
from axisor.exchange.lnmarkets.signing import (
    KEY_HEADER,
    PASSPHRASE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    signed_headers,
    signed_params,
    verify,
)

SECRET = "test-secret-Zx81"
TIMESTAMP_MS = 1_700_000_000_123


def expected_signature(message: bytes) -> str:
    """Sign ``message`` the way the LN Markets v3 documentation describes, without the module."""
    digest = hmac.new(SECRET.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@pytest.mark.parametrize(
    ("method", "path", "params", "message"),
    [
        (
            "GET",
            "/v3/futures/isolated/trades/closed",
            "?limit=10&from=2024-01-01",
            b"1700000000123get/v3/futures/isolated/trades/closed?limit=10&from=2024-01-01",
        ),
        (
            "DELETE",
            "/v3/futures/isolated/trade/stoploss",
            "?id=abc-1",
            b"1700000000123delete/v3/futures/isolated/trade/stoploss?id=abc-1",
        ),
        (
            "POST",
            "/v3/futures/isolated/trade",
            b'{"type":"market","side":"buy","leverage":10,"quantity":60}',
            b"1700000000123post/v3/futures/isolated/trade"
            b'{"type":"market","side":"buy","leverage":10,"quantity":60}',
        ),
        (
            "PUT",
            "/v3/futures/isolated/trade/takeprofit",
            b'{"id":"abc-1","value":65000.5}',
            b'1700000000123put/v3/futures/isolated/trade/takeprofit{"id":"abc-1","value":65000.5}',
        ),
        ("GET", "/v3/account", "", b"1700000000123get/v3/account"),
    ],
)
def test_sign_matches_independent_hmac(method, path, params, message):
    """The signature is base64 HMAC-SHA256 of timestamp, lowercase method, path and params."""
    assert sign(SECRET, TIMESTAMP_MS, method, path, params) == expected_signature(message)


def test_sign_changes_with_one_body_byte():
    body = b'{"id":"abc-1","amount":1000}'
    tampered = b'{"id":"abc-1","amount":1001}'
    path = "/v3/futures/isolated/trade/add-margin"

    original = sign(SECRET, TIMESTAMP_MS, "POST", path, body)

    assert original != sign(SECRET, TIMESTAMP_MS, "POST", path, tampered)
    assert verify(SECRET, TIMESTAMP_MS, "POST", path, body, original)
    assert not verify(SECRET, TIMESTAMP_MS, "POST", path, tampered, original)


def test_sign_changes_with_timestamp_and_method():
    path = "/v3/account"
    original = sign(SECRET, TIMESTAMP_MS, "GET", path, "")

    assert original != sign(SECRET, TIMESTAMP_MS + 1, "GET", path, "")
    assert original != sign(SECRET, TIMESTAMP_MS, "DELETE", path, "")


def test_method_case_does_not_matter():
    assert sign(SECRET, TIMESTAMP_MS, "get", "/v3/account", "") == sign(
        SECRET, TIMESTAMP_MS, "GET", "/v3/account", ""
    )


@pytest.mark.parametrize(
    ("method", "query", "body", "expected"),
    [
        ("GET", "limit=5", b"", b"?limit=5"),
        ("DELETE", "id=x", b"", b"?id=x"),
        ("GET", "", b"", b""),
        ("POST", "", b'{"a":1}', b'{"a":1}'),
        ("PUT", "ignored=1", b'{"a":1}', b'{"a":1}'),
        ("POST", "", b"", b""),
    ],
)
def test_signed_params_by_method(method, query, body, expected):
    """GET and DELETE sign the query with its '?', and POST and PUT sign the body bytes."""
    assert signed_params(method, query, body) == expected


def test_signed_headers_all_four():
    credentials = Credentials(key="key-1", secret=SECRET, passphrase="pass-1")
    body = b'{"id":"abc-1"}'
    path = "/v3/futures/isolated/trade/close"

    headers = signed_headers(credentials, "POST", path, body, TIMESTAMP_MS)

    assert headers[KEY_HEADER] == "key-1"
    assert headers[PASSPHRASE_HEADER] == "pass-1"
    assert headers[TIMESTAMP_HEADER] == str(TIMESTAMP_MS)
    assert headers[SIGNATURE_HEADER] == expected_signature(
        b"1700000000123post/v3/futures/isolated/trade/close" + body
    )
    assert SECRET not in headers.values()


def test_verify_rejects_garbage_signature():
    assert not verify(SECRET, TIMESTAMP_MS, "GET", "/v3/account", "", "not base64 ✓")
