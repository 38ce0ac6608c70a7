"""Exceptions of the platform, grouped by what the caller must do.

AxisorError
├── InvalidConfigError          the input is wrong: fix the named field and try again
├── NotSupportedError           the venue cannot do this: choose another action
├── PriceDataError              a price file is malformed: fix the named line
└── ExchangeError
    ├── RetryLaterError         nothing was applied: safe to send again after retry_after_s
    ├── StateUnknownError       the request may have been applied: re-read before acting
    ├── RejectedError           the exchange refused the request: do not resend as is
    │   ├── TradeNotFoundError  the trade is not running (closed, liquidated or unknown)
    │   └── InsufficientFundsError
    ├── AuthenticationError     credentials are wrong, expired or lack a scope
    └── InvalidExchangeDataError
                                the exchange returned data that cannot be true
"""

from __future__ import annotations


class AxisorError(Exception):
    """Base class of every error the platform raises on purpose."""


class InvalidConfigError(AxisorError, ValueError):
    """A configuration or input value is invalid; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotSupportedError(AxisorError):
    """The venue does not support the requested operation."""


class PriceDataError(AxisorError, ValueError):
    """A price file has a malformed row; ``line`` is its 1-based line number."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}, line {line}: {message}")
        self.path = path
        self.line = line
        self.message = message


class ExchangeError(AxisorError):
    """Base class of errors that come from talking to an exchange."""


class RetryLaterError(ExchangeError):
    """The request was not applied; it may be sent again after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StateUnknownError(ExchangeError):
    """The request was sent but its outcome is unknown; re-read the account before deciding."""


class RejectedError(ExchangeError):
    """The exchange rejected the request; ``code`` is its error code when it gave one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class TradeNotFoundError(RejectedError):
    """The trade is not running on the exchange."""


class InsufficientFundsError(RejectedError):
    """The account's free balance does not cover the request."""


class AuthenticationError(ExchangeError):
    """The exchange rejected the credentials (HTTP 401 or 403)."""


class InvalidExchangeDataError(ExchangeError):
    """The exchange reported values that cannot be true, such as a liquidation price of 0."""
