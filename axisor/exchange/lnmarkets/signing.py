"""Request signing of the LN Markets v3 REST API, shared by the client and the mock server.

The signature is ``base64(HMAC-SHA256(secret, timestamp_ms + method + path + params))`` where
``method`` is lowercase, ``path`` includes the ``/v3`` prefix, and ``params`` is the query
string with its leading ``?`` for GET and DELETE, or the exact JSON body bytes for POST and
PUT. ``params`` is empty when the request has neither.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from axisor.db.crypto import Credentials

KEY_HEADER = "LNM-ACCESS-KEY"
PASSPHRASE_HEADER = "LNM-ACCESS-PASSPHRASE"
TIMESTAMP_HEADER = "LNM-ACCESS-TIMESTAMP"
SIGNATURE_HEADER = "LNM-ACCESS-SIGNATURE"

_QUERY_METHODS = frozenset({"get", "delete"})


def signed_params(method: str, query: str, body: bytes) -> bytes:
    """Return the ``params`` part of the signed message for a request.

    ``query`` is the encoded query string without ``?`` and ``body`` the exact bytes sent.
    """
    if method.lower() in _QUERY_METHODS:
        return b"?" + query.encode("ascii") if query else b""
    return body


def sign(secret: str, timestamp_ms: int, method: str, path: str, params: str | bytes) -> str:
    """Return the base64 HMAC-SHA256 signature of one request."""
    if isinstance(params, str):
        params = params.encode("utf-8")
    message = f"{timestamp_ms}{method.lower()}{path}".encode() + params
    digest = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(
    secret: str, timestamp_ms: int, method: str, path: str, params: str | bytes, signature: str
) -> bool:
    """Return whether ``signature`` matches the request, compared in constant time."""
    expected = sign(secret, timestamp_ms, method, path, params)
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace"))


def signed_headers(
    credentials: Credentials, method: str, path: str, params: str | bytes, timestamp_ms: int
) -> dict[str, str]:
    """Return the four authentication headers of one request."""
    return {
        KEY_HEADER: credentials.key,
        PASSPHRASE_HEADER: credentials.passphrase,
        TIMESTAMP_HEADER: str(timestamp_ms),
        SIGNATURE_HEADER: sign(credentials.secret, timestamp_ms, method, path, params),
    }
