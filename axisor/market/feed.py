"""Price feeds: anything that yields ``PriceUpdate`` with ``async for``, replayed or live.

``ReplayFeed`` turns the ticks of a ``Replay`` into updates on the venue's 0.5 USD tick.
``StreamFeed`` runs a ``StreamClient`` and yields what it receives, from the stream or from
REST polling while the stream is down. ``drive`` feeds either one into ``Engine.on_tick``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Protocol, runtime_checkable

import structlog

from axisor.errors import InvalidConfigError
from axisor.exchange.math import quantize_price
from axisor.market.replay import Replay
from axisor.market.stream import (
    PriceUpdate,
    StreamAccount,
    StreamClient,
    StreamSettings,
    StreamStatus,
    TickerPoller,
    TradeCallback,
)

log = structlog.get_logger("axisor.market.feed")

TickHandler = Callable[[Decimal, int, int], Awaitable[object]]


@runtime_checkable
class PriceFeed(Protocol):
    """A source of prices read with ``async for update in feed`` and stopped with ``aclose``."""

    def __aiter__(self) -> AsyncIterator[PriceUpdate]: ...

    async def aclose(self) -> None: ...


async def drive(feed: PriceFeed, on_tick: TickHandler) -> int:
    """Call ``on_tick(price, time_ms, received_ns)``, such as ``Engine.on_tick``, per update.

    Returns the number of updates when the feed ends.
    """
    count = 0
    async for update in feed:
        await on_tick(update.price, update.time_ms, update.received_ns)
        count += 1
    return count


class ReplayFeed:
    """The ticks of a replay as price updates, quantized to the 0.5 USD tick.

    ``speed`` None yields as fast as the reader takes them. A number waits the time between
    ticks divided by ``speed``, so 60 plays one minute of history per second.
    """

    def __init__(self, replay: Replay, *, speed: float | None = None) -> None:
        if speed is not None and not speed > 0:
            raise InvalidConfigError("speed", f"is {speed!r}, but must be above 0 or None")
        self.replay = replay
        self.speed = speed
        self._closed = False

    def __aiter__(self) -> AsyncIterator[PriceUpdate]:
        return self._updates()

    async def aclose(self) -> None:
        self._closed = True

    async def _updates(self) -> AsyncIterator[PriceUpdate]:
        previous_ms: int | None = None
        for tick in self.replay.ticks():
            if self._closed:
                return
            await asyncio.sleep(self._wait_s(previous_ms, tick.time_ms))
            previous_ms = tick.time_ms
            price = quantize_price(tick.price)
            yield PriceUpdate(price, tick.time_ms, time.time_ns(), "replay")

    def _wait_s(self, previous_ms: int | None, time_ms: int) -> float:
        """Return the pause before a tick. A pause of 0 still lets other tasks run."""
        if self.speed is None or previous_ms is None:
            return 0.0
        return (time_ms - previous_ms) / 1000 / self.speed


class StreamFeed:
    """Live prices from a ``StreamClient`` that this feed starts and stops.

    Updates wait in a queue of at most ``max_queued``. When the reader falls that far behind,
    the oldest update is dropped and counted in ``dropped``. Iteration ends after ``aclose``.
    """

    def __init__(
        self,
        url: str,
        *,
        poll_ticker: TickerPoller | None = None,
        account: StreamAccount | None = None,
        on_trade: TradeCallback | None = None,
        settings: StreamSettings | None = None,
        max_queued: int = 10_000,
    ) -> None:
        if max_queued < 1:
            raise InvalidConfigError("max_queued", f"is {max_queued}, but must be at least 1")
        # None marks the end of the feed.
        self._queue: asyncio.Queue[PriceUpdate | None] = asyncio.Queue(maxsize=max_queued)
        self.dropped = 0
        self.client = StreamClient(
            url,
            on_price=self._enqueue,
            on_trade=on_trade,
            account=account,
            poll_ticker=poll_ticker,
            settings=settings,
        )

    def __aiter__(self) -> AsyncIterator[PriceUpdate]:
        self.client.start()
        return self._updates()

    async def aclose(self) -> None:
        await self.client.aclose()
        self._put(None)

    def status(self) -> StreamStatus:
        return self.client.status()

    async def _enqueue(self, update: PriceUpdate) -> None:
        self._put(update)

    def _put(self, item: PriceUpdate | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("feed.updates_dropped", dropped=self.dropped, reason="reader is slow")
        self._queue.put_nowait(item)

    async def _updates(self) -> AsyncIterator[PriceUpdate]:
        while (update := await self._queue.get()) is not None:
            yield update


__all__ = ["PriceFeed", "ReplayFeed", "StreamFeed", "TickHandler", "drive"]
