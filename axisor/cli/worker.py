"""``axisor worker``: run a worker with its health endpoint, list workers, read their health,
and ask one to restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

import click
import httpx
import structlog

from axisor.cli.common import confirm, emit, print_table, target_options
from axisor.config import Settings
from axisor.ops import QueueTarget, redis_client
from axisor.ops.health import (
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_TTL_MS,
    HealthMonitor,
    WorkerInfo,
    heartbeat,
    list_workers,
    request_restart,
    take_restart_request,
    unregister,
)
from axisor.ops.metrics import HealthServer, WorkerMetrics, build_app
from axisor.ops.scaling import ScalingPolicy, recommend_for_queue
from axisor.queue.names import MARGIN_GUARD_QUEUE, QUEUES

log = structlog.get_logger("axisor.worker")

RECOMMEND_INTERVAL_S = 30.0


@dataclass
class ServeOptions:
    """Health endpoint address and heartbeat timing of a worker."""

    health_host: str = "0.0.0.0"
    health_port: int = 3000
    advertised_host: str | None = None
    heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S
    heartbeat_ttl_ms: int = HEARTBEAT_TTL_MS


async def serve_worker(
    worker, redis_url: str, target: QueueTarget, name: str, options: ServeOptions
) -> bool:
    """Serve /health and /metrics, heartbeat into the registry and poll for a restart request.

    On SIGTERM, SIGINT or a restart request, close the worker after its running jobs finish.

    Returns True when a restart was requested.
    """
    metrics = WorkerMetrics()
    monitor = HealthMonitor(redis_url, target, metrics=metrics)
    monitor.attach(worker)
    server = HealthServer(build_app(monitor, metrics), options.health_host, options.health_port)
    await server.start()
    await monitor.start()
    host = options.advertised_host or socket.gethostname()
    info = WorkerInfo(
        name=name,
        queue=target.name,
        concurrency=int(worker.opts.get("concurrency", 1)),
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        health_url=f"http://{host}:{server.port}/health",
        active_jobs=0,
        heartbeat_ms=0,
        bullmq_id=worker.id,
        prefix=target.prefix,
    )
    stop = _stop_on_signals()
    log.info("worker started", worker=name, queue=target.name, health_url=info.health_url)
    async with redis_client(redis_url) as client:
        restart = await _supervise(client, worker, monitor, info, stop, options)
        log.info("worker closing", worker=name, restart=restart, active_jobs=len(worker.jobs))
        await worker.close()
        monitor.worker_running = False
        await _quietly(unregister(client, name))
    await server.stop()
    await monitor.stop()
    log.info("worker stopped", worker=name, restart=restart)
    return restart


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _supervise(client, worker, monitor, info, stop, options: ServeOptions) -> bool:
    """Heartbeat until ``stop`` is set or a restart is requested; return whether it was."""
    last_recommendation = 0.0
    while not stop.is_set():
        info.active_jobs = len(worker.jobs)
        info.status = monitor.report()["status"]
        if await _quietly(heartbeat(client, info, options.heartbeat_ttl_ms)) is False:
            log.warning("heartbeat failed; retrying", worker=info.name)
        if await _quietly(take_restart_request(client, info.name)):
            log.info("restart requested", worker=info.name)
            return True
        if time.monotonic() - last_recommendation > RECOMMEND_INTERVAL_S:
            last_recommendation = time.monotonic()
            await _quietly(_update_recommendation(client, monitor, info))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), options.heartbeat_interval_s)
    return False


async def _update_recommendation(client, monitor: HealthMonitor, info: WorkerInfo) -> None:
    result = await recommend_for_queue(client, monitor.target, ScalingPolicy(), info.concurrency)
    monitor.metrics.recommended.labels(queue=info.queue).set(result.recommended)


async def _quietly(awaitable):
    """Await a Redis call while Redis may be down; return False when it failed."""
    from redis.exceptions import RedisError

    try:
        result = await awaitable
    except (RedisError, OSError):
        return False
    return True if result is None else result


def restart_process() -> None:
    """Replace this process with a fresh run of the same command line (same pid)."""
    arguments = [sys.executable, *sys.orig_argv[1:]]
    log.info("re-executing", argv=arguments[:4])
    os.execv(sys.executable, arguments)


def build_context(settings: Settings, redis_url: str, name: str):
    """Build the WorkerContext: database, LN Markets clients per linked account, and Redis.

    The clients share the Redis rate limiter, and AXISOR_LNM_BASE_URL points them at another
    host (such as ``axisor mock-exchange``).
    """
    from redis.asyncio import Redis

    from axisor.db.crypto import CredentialCipher
    from axisor.db.session import Database
    from axisor.exchange.registry import account_resolver
    from axisor.notifications import Notifier, stored_webhooks
    from axisor.workers.context import WorkerContext

    database = Database(settings.effective_database_url)
    cipher = CredentialCipher.from_env(data_dir=settings.data_dir)
    return WorkerContext(
        database=database,
        exchanges=account_resolver(database, data_dir=settings.data_dir, redis_url=redis_url),
        redis=Redis.from_url(redis_url),
        worker_name=name,
        notifier=Notifier(database, stored_webhooks(database, cipher)),
    )


async def close_context(ctx) -> None:
    """Close the notifier (after its pending webhooks), the exchange clients, Redis and the
    database engine of a WorkerContext."""
    if ctx.notifier is not None:
        await ctx.notifier.aclose(timeout_s=10)
    await ctx.exchanges.aclose()
    await ctx.redis.aclose()
    ctx.database.dispose()


@click.group("worker")
def worker_group() -> None:
    """Run BullMQ workers and inspect the running ones."""


@worker_group.command("run")
@click.option("--queue", type=click.Choice(QUEUES), default=MARGIN_GUARD_QUEUE, show_default=True)
@click.option("--prefix", default="bull", show_default=True, help="BullMQ key prefix.")
@click.option("--health-host", default="0.0.0.0", show_default=True, help="Address of /health.")
@click.option(
    "--health-port",
    type=click.IntRange(0, 65_535),
    help="Port of /health and /metrics; 0 picks a free one [default: HEALTH_PORT].",
)
@click.pass_obj
def run_command(
    settings: Settings, queue: str, prefix: str, health_host: str, health_port: int | None
) -> None:
    """Process jobs of QUEUE until SIGTERM; serve /health and /metrics meanwhile."""
    from axisor.redis_server import ensure_redis
    from axisor.workers.runner import start_worker, worker_name

    redis_url = ensure_redis(settings)
    name = worker_name()
    target = QueueTarget(queue, prefix)
    port = settings.health_port if health_port is None else health_port
    # A worker bound to one address is reached there; a wildcard one under its host name.
    advertised = None if health_host in ("0.0.0.0", "::") else health_host
    options = ServeOptions(health_host, port, advertised)

    async def main() -> bool:
        ctx = build_context(settings, redis_url, name)
        worker = start_worker(
            ctx,
            redis_url,
            queue=queue,
            concurrency=settings.worker_concurrency,
            timeout_ms=settings.worker_timeout_ms,
            prefix=prefix,
        )
        try:
            return await serve_worker(worker, redis_url, target, name, options)
        finally:
            await close_context(ctx)

    if asyncio.run(main()):
        restart_process()


@worker_group.command("list")
@target_options(queue_required=False)
@click.pass_obj
def list_command(settings: Settings, queue: str | None, prefix: str, as_json: bool) -> None:
    """List the workers with a live heartbeat."""
    workers = asyncio.run(_workers(settings, queue))
    rows = [w.to_dict() for w in workers]
    emit(as_json, {"workers": rows}, lambda: _print_workers(rows))


async def _workers(settings: Settings, queue: str | None) -> list[WorkerInfo]:
    from axisor.redis_server import ensure_redis

    async with redis_client(ensure_redis(settings)) as client:
        return await list_workers(client, queue)


def _print_workers(rows: list[dict]) -> None:
    now_ms = int(time.time() * 1000)
    print_table(
        "Workers",
        ["name", "queue", "concurrency", "active", "status", "started", "heartbeat", "health"],
        [
            [
                r["name"],
                r["queue"],
                r["concurrency"],
                r["active_jobs"],
                r["status"],
                r["started_at"],
                f"{(now_ms - r['heartbeat_ms']) / 1000:.1f} s ago",
                r["health_url"],
            ]
            for r in rows
        ],
    )


@worker_group.command("health")
@target_options(queue_required=False)
@click.option("--timeout", "timeout_s", default=3.0, show_default=True, help="Seconds per worker.")
@click.pass_obj
def health_command(
    settings: Settings, queue: str | None, prefix: str, as_json: bool, timeout_s: float
) -> None:
    """Fetch /health from every registered worker."""
    workers = asyncio.run(_workers(settings, queue))
    reports = asyncio.run(_fetch_health(workers, timeout_s))
    emit(as_json, {"workers": reports}, lambda: _print_health(reports))


async def _fetch_health(workers: list[WorkerInfo], timeout_s: float) -> list[dict]:
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        return [await _one_health(client, w) for w in workers]


async def _one_health(client: httpx.AsyncClient, worker: WorkerInfo) -> dict:
    if not worker.health_url:
        return {"name": worker.name, "status": "UNKNOWN", "reasons": ["no health URL"]}
    try:
        response = await client.get(worker.health_url)
        report = response.json()
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        return {"name": worker.name, "status": "UNREACHABLE", "reasons": [type(exc).__name__]}
    return {"name": worker.name, **report}


def _print_health(reports: list[dict]) -> None:
    rows = []
    for r in reports:
        redis = r.get("redis") or {}
        jobs = r.get("jobs") or {}
        rows.append(
            [
                r["name"],
                r["status"],
                redis.get("latency_ms"),
                jobs.get("active"),
                jobs.get("waiting"),
                r.get("event_loop_lag_ms"),
                "; ".join(r.get("reasons") or []) or "-",
            ]
        )
    columns = ["name", "status", "redis ms", "active", "waiting", "loop lag ms", "reasons"]
    print_table("Worker health", columns, rows)


@worker_group.command("restart")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def restart_command(settings: Settings, name: str, yes: bool, as_json: bool) -> None:
    """Ask worker NAME to finish its running jobs and restart itself."""
    confirm(f"Worker {name} will stop taking jobs, finish its running ones and restart.", yes)
    flagged = asyncio.run(_request_restart(settings, name))
    if not flagged:
        raise click.ClickException(f"no worker named {name} has a live heartbeat; see worker list")
    emit(
        as_json,
        {"worker": name, "restart_requested": True},
        lambda: click.echo(
            f"restart requested for {name}; it restarts within {HEARTBEAT_INTERVAL_S:.0f} s "
            "plus the time its running jobs take"
        ),
    )


async def _request_restart(settings: Settings, name: str) -> bool:
    from axisor.redis_server import ensure_redis

    async with redis_client(ensure_redis(settings)) as client:
        return await request_restart(client, name)
