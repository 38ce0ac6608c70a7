"""Changes to a queue: clean old jobs, pause and resume, retry failed jobs, promote delayed ones.

Cleaning never removes the next run of a repeating job: a job whose id starts with ``repeat:``
or that carries a job scheduler key (``rjk``) is kept in every state that can hold a next run.
A retry of a Margin Guard action is rejected when the action ledger shows the exchange already
applied the action.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from axisor.db.models import LedgerState
from axisor.ledger import LedgerRecord
from axisor.ops import QueueTarget, queue_session, redis_client
from axisor.queue.names import GUARD_ACTION_JOB

FINISHED_STATES = ("completed", "failed")
# States whose jobs have not run yet; a job scheduler keeps its next run in one of them.
PENDING_STATES = ("delayed", "wait", "prioritized", "paused")
CLEAN_STATES = FINISHED_STATES + PENDING_STATES
REPEAT_ID_PREFIX = "repeat:"

LedgerLookup = Callable[[str], LedgerRecord | None]


@dataclass
class CleanResult:
    """Jobs removed (or, in a dry run, that would be removed) per state, and scheduler runs kept."""

    queue: str
    dry_run: bool
    removed: dict[str, list[str]] = field(default_factory=dict)
    kept_scheduled: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def removed_count(self) -> int:
        return sum(len(ids) for ids in self.removed.values())


async def clean(
    redis_url: str,
    target: QueueTarget,
    grace_ms: dict[str, int],
    *,
    limit: int = 10_000,
    dry_run: bool = False,
) -> CleanResult:
    """Remove jobs older than their state's grace period, at most ``limit`` per state.

    ``grace_ms`` maps a state in CLEAN_STATES to its grace in milliseconds. A finished job's
    age counts from ``finishedOn``; a pending job's from ``processedOn``, else its creation.
    """
    result = CleanResult(queue=target.name, dry_run=dry_run)
    now_ms = int(time.time() * 1000)
    async with redis_client(redis_url) as client, queue_session(redis_url, target) as queue:
        for state, grace in grace_ms.items():
            if state not in CLEAN_STATES:
                raise ValueError(f"cannot clean state {state!r}; expected one of {CLEAN_STATES}")
            cutoff_ms = now_ms - grace
            if state in FINISHED_STATES:
                ids = await _finished_ids(client, target, state, cutoff_ms, limit)
                if not dry_run and ids:
                    ids = [str(i) for i in await queue.clean(grace, limit, state)]
            else:
                ids, kept = await _pending_candidates(client, target, state, cutoff_ms, limit)
                result.kept_scheduled.extend(kept)
                if not dry_run:
                    ids = [i for i in ids if await queue.remove(i)]
            result.removed[state] = ids
    return result


async def _finished_ids(
    client: Redis, target: QueueTarget, state: str, cutoff_ms: int, limit: int
) -> list[str]:
    return await client.zrangebyscore(target.key(state), "-inf", cutoff_ms, start=0, num=limit)


async def _pending_candidates(
    client: Redis, target: QueueTarget, state: str, cutoff_ms: int, limit: int
) -> tuple[list[str], list[str]]:
    """Return (old jobs to remove, scheduler runs kept) among the jobs in ``state``."""
    key = target.key(state)
    if state in ("delayed", "prioritized"):
        ids = await client.zrange(key, 0, -1)
    else:
        ids = await client.lrange(key, 0, -1)
    remove, kept = [], []
    for job_id in ids:
        fields = await client.hmget(target.key(job_id), "rjk", "processedOn", "timestamp")
        if job_id.startswith(REPEAT_ID_PREFIX) or fields[0]:
            kept.append(job_id)
            continue
        started_ms = int(fields[1] or fields[2] or 0)
        if started_ms <= cutoff_ms and len(remove) < limit:
            remove.append(job_id)
    return remove, kept


async def set_paused(redis_url: str, target: QueueTarget, paused: bool) -> bool:
    """Pause or resume the queue; return whether it was paused before.

    A paused queue gives no job to any worker, including one already blocked waiting and
    delayed jobs that come due; jobs already running finish.
    """
    async with queue_session(redis_url, target) as queue:
        was_paused = bool(await queue.isPaused())
        if paused != was_paused:
            await (queue.pause() if paused else queue.resume())
    return was_paused


def ledger_key(job_name: str, data: Any) -> str | None:
    """Return the idempotency key of a Margin Guard action job, None for other jobs."""
    if job_name != GUARD_ACTION_JOB or not isinstance(data, dict):
        return None
    try:
        return f"guard:{int(data['position_id'])}:{int(data['version'])}:{data['action']}"
    except (KeyError, TypeError, ValueError):
        return None


async def retry_rejection(job_name: str, data: Any, lookup: LedgerLookup | None) -> str | None:
    """Return why a job must not run again, or None when a retry is safe."""
    key = ledger_key(job_name, data)
    if key is None or lookup is None:
        return None
    record = await asyncio.to_thread(lookup, key)
    if record is not None and record.state is LedgerState.CONFIRMED:
        return f"the ledger shows action {key} confirmed: the exchange already applied it"
    return None


@dataclass
class RetryResult:
    """Failed jobs moved back to wait, and those rejected with the reason."""

    queue: str
    retried: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def retry_failed(
    redis_url: str,
    target: QueueTarget,
    job_id: str | None = None,
    *,
    lookup: LedgerLookup | None = None,
    limit: int = 1_000,
) -> RetryResult:
    """Move one failed job, or up to ``limit`` of them, back to wait with fresh attempts."""
    result = RetryResult(queue=target.name)
    async with queue_session(redis_url, target) as queue:
        jobs = await _failed_jobs(queue, job_id, limit)
        for job in jobs:
            reason = await retry_rejection(job.name, job.data, lookup)
            if reason is not None:
                result.rejected[str(job.id)] = reason
                continue
            await job.retry("failed", {"resetAttemptsMade": True})
            result.retried.append(str(job.id))
    return result


async def _failed_jobs(queue, job_id: str | None, limit: int) -> list:
    if job_id is None:
        return await queue.getFailed(0, limit - 1)
    job = await queue.getJob(job_id)
    if job is None:
        raise LookupError(f"job {job_id} not found in queue {queue.name}")
    state = await queue.getJobState(job_id)
    if state != "failed":
        raise LookupError(f"job {job_id} is {state}, not failed; only failed jobs can be retried")
    return [job]


async def promote(redis_url: str, target: QueueTarget, job_id: str | None = None) -> list[str]:
    """Move one delayed job, or every delayed job, to wait so it runs now; return their ids."""
    async with redis_client(redis_url) as client, queue_session(redis_url, target) as queue:
        if job_id is not None:
            if await client.zscore(target.key("delayed"), job_id) is None:
                raise LookupError(f"job {job_id} is not delayed in queue {target.name}")
            await queue.backend.promote(job_id)
            return [job_id]
        ids = await client.zrange(target.key("delayed"), 0, -1)
        await queue.promoteJobs()
    return ids
