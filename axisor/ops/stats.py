"""Read-only views of a queue: job counts, rates, failed jobs, priorities and Redis memory.

Counts come straight from BullMQ's keys: the ``wait``, ``paused`` and ``active`` lists and the
``completed``, ``failed``, ``delayed`` and ``prioritized`` sorted sets. ``completed`` and
``failed`` are scored by ``finishedOn`` (epoch ms), which gives the rates.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from axisor.ops import QueueTarget, mask_secrets, queue_session

STATES = ("waiting", "active", "completed", "failed", "delayed", "prioritized", "paused")
_LIST_KEYS = {"waiting": "wait", "active": "active", "paused": "paused"}
_SET_KEYS = {
    "completed": "completed",
    "failed": "failed",
    "delayed": "delayed",
    "prioritized": "prioritized",
}
# BullMQ scores a prioritized job priority * 2**32 plus a counter, so the priority is the high part.
PRIORITY_SCALE = 2**32
PRIORITY_BUCKETS = ((1, 1), (2, 10), (11, 100), (101, 1_000), (1_001, 10_000), (10_001, 2**21))


@dataclass
class QueueStats:
    """Job counts of one queue and its finishing rates over the last ``window_s`` seconds."""

    queue: str
    counts: dict[str, int]
    is_paused: bool
    window_s: int
    completed_per_min: float
    failed_per_min: float
    schedulers: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def count_jobs(client: Redis, target: QueueTarget) -> dict[str, int]:
    """Return the number of jobs in every state, read in one pipeline."""
    async with client.pipeline(transaction=False) as pipe:
        for suffix in _LIST_KEYS.values():
            pipe.llen(target.key(suffix))
        for suffix in _SET_KEYS.values():
            pipe.zcard(target.key(suffix))
        values = await pipe.execute()
    names = [*_LIST_KEYS, *_SET_KEYS]
    return {name: int(value) for name, value in zip(names, values, strict=True)}


async def is_paused(client: Redis, target: QueueTarget) -> bool:
    return bool(await client.hexists(target.key("meta"), "paused"))


async def finished_since(client: Redis, target: QueueTarget, state: str, since_ms: int) -> int:
    """Return how many jobs reached ``state`` (completed or failed) at or after ``since_ms``.

    NOTE: jobs already removed by removeOnComplete/removeOnFail are not counted, so the rate is
    low when more jobs finish than the kept count allows in the window.
    """
    return int(await client.zcount(target.key(state), since_ms, "+inf"))


async def queue_stats(client: Redis, target: QueueTarget, window_s: int = 300) -> QueueStats:
    """Return the counts of ``target`` and its completed and failed jobs per minute."""
    since_ms = int(time.time() * 1000) - window_s * 1000
    completed = await finished_since(client, target, "completed", since_ms)
    failed = await finished_since(client, target, "failed", since_ms)
    minutes = window_s / 60
    return QueueStats(
        queue=target.name,
        counts=await count_jobs(client, target),
        is_paused=await is_paused(client, target),
        window_s=window_s,
        completed_per_min=round(completed / minutes, 2),
        failed_per_min=round(failed / minutes, 2),
        schedulers=int(await client.zcard(target.key("repeat"))),
    )


@dataclass
class FailedJob:
    """A failed job as operators read it; ``data`` has its secrets masked."""

    id: str
    name: str
    reason: str | None
    attempts_made: int
    attempts: int
    finished_on_ms: int
    data: Any = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def failed_jobs(redis_url: str, target: QueueTarget, limit: int = 20) -> list[FailedJob]:
    """Return the ``limit`` most recently failed jobs, newest first."""
    async with queue_session(redis_url, target) as queue:
        jobs = await queue.getFailed(0, max(limit, 1) - 1)
    return [
        FailedJob(
            id=str(job.id),
            name=job.name,
            reason=job.failedReason,
            attempts_made=job.attemptsMade,
            attempts=int(job.opts.get("attempts") or 1),
            finished_on_ms=job.finishedOn or 0,
            data=mask_secrets(job.data),
        )
        for job in jobs
    ]


async def priority_buckets(client: Redis, target: QueueTarget) -> list[dict[str, Any]]:
    """Return the waiting jobs per priority range; jobs added without a priority come last."""
    rows = []
    for low, high in PRIORITY_BUCKETS:
        count = await client.zcount(
            target.key("prioritized"), low * PRIORITY_SCALE, (high + 1) * PRIORITY_SCALE - 1
        )
        rows.append({"priority": _bucket_label(low, high), "waiting": int(count)})
    rows.append({"priority": "none", "waiting": int(await client.llen(target.key("wait")))})
    return rows


def _bucket_label(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}"


@dataclass
class RedisMemory:
    """Redis memory figures in bytes and the eviction policy, with a warning when it can evict."""

    used_bytes: int
    peak_bytes: int
    fragmentation_ratio: float
    maxmemory_bytes: int
    maxmemory_policy: str
    warning: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def redis_memory(client: Redis) -> RedisMemory:
    """Read INFO memory; any policy other than noeviction lets Redis delete job keys."""
    info = await client.info("memory")
    policy = str(info.get("maxmemory_policy", "unknown"))
    warning = None
    if policy != "noeviction":
        warning = (
            f"maxmemory-policy is {policy}: Redis may evict BullMQ keys and lose jobs; "
            "set maxmemory-policy noeviction"
        )
    return RedisMemory(
        used_bytes=int(info.get("used_memory", 0)),
        peak_bytes=int(info.get("used_memory_peak", 0)),
        fragmentation_ratio=float(info.get("mem_fragmentation_ratio", 0.0)),
        maxmemory_bytes=int(info.get("maxmemory", 0)),
        maxmemory_policy=policy,
        warning=warning,
    )


# Levels behind the advice of ``axisor queue optimize``; estimates to adjust per deployment.
WAITING_HIGH = 100
DELAYED_HIGH = 100
FAILED_SHARE_HIGH = 0.1


def advise(stats: QueueStats, worker_count: int) -> list[str]:
    """Return advice for the operator from one snapshot of the queue."""
    counts = stats.counts
    waiting = counts["waiting"] + counts["prioritized"]
    advice = []
    if waiting and worker_count == 0:
        advice.append(f"{waiting} jobs wait and no worker is registered: start workers")
    elif waiting >= WAITING_HIGH:
        advice.append(f"{waiting} jobs wait: add workers (see axisor pool recommend)")
    finished = stats.completed_per_min + stats.failed_per_min
    if stats.failed_per_min and stats.failed_per_min >= FAILED_SHARE_HIGH * finished:
        advice.append(
            f"{stats.failed_per_min:.1f}/min of {finished:.1f}/min finished jobs fail: "
            "read axisor queue failed"
        )
    if counts["delayed"] >= DELAYED_HIGH:
        advice.append(f"{counts['delayed']} jobs are delayed: review schedules and retry backoff")
    if stats.is_paused:
        advice.append("the queue is paused: axisor queue resume")
    return advice
