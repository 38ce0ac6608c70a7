"""Stuck jobs: active jobs that no live worker holds, found by lock and heartbeat.

A job is stuck when it is in the ``active`` list and either its lock key
``<prefix>:<queue>:<id>:lock`` is missing (the worker stopped renewing it), or the worker
recorded on the job no longer has a registry heartbeat. Creation and queueing times play no part,
so a slow job whose worker is alive is never stuck. Jobs in ``completed`` are never examined,
and a leftover lock key on a completed job changes nothing.

Each check reads the active list, the locks and the recorded workers in one Lua script, and each
move re-checks the same condition inside its own script, so a job that finished or was retaken
in between is left alone.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from axisor.ops import QueueTarget, redis_client
from axisor.ops.cleanup import CleanResult, LedgerLookup, clean, retry_rejection
from axisor.ops.health import list_workers
from axisor.ops.stats import advise, queue_stats

# Field of the job hash in which the processor records the worker name (see record_worker).
WORKER_FIELD = "axisorWorker"

_SNAPSHOT_SCRIPT = """
local out = {}
for _, id in ipairs(redis.call("LRANGE", KEYS[1], 0, -1)) do
  local job = ARGV[1] .. id
  local lock = redis.call("GET", job .. ":lock") or ""
  local fields = redis.call("HMGET", job, ARGV[2], "name", "atm", "data")
  table.insert(out, {id, lock, fields[1] or "", fields[2] or "", fields[3] or "0", fields[4] or ""})
end
return out
"""

# KEYS: active, wait, paused, meta, prioritized, pc, marker, failed, events, stalled
# ARGV: job key prefix, job id, "wait" or "failed", reason, now_ms, recorded worker or "",
#       worker field name
_MOVE_SCRIPT = """
local job = ARGV[1] .. ARGV[2]
if not redis.call("LPOS", KEYS[1], ARGV[2]) then return 0 end
if ARGV[6] == "" then
  if redis.call("EXISTS", job .. ":lock") == 1 then return -1 end
elseif redis.call("HGET", job, ARGV[7]) ~= ARGV[6] then
  return -2
end
redis.call("LREM", KEYS[1], 1, ARGV[2])
redis.call("DEL", job .. ":lock")
redis.call("SREM", KEYS[10], ARGV[2])
if ARGV[3] == "failed" then
  redis.call("ZADD", KEYS[8], ARGV[5], ARGV[2])
  redis.call("HSET", job, "failedReason", ARGV[4], "finishedOn", ARGV[5])
  redis.call("XADD", KEYS[9], "*", "event", "failed", "jobId", ARGV[2],
             "failedReason", ARGV[4], "prev", "active")
  return 1
end
redis.call("HINCRBY", job, "stc", 1)
local priority = tonumber(redis.call("HGET", job, "priority") or "0")
local paused = redis.call("HEXISTS", KEYS[4], "paused") == 1
if priority > 0 then
  local counter = redis.call("INCR", KEYS[6])
  redis.call("ZADD", KEYS[5], priority * 4294967296 + counter % 4294967296, ARGV[2])
elseif paused then
  redis.call("RPUSH", KEYS[3], ARGV[2])
else
  redis.call("RPUSH", KEYS[2], ARGV[2])
end
if not paused then redis.call("ZADD", KEYS[7], 0, "0") end
redis.call("XADD", KEYS[9], "*", "event", "waiting", "jobId", ARGV[2], "prev", "active")
return 1
"""
_MOVE_KEYS = (
    "active",
    "wait",
    "paused",
    "meta",
    "prioritized",
    "pc",
    "marker",
    "failed",
    "events",
    "stalled",
)
_RECORD_SCRIPT = """
if redis.call("EXISTS", KEYS[1]) == 1 then return redis.call("HSET", KEYS[1], ARGV[1], ARGV[2]) end
return -1
"""


async def record_worker(job, worker_name: str) -> None:
    """Record on the job's hash which worker runs it; call first thing in the processor.

    The field goes away with the job. ``job.queue`` is the bullmq Worker that fetched the job.
    """
    worker = job.queue
    await worker.client.eval(
        _RECORD_SCRIPT, 1, worker.keys[""] + str(job.id), WORKER_FIELD, worker_name
    )


@dataclass
class StuckJob:
    """An active job that no live worker holds."""

    id: str
    name: str
    reason: str
    worker: str | None
    attempts_made: int
    data: Any = None
    action: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def find_stuck(client: Redis, target: QueueTarget, live_workers: set[str]) -> list[StuckJob]:
    """Return the active jobs of ``target`` whose lock is missing or whose worker is not live.

    ``live_workers`` contains the names with a registry heartbeat. A job with no recorded worker is
    judged by its lock alone.
    """
    rows = await client.eval(
        _SNAPSHOT_SCRIPT, 1, target.key("active"), target.key(""), WORKER_FIELD
    )
    stuck = []
    for job_id, lock, worker, name, attempts, data in rows:
        reason = _stuck_reason(lock, worker, live_workers)
        if reason is not None:
            stuck.append(
                StuckJob(
                    id=job_id,
                    name=name,
                    reason=reason,
                    worker=worker or None,
                    attempts_made=int(attempts),
                    data=_json_or_none(data),
                )
            )
    return stuck


def _stuck_reason(lock: str, worker: str, live_workers: set[str]) -> str | None:
    if not lock:
        return "lock expired: no worker renews it"
    if worker and worker not in live_workers:
        return f"worker {worker} has no heartbeat"
    return None


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


@dataclass
class StuckMoves:
    """Outcome per stuck job: moved, rejected with the reason, or skipped because it changed."""

    queue: str
    to: str
    moved: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SKIPPED = {
    0: "no longer active",
    -1: "its lock is held again",
    -2: "another worker took it",
}


async def move_stuck(
    client: Redis,
    target: QueueTarget,
    jobs: list[StuckJob],
    to: str,
    *,
    lookup: LedgerLookup | None = None,
) -> StuckMoves:
    """Move stuck jobs back to wait (``to="wait"``) or to failed (``to="failed"``).

    A job going back to wait whose exchange action the ledger shows confirmed is rejected.
    """
    if to not in ("wait", "failed"):
        raise ValueError(f"cannot move stuck jobs to {to!r}; expected wait or failed")
    moves = StuckMoves(queue=target.name, to=to)
    for job in jobs:
        if to == "wait":
            rejection = await retry_rejection(job.name, job.data, lookup)
            if rejection is not None:
                moves.rejected[job.id] = rejection
                continue
        outcome = await _move_one(client, target, job, to)
        if outcome == 1:
            moves.moved.append(job.id)
        else:
            moves.skipped[job.id] = _SKIPPED.get(outcome, f"unexpected result {outcome}")
    return moves


async def _move_one(client: Redis, target: QueueTarget, job: StuckJob, to: str) -> int:
    # A job judged by its lock is moved only while the lock is still missing. A job judged by
    # its worker is moved only while the same worker is still recorded on it.
    recorded = job.worker if job.reason.startswith("worker ") else ""
    keys = [target.key(suffix) for suffix in _MOVE_KEYS]
    reason = f"stuck: {job.reason}; moved by an operator"
    now_ms = str(int(time.time() * 1000))
    arguments = [target.key(""), job.id, to, reason, now_ms, recorded or "", WORKER_FIELD]
    return int(await client.eval(_MOVE_SCRIPT, len(keys), *keys, *arguments))


async def active_by_worker(client: Redis, target: QueueTarget, workers: list) -> dict[str, int]:
    """Count active jobs per worker name, from the lock token or the recorded worker.

    A lock token is ``<bullmq worker id>:<n>``; registered workers store their bullmq id.
    Jobs whose lock is missing count under ``(no lock)``.
    """
    names_by_id = {w.bullmq_id: w.name for w in workers if w.bullmq_id}
    rows = await client.eval(
        _SNAPSHOT_SCRIPT, 1, target.key("active"), target.key(""), WORKER_FIELD
    )
    counts: dict[str, int] = {}
    for _, lock, worker, *_ in rows:
        holder = names_by_id.get(lock.split(":")[0]) if lock else "(no lock)"
        name = holder or worker or "(unregistered)"
        counts[name] = counts.get(name, 0) + 1
    return counts


@dataclass
class OptimizeReport:
    """Findings of ``optimize`` and, unless it was a dry run, the changes it made."""

    queue: str
    dry_run: bool
    stuck: list[StuckJob]
    moves: StuckMoves | None
    cleaned: CleanResult
    advice: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def optimize(
    redis_url: str,
    target: QueueTarget,
    *,
    to: str = "wait",
    grace_ms: dict[str, int],
    lookup: LedgerLookup | None = None,
    dry_run: bool = False,
) -> OptimizeReport:
    """Find stuck jobs and move them, clean old finished jobs and advise on the queue."""
    async with redis_client(redis_url) as client:
        workers = await list_workers(client, target.name)
        stuck = await find_stuck(client, target, {w.name for w in workers})
        moves = None
        if stuck and not dry_run:
            moves = await move_stuck(client, target, stuck, to, lookup=lookup)
        cleaned = await clean(redis_url, target, grace_ms, dry_run=dry_run)
        advice = advise(await queue_stats(client, target), len(workers))
    return OptimizeReport(target.name, dry_run, stuck, moves, cleaned, advice)
