"""The exchange's clock as seen from here: local time plus a measured offset.

LN Markets rejects a signed request whose timestamp is too far from its own clock. The offset is
measured with GET /time, taking the server time as read at the midpoint of the round trip, and
measured again whenever the exchange rejects a request for its timestamp.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("axisor.exchange.lnmarkets")


def wall_clock_ms() -> int:
    """Return the local epoch time in milliseconds."""
    return time.time_ns() // 1_000_000


class ServerClock:
    """An estimate of the exchange's epoch milliseconds: the local clock plus a measured offset."""

    def __init__(self, local_ms: Callable[[], int] = wall_clock_ms) -> None:
        self._local_ms = local_ms
        self.offset_ms = 0
        self.measured = False

    def now_ms(self) -> int:
        """Return the estimated server time in epoch milliseconds."""
        return self._local_ms() + self.offset_ms

    def record(self, sent_ms: int, received_ms: int, server_ms: int) -> int:
        """Store the offset of one GET /time round trip and return it in milliseconds."""
        midpoint_ms = (sent_ms + received_ms) // 2
        self.offset_ms = server_ms - midpoint_ms
        self.measured = True
        return self.offset_ms

    async def measure(self, fetch_server_ms: Callable[[], Awaitable[int]]) -> int:
        """Measure the offset with one call of ``fetch_server_ms`` and return it."""
        sent_ms = self._local_ms()
        server_ms = await fetch_server_ms()
        received_ms = self._local_ms()
        offset_ms = self.record(sent_ms, received_ms, server_ms)
        log.info("lnm.clock.measured", offset_ms=offset_ms, round_trip_ms=received_ms - sent_ms)
        return offset_ms
