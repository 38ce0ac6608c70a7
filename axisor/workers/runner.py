"""BullMQ workers: one per queue, each dispatching jobs by name to their processor."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

import structlog
from bullmq import UnrecoverableError, Worker
from pydantic import ValidationError

from axisor.automations.engine import automation_events_stream, publish_automation_changed
from axisor.automations.store import arm as arm_automation
from axisor.engine.cross import publish_cross_changed
from axisor.errors import AxisorError, RetryLaterError, StateUnknownError
from axisor.ops.stuck import record_worker
from axisor.queue.jobs import AutomationJob, GuardActionJob, GuardCheckJob, GuardCrossJob
from axisor.queue.names import (
    AUTOMATION_JOB,
    GUARD_ACTION_JOB,
    GUARD_CHECK_JOB,
    GUARD_CROSS_JOB,
    MARGIN_GUARD_QUEUE,
)
from axisor.workers.automation import run_automation
from axisor.workers.context import WorkerContext
from axisor.workers.guard_action import run_guard_action
from axisor.workers.guard_check import run_guard_check
from axisor.workers.guard_cross import run_guard_cross

log = structlog.get_logger("axisor.worker")

PROCESSORS = {
    GUARD_CHECK_JOB: (GuardCheckJob, run_guard_check),
    GUARD_ACTION_JOB: (GuardActionJob, run_guard_action),
    GUARD_CROSS_JOB: (GuardCrossJob, run_guard_cross),
    AUTOMATION_JOB: (AutomationJob, run_automation),
}


def worker_name() -> str:
    """Return host-pid, the name operators see in worker lists."""
    return f"{socket.gethostname()}-{os.getpid()}"


def make_processor(ctx: WorkerContext, timeout_ms: int):
    """Return the BullMQ processor: validate the payload, run it under the timeout, log once."""

    async def process(job, token) -> dict[str, Any]:
        started = time.perf_counter()
        await record_worker(job, ctx.worker_name)
        bound = log.bind(
            job_id=job.id, job_name=job.name, queue=job.queue.name, attempt=job.attemptsMade + 1
        )
        try:
            schema, handler = PROCESSORS[job.name]
        except KeyError:
            bound.error("job name unknown")
            raise UnrecoverableError(f"no processor for job name {job.name!r}") from None
        try:
            payload = schema.model_validate(job.data)
        except ValidationError as exc:
            # Another attempt would read the same payload, so the job fails at once.
            bound.error("job payload invalid", error=str(exc))
            raise UnrecoverableError(f"invalid payload: {exc}") from exc
        try:
            result = await asyncio.wait_for(handler(ctx, payload), timeout_ms / 1000)
        except Exception as exc:
            final = not is_retryable(exc) or job.attemptsMade + 1 >= job.attempts
            bound.warning(
                "job failed",
                error=str(exc) or type(exc).__name__,
                error_type=type(exc).__name__,
                duration_ms=_ms_since(started),
                final=final,
            )
            if final:
                await _on_final_failure(ctx, job.name, payload, exc)
            if not is_retryable(exc):
                raise UnrecoverableError(f"{type(exc).__name__}: {exc}") from exc
            raise
        bound.info("job completed", duration_ms=_ms_since(started), **_brief(result))
        return result

    return process


def is_retryable(error: BaseException) -> bool:
    """Return whether another attempt may succeed: transient errors and unknown outcomes retry,
    invalid input and the platform's other deliberate errors do not."""
    if isinstance(error, RetryLaterError | StateUnknownError | TimeoutError):
        return True
    return not isinstance(error, AxisorError | ValidationError)


async def _on_final_failure(ctx: WorkerContext, name: str, payload, error: BaseException) -> None:
    """Re-arm what the failed job was for, so the guard or the automation can try again.

    A guard action also counts the failed attempt on its position.
    """
    if name == AUTOMATION_JOB:
        await _rearm_automation(ctx, payload, error)
        return
    if name == GUARD_CROSS_JOB:
        log.critical(
            "protective action failed",
            account_id=payload.account_id,
            position_id=payload.position_id,
            error=repr(error),
        )
        await publish_cross_changed(ctx.redis, payload.account_id)
        return
    if name != GUARD_ACTION_JOB:
        return
    position_id = payload.position_id
    log.critical("protective action failed", position_id=position_id, error=repr(error))
    await ctx.db(ctx.positions.record_failure, position_id, payload.action, repr(error))
    await ctx.position_changed(position_id)


async def _rearm_automation(ctx: WorkerContext, payload, error: BaseException) -> None:
    automation_id = payload.automation_id
    log.critical("automation action failed", automation_id=automation_id, error=repr(error))
    try:
        await ctx.db(arm_automation, ctx.database, automation_id)
    except AxisorError as exc:
        # For example a plan that no longer allows it: the automation stays disarmed.
        log.error("automation not re-armed", automation_id=automation_id, error=str(exc))
        return
    stream = automation_events_stream(ctx.events_stream)
    await publish_automation_changed(ctx.redis, automation_id, stream)


def _log_failed(queue: str, job, error: BaseException) -> None:
    """Log a job whose attempt failed, including failures outside the processor."""
    final = job.attemptsMade >= job.attempts
    level = log.error if final else log.warning
    level(
        "job attempt failed",
        queue=queue,
        job_id=job.id,
        job_name=job.name,
        attempts_made=job.attemptsMade,
        final=final,
        error=repr(error),
    )


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key in ("outcome", "account_id")}


def start_worker(
    ctx: WorkerContext,
    redis_url: str,
    *,
    queue: str = MARGIN_GUARD_QUEUE,
    concurrency: int = 5,
    timeout_ms: int = 30_000,
    prefix: str = "bull",
    lock_duration_ms: int | None = None,
    stalled_interval_ms: int = 30_000,
) -> Worker:
    """Start a BullMQ worker on ``queue``; the caller closes it with ``await worker.close()``.

    By default the lock lasts twice the job timeout (at least 30 s), so a job inside its timeout
    keeps its lock as long as the event loop can renew it (database calls run in threads).
    ``lock_duration_ms`` overrides it. A job of a killed worker stays active until its lock
    expires, and the next stalled-job check of another worker (every ``stalled_interval_ms``)
    moves it back to wait.
    """
    options = {
        "connection": redis_url,
        "concurrency": concurrency,
        "name": ctx.worker_name,
        "prefix": prefix,
        "lockDuration": lock_duration_ms or max(30_000, 2 * timeout_ms),
        "stalledInterval": stalled_interval_ms,
        "maxStalledCount": 1,
    }
    worker = Worker(queue, make_processor(ctx, timeout_ms), options)
    worker.on("error", lambda error, *_: log.error("worker error", queue=queue, error=repr(error)))
    worker.on("failed", lambda job, error: _log_failed(queue, job, error))
    return worker
