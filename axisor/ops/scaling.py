"""Recommend the number of worker processes a queue needs, from its measured load.

The model, per queue:

    service_s     mean processing time of recently completed jobs (finishedOn - processedOn)
    busy_slots    arrival_per_s * service_s         jobs in service on average (Little's law)
    backlog_slots waiting * service_s / drain_s     slots that clear the backlog within drain_s
    needed_slots  (busy_slots + backlog_slots) / target_utilisation
    raw           ceil(needed_slots / concurrency)  worker processes
    bounded       raw clamped to [min_workers, max_workers]

Hysteresis: the current count is kept unless the bounded figure differs from it by more than
``margin`` (a fraction of the current count), so the pool does not flap on small changes.
Arrivals and completions are counted in the queue's event stream over the window.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from axisor.ops import QueueTarget
from axisor.ops.health import list_workers
from axisor.ops.stats import count_jobs

DEFAULT_SERVICE_S = 1.0
SAMPLE_JOBS = 200


@dataclass(frozen=True)
class ScalingPolicy:
    """Bounds and targets of the recommendation."""

    min_workers: int = 1
    max_workers: int = 20
    target_utilisation: float = 0.7
    drain_s: float = 60.0
    margin: float = 0.2
    window_s: int = 300


@dataclass
class Load:
    """Measured load of one queue over a window; rates per second, times in seconds."""

    waiting: int
    arrival_per_s: float
    completion_per_s: float
    service_s: float
    service_samples: int
    window_s: float
    current_workers: int
    concurrency: int


@dataclass
class Recommendation:
    queue: str
    recommended: int
    raw: int
    utilisation: float | None
    load: Load
    reasoning: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def measure_load(
    client: Redis, target: QueueTarget, window_s: int, default_concurrency: int
) -> Load:
    """Read waiting jobs, event rates, processing times and the registered workers."""
    counts = await count_jobs(client, target)
    arrivals, completions, covered_s = await _event_rates(client, target, window_s)
    service_s, samples = await _mean_service_s(client, target)
    workers = await list_workers(client, target.name)
    concurrency = (
        round(sum(w.concurrency for w in workers) / len(workers))
        if workers
        else default_concurrency
    )
    return Load(
        waiting=counts["waiting"] + counts["prioritized"],
        arrival_per_s=arrivals / covered_s,
        completion_per_s=completions / covered_s,
        service_s=service_s,
        service_samples=samples,
        window_s=covered_s,
        current_workers=len(workers),
        concurrency=max(1, concurrency),
    )


async def _event_rates(client: Redis, target: QueueTarget, window_s: int) -> tuple[int, int, float]:
    """Count added and completed events in the window; return them and the seconds covered.

    BullMQ trims the event stream (about 10,000 entries by default), so when its oldest entry is
    younger than the window the rates are taken over the shorter span that it covers.
    """
    now_ms = int(time.time() * 1000)
    since_ms = now_ms - window_s * 1000
    entries = await client.xrange(target.key("events"), min=f"{since_ms}-0", max="+")
    oldest = await client.xrange(target.key("events"), count=1)
    start_ms = since_ms
    if oldest:
        start_ms = max(since_ms, int(oldest[0][0].split("-")[0]))
    covered_s = max(1.0, (now_ms - start_ms) / 1000)
    events = [fields.get("event") for _, fields in entries]
    return events.count("added"), events.count("completed"), covered_s


async def _mean_service_s(client: Redis, target: QueueTarget) -> tuple[float, int]:
    ids = await client.zrevrange(target.key("completed"), 0, SAMPLE_JOBS - 1)
    durations = []
    for job_id in ids:
        processed, finished = await client.hmget(target.key(job_id), "processedOn", "finishedOn")
        if processed and finished:
            durations.append(max(0, int(finished) - int(processed)) / 1000)
    if not durations:
        return DEFAULT_SERVICE_S, 0
    return sum(durations) / len(durations), len(durations)


def recommend(queue: str, load: Load, policy: ScalingPolicy) -> Recommendation:
    """Apply the model in the module docstring to ``load``."""
    busy = load.arrival_per_s * load.service_s
    backlog = load.waiting * load.service_s / policy.drain_s
    needed = (busy + backlog) / policy.target_utilisation
    # Rounding first keeps float noise such as 12.000000000000002 from adding a worker.
    raw = math.ceil(round(needed / load.concurrency, 6)) if needed > 0 else 0
    bounded = min(policy.max_workers, max(policy.min_workers, raw))
    capacity = load.current_workers * load.concurrency
    utilisation = round(busy / capacity, 3) if capacity else None
    recommended, kept = _with_hysteresis(bounded, load.current_workers, policy.margin)
    result = Recommendation(queue, recommended, raw, utilisation, load)
    result.reasoning = _explain(load, policy, busy, backlog, needed, raw, bounded, kept)
    return result


def _with_hysteresis(bounded: int, current: int, margin: float) -> tuple[int, bool]:
    if current > 0 and abs(bounded - current) <= margin * current:
        return current, True
    return bounded, False


def _explain(
    load: Load,
    policy: ScalingPolicy,
    busy: float,
    backlog: float,
    needed: float,
    raw: int,
    bounded: int,
    kept: bool,
) -> list[str]:
    service = f"{load.service_s:.3f} s mean processing time over {load.service_samples} jobs"
    if load.service_samples == 0:
        service = f"no completed jobs to measure, assumed {DEFAULT_SERVICE_S} s per job"
    lines = [
        f"{load.arrival_per_s * 60:.1f} jobs/min arrive and {load.completion_per_s * 60:.1f} "
        f"complete over the last {load.window_s:.0f} s; {service}",
        f"busy slots {busy:.2f} + backlog slots {backlog:.2f} ({load.waiting} waiting, drained "
        f"in {policy.drain_s:.0f} s) at {policy.target_utilisation:.0%} utilisation = "
        f"{needed:.2f} slots = {raw} workers of concurrency {load.concurrency}",
        f"bounded to [{policy.min_workers}, {policy.max_workers}]: {bounded}",
    ]
    if kept:
        lines.append(
            f"keeping {load.current_workers} workers: the change is within the "
            f"{policy.margin:.0%} margin"
        )
    return lines


async def recommend_for_queue(
    client: Redis, target: QueueTarget, policy: ScalingPolicy, default_concurrency: int
) -> Recommendation:
    load = await measure_load(client, target, policy.window_s, default_concurrency)
    return recommend(target.name, load, policy)
