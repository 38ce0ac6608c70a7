"""Faults of the mock LN Markets server, switchable at runtime from tests or ``/_mock/faults``.

The venue's own ``PaperFaults`` add the faults around one operation: ``fail_before_apply``
becomes an HTTP 503, and ``fail_after_apply`` applies the change and then delays the reply
by ``hold_s`` seconds, longer than a client's timeout, before it returns HTTP 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from axisor.errors import InvalidConfigError


@dataclass
class MockFaults:
    """Faults applied to every request on the v3 routes, in this order.

    1. ``latency_s`` delays each request before it is read.
    2. ``clock_skew_ms`` moves the server's clock used by GET /time and the timestamp check.
    3. ``throttle_per_s`` limits each account to that many requests per second. A request over
       the limit gets 429 with Retry-After ``throttle_retry_after_s``, and so does every
       request of that account until then.
    4. The next ``rate_limited`` requests get 429 with the Retry-After header
       ``retry_after_header`` (seconds or an HTTP date).
    5. The next ``errors`` requests get HTTP ``error_status`` without being applied.
    6. Trades in ``liquidate_before_read`` are liquidated before the next read returns.
    """

    latency_s: float = 0.0
    clock_skew_ms: int = 0
    throttle_per_s: int | None = None
    throttle_retry_after_s: int = 1
    rate_limited: int = 0
    retry_after_header: str = "1"
    errors: int = 0
    error_status: int = 503
    hold_s: float = 5.0
    liquidate_before_read: set[str] = field(default_factory=set)
    _arrivals_s: dict[str, deque[float]] = field(
        default_factory=lambda: defaultdict(deque), init=False, repr=False
    )
    _blocked_until_s: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _release: asyncio.Event | None = field(default=None, init=False, repr=False)

    def update(self, settings: Mapping[str, Any]) -> None:
        """Set the faults named in ``settings``, raising InvalidConfigError for an unknown name."""
        for name, value in settings.items():
            if name.startswith("_") or name not in self.__dataclass_fields__:
                raise InvalidConfigError(name, "is not a fault of the mock exchange")
            if name == "liquidate_before_read":
                value = set(value) if isinstance(value, list | set) else {str(value)}
            setattr(self, name, value)

    def take_error_status(self) -> int | None:
        """Return the status of an injected failure for this request, using it up, or None."""
        if self.errors > 0:
            self.errors -= 1
            return self.error_status
        return None

    def take_rate_limit(self) -> str | None:
        """Return the Retry-After value of an injected 429 for this request, or None."""
        if self.rate_limited > 0:
            self.rate_limited -= 1
            return self.retry_after_header
        return None

    def throttle(self, account_id: str) -> int | None:
        """Count a request of ``account_id`` and return Retry-After in seconds when it is over."""
        now_s = time.monotonic()
        blocked_until_s = self._blocked_until_s.get(account_id, 0.0)
        if now_s < blocked_until_s:
            return max(math.ceil(blocked_until_s - now_s), 1)
        if self.throttle_per_s is None:
            return None

        arrivals = self._arrivals_s[account_id]
        while arrivals and arrivals[0] <= now_s - 1.0:
            arrivals.popleft()
        if len(arrivals) >= self.throttle_per_s:
            self._blocked_until_s[account_id] = now_s + self.throttle_retry_after_s
            return self.throttle_retry_after_s
        arrivals.append(now_s)
        return None

    async def hold(self) -> None:
        """Wait ``hold_s`` seconds, or less when ``release_held`` is called."""
        if self._release is None:
            self._release = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), self.hold_s)

    def release_held(self) -> None:
        """Send every held reply now, such as when the server stops."""
        if self._release is not None:
            self._release.set()
