"""Waiting for a replay's BullMQ queue to drain."""

from __future__ import annotations

import asyncio
import time

from bullmq import Queue

BUSY_STATES = ("waiting", "active", "delayed", "prioritized", "waiting-children")


async def wait_until_idle(queue: Queue, timeout_s: float = 120.0) -> None:
    """Wait until the queue has no waiting, active, delayed or prioritized job."""
    deadline = time.monotonic() + timeout_s
    pause_s = 0.0005
    while True:
        counts = await queue.getJobCounts(*BUSY_STATES)
        if not any(counts.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue {queue.name} still busy after {timeout_s} s: {counts}")
        await asyncio.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.01)
