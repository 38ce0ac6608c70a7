"""Position-change events on a Redis stream: workers append, the engine reads and re-arms."""

from __future__ import annotations

from redis.asyncio import Redis

from axisor.queue.names import POSITION_EVENTS_STREAM

# The stream keeps about this many events. The engine re-reads positions from the database, so
# an event lost to trimming only delays a re-arm until the next full rebuild.
STREAM_MAX_LEN = 100_000


async def publish_position_changed(
    redis: Redis, position_id: int, stream: str = POSITION_EVENTS_STREAM
) -> None:
    await redis.xadd(
        stream,
        {"position_id": str(position_id)},
        maxlen=STREAM_MAX_LEN,
        approximate=True,
    )


class StreamIdReader:
    """Reads the integer ids in one field of a change stream, from where the stream ended at
    ``start``, never from the beginning."""

    def __init__(self, redis: Redis, stream: str, field: str) -> None:
        self.redis = redis
        self.stream = stream
        self.field = field.encode()
        self.last_id = "$"

    async def start(self) -> None:
        """Remember the current end of the stream, so that only later events are read."""
        newest = await self.redis.xrevrange(self.stream, count=1)
        self.last_id = newest[0][0] if newest else "0-0"

    async def read(self, block_ms: int | None = None) -> set[int]:
        """Return the ids announced since the last read."""
        changed: set[int] = set()
        while True:
            reply = await self.redis.xread({self.stream: self.last_id}, count=1000, block=block_ms)
            if not reply:
                return changed
            for event_id, fields in reply[0][1]:
                self.last_id = event_id
                changed.add(int(fields[self.field]))
            block_ms = None


class PositionEventReader(StreamIdReader):
    """Reads the ids of changed positions."""

    def __init__(self, redis: Redis, stream: str = POSITION_EVENTS_STREAM) -> None:
        super().__init__(redis, stream, "position_id")
