"""Worker health: the registry every worker heartbeats into, and the checks behind /health.

Registry: each worker keeps a hash ``axisor:worker:<name>`` (name is host-pid) whose TTL it
renews every HEARTBEAT_INTERVAL_S; the set ``axisor:workers`` indexes the names. A worker that
dies stops renewing, so its hash expires within HEARTBEAT_TTL_MS and it drops out of every list.
``axisor worker restart NAME`` sets ``axisor:worker:<name>:restart``, which the worker polls.

Health: a worker probes Redis itself (bullmq emits no event when Redis goes away), measures its
event-loop lag, and counts its completed and failed jobs. ``HealthMonitor.report`` turns these
into HEALTHY, DEGRADED or UNHEALTHY with every reason.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from axisor.ops import QueueTarget
from axisor.ops.stats import count_jobs

log = structlog.get_logger("axisor.health")

REGISTRY_INDEX = "axisor:workers"
HEARTBEAT_INTERVAL_S = 5.0
HEARTBEAT_TTL_MS = 15_000


def worker_key(name: str) -> str:
    return f"axisor:worker:{name}"


def restart_key(name: str) -> str:
    return f"axisor:worker:{name}:restart"


@dataclass
class WorkerInfo:
    """One registered worker as stored in its registry hash."""

    name: str
    queue: str
    concurrency: int
    started_at: str
    health_url: str | None
    active_jobs: int
    heartbeat_ms: int
    status: str = "UNKNOWN"
    bullmq_id: str = ""
    prefix: str = "bull"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_hash(cls, values: dict[str, str]) -> WorkerInfo:
        return cls(
            name=values["name"],
            queue=values.get("queue", ""),
            concurrency=int(values.get("concurrency") or 0),
            started_at=values.get("started_at", ""),
            health_url=values.get("health_url") or None,
            active_jobs=int(values.get("active_jobs") or 0),
            heartbeat_ms=int(values.get("heartbeat_ms") or 0),
            status=values.get("status", "UNKNOWN"),
            bullmq_id=values.get("bullmq_id", ""),
            prefix=values.get("prefix", "bull"),
        )


async def heartbeat(client: Redis, info: WorkerInfo, ttl_ms: int = HEARTBEAT_TTL_MS) -> None:
    """Write the worker's hash and renew its TTL."""
    info.heartbeat_ms = int(time.time() * 1000)
    mapping = {key: "" if value is None else str(value) for key, value in info.to_dict().items()}
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(worker_key(info.name), mapping=mapping)
        pipe.pexpire(worker_key(info.name), ttl_ms)
        pipe.sadd(REGISTRY_INDEX, info.name)
        await pipe.execute()


async def unregister(client: Redis, name: str) -> None:
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(worker_key(name), restart_key(name))
        pipe.srem(REGISTRY_INDEX, name)
        await pipe.execute()


async def list_workers(client: Redis, queue: str | None = None) -> list[WorkerInfo]:
    """Return the workers with a live heartbeat, sorted by name; expired names leave the index."""
    workers = []
    for name in sorted(await client.smembers(REGISTRY_INDEX)):
        values = await client.hgetall(worker_key(name))
        if not values:
            await client.srem(REGISTRY_INDEX, name)
            continue
        info = WorkerInfo.from_hash(values)
        if queue is None or info.queue == queue:
            workers.append(info)
    return workers


async def request_restart(client: Redis, name: str) -> bool:
    """Flag the worker to restart; return False when no worker of that name is registered."""
    if not await client.exists(worker_key(name)):
        return False
    await client.set(restart_key(name), str(int(time.time() * 1000)), px=HEARTBEAT_TTL_MS * 4)
    return True


async def take_restart_request(client: Redis, name: str) -> bool:
    """Return whether a restart was requested, and clear the flag."""
    return bool(await client.delete(restart_key(name)))


def resident_memory_bytes() -> int:
    """Return the resident set size from /proc, or the peak RSS where /proc is missing."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def probe_client(redis_url: str, timeout_s: float = 2.0) -> Redis:
    """Return a client that fails fast: the probe must see an outage, not wait it out."""
    return Redis.from_url(
        redis_url,
        decode_responses=True,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


@dataclass(frozen=True)
class HealthLimits:
    """Thresholds of the health status; times in milliseconds, memory in bytes."""

    redis_latency_ms: float = 100.0
    redis_down_unhealthy_ms: int = 10_000
    loop_lag_degraded_ms: float = 500.0
    loop_lag_unhealthy_ms: float = 5_000.0
    idle_with_waiting_ms: int = 300_000
    memory_bytes: int | None = None


@dataclass
class StreamStatus:
    """State of the exchange price stream in this worker, and the time since its last message.

    The stream client does not exist yet, so every worker reports ``not connected``.
    """

    state: str = "not connected"
    gap_ms: int | None = None
    last_message_ms: int | None = None


@dataclass
class HealthState:
    """Last probe measurements; epoch times and durations in ms."""

    redis_ok: bool = False
    redis_latency_ms: float | None = None
    redis_down_since_ms: int | None = None
    redis_error: str | None = None
    loop_lag_ms: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    processed: int = 0
    failed: int = 0
    last_completed_ms: int | None = None
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))


class HealthMonitor:
    """Runs the Redis probe and the loop-lag probe, and counts job outcomes of one worker."""

    def __init__(
        self,
        redis_url: str,
        target: QueueTarget,
        *,
        limits: HealthLimits | None = None,
        probe_interval_s: float = 2.0,
        metrics=None,
    ) -> None:
        self.redis_url = redis_url
        self.target = target
        self.limits = limits or HealthLimits()
        self.probe_interval_s = probe_interval_s
        self.state = HealthState()
        self.stream = StreamStatus()
        self.metrics = metrics
        self.worker_running = True
        self._client = probe_client(redis_url)
        self._tasks: list[asyncio.Task] = []

    def attach(self, worker) -> None:
        """Count the worker's completed and failed jobs and their durations."""
        worker.on("completed", lambda job, result: self.job_finished(job, failed=False))
        worker.on("failed", lambda job, error: self.job_finished(job, failed=True))

    def job_finished(self, job, *, failed: bool) -> None:
        now_ms = int(time.time() * 1000)
        duration_s = max(0, now_ms - (job.processedOn or now_ms)) / 1000
        if failed:
            self.state.failed += 1
        else:
            self.state.processed += 1
            self.state.last_completed_ms = now_ms
        if self.metrics is not None:
            self.metrics.job_finished(self.target.name, job.name, duration_s, failed)

    async def start(self) -> None:
        await self.probe_redis()
        self._tasks = [
            asyncio.create_task(self._every(self.probe_interval_s, self.probe_redis)),
            asyncio.create_task(self._measure_loop_lag()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()

    async def probe_redis(self) -> None:
        """PING Redis and read the job counts; record the outage start when it fails."""
        started = time.perf_counter()
        try:
            await self._client.ping()
            latency_ms = (time.perf_counter() - started) * 1000
            counts = await count_jobs(self._client, self.target)
        except (RedisError, OSError) as exc:
            self._redis_failed(exc)
            return
        if not self.state.redis_ok and self.state.redis_down_since_ms is not None:
            log.info("redis reachable again", gap_ms=self.redis_gap_ms(), queue=self.target.name)
        self.state.redis_ok = True
        self.state.redis_latency_ms = round(latency_ms, 2)
        self.state.redis_down_since_ms = None
        self.state.redis_error = None
        self.state.counts = counts

    def _redis_failed(self, exc: BaseException) -> None:
        if self.state.redis_down_since_ms is None:
            self.state.redis_down_since_ms = int(time.time() * 1000)
            log.error("redis unreachable", error=repr(exc), queue=self.target.name)
        self.state.redis_ok = False
        self.state.redis_latency_ms = None
        self.state.redis_error = type(exc).__name__

    def redis_gap_ms(self) -> int | None:
        since = self.state.redis_down_since_ms
        return None if since is None else int(time.time() * 1000) - since

    async def _every(self, interval_s: float, probe) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await probe()

    async def _measure_loop_lag(self, interval_s: float = 0.5) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(interval_s)
            lag_ms = (time.perf_counter() - started - interval_s) * 1000
            self.state.loop_lag_ms = round(max(0.0, lag_ms), 2)

    def report(self) -> dict[str, Any]:
        """Return the health document served at /health."""
        status, reasons = judge(self.state, self.limits, self.redis_gap_ms(), self.worker_running)
        now_ms = int(time.time() * 1000)
        last = self.state.last_completed_ms
        return {
            "status": status,
            "reasons": reasons,
            "queue": self.target.name,
            "redis": {
                "ok": self.state.redis_ok,
                "latency_ms": self.state.redis_latency_ms,
                "gap_ms": self.redis_gap_ms(),
                "error": self.state.redis_error,
            },
            "jobs": {
                "active": self.state.counts.get("active"),
                "waiting": _waiting(self.state.counts),
                "failed": self.state.counts.get("failed"),
                "processed_by_worker": self.state.processed,
                "failed_by_worker": self.state.failed,
            },
            "since_last_completed_ms": None if last is None else now_ms - last,
            "memory_rss_bytes": resident_memory_bytes(),
            "event_loop_lag_ms": self.state.loop_lag_ms,
            "exchange_stream": asdict(self.stream),
            "uptime_ms": now_ms - self.state.started_ms,
        }


def _waiting(counts: dict[str, int]) -> int | None:
    if not counts:
        return None
    return counts.get("waiting", 0) + counts.get("prioritized", 0) + counts.get("paused", 0)


def judge(
    state: HealthState, limits: HealthLimits, redis_gap_ms: int | None, worker_running: bool
) -> tuple[str, list[str]]:
    """Return (status, reasons): UNHEALTHY reasons first, then DEGRADED ones."""
    unhealthy = _unhealthy_reasons(state, limits, redis_gap_ms, worker_running)
    degraded = _degraded_reasons(state, limits, redis_gap_ms)
    if unhealthy:
        return "UNHEALTHY", unhealthy + degraded
    if degraded:
        return "DEGRADED", degraded
    return "HEALTHY", []


def _unhealthy_reasons(
    state: HealthState, limits: HealthLimits, redis_gap_ms: int | None, worker_running: bool
) -> list[str]:
    reasons = []
    if not worker_running:
        reasons.append("the BullMQ worker is not running")
    if redis_gap_ms is not None and redis_gap_ms >= limits.redis_down_unhealthy_ms:
        reasons.append(f"redis unreachable for {redis_gap_ms} ms ({state.redis_error})")
    if state.loop_lag_ms >= limits.loop_lag_unhealthy_ms:
        reasons.append(f"event loop lag {state.loop_lag_ms} ms: lock renewal is at risk")
    return reasons


def _degraded_reasons(
    state: HealthState, limits: HealthLimits, redis_gap_ms: int | None
) -> list[str]:
    reasons = []
    if redis_gap_ms is not None and redis_gap_ms < limits.redis_down_unhealthy_ms:
        reasons.append(f"redis unreachable for {redis_gap_ms} ms ({state.redis_error})")
    latency = state.redis_latency_ms
    if latency is not None and latency > limits.redis_latency_ms:
        reasons.append(f"redis latency {latency} ms is above {limits.redis_latency_ms} ms")
    if limits.loop_lag_degraded_ms <= state.loop_lag_ms < limits.loop_lag_unhealthy_ms:
        reasons.append(f"event loop lag {state.loop_lag_ms} ms")
    reasons.extend(_idle_reasons(state, limits))
    rss = resident_memory_bytes()
    if limits.memory_bytes is not None and rss > limits.memory_bytes:
        reasons.append(f"resident memory {rss} bytes is above {limits.memory_bytes} bytes")
    return reasons


def _idle_reasons(state: HealthState, limits: HealthLimits) -> list[str]:
    """Jobs are waiting but none completed within the limit: the pool may be wedged."""
    waiting = _waiting(state.counts) or 0
    if waiting == 0:
        return []
    now_ms = int(time.time() * 1000)
    since_ms = now_ms - (state.last_completed_ms or state.started_ms)
    if since_ms < limits.idle_with_waiting_ms:
        return []
    return [f"{waiting} jobs waiting and no job completed for {since_ms} ms"]
