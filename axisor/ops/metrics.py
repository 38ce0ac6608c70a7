"""The worker's HTTP endpoints, /health and /metrics, served in the worker's own event loop.

/health returns the health document with status 200 when HEALTHY or DEGRADED and 503 when
UNHEALTHY (a readiness probe). /health/live returns 200 whenever the event loop runs, because
restarting a worker does not bring back Redis (a liveness probe). /metrics is Prometheus text.
"""

from __future__ import annotations

import asyncio
import contextlib

import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from axisor.ops.health import HealthMonitor
from axisor.ops.stats import STATES

DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class WorkerMetrics:
    """Prometheus metrics of one worker process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Gauge(
            "axisor_queue_jobs",
            "Jobs per queue and state",
            ["queue", "state"],
            registry=self.registry,
        )
        self.processed = Counter(
            "axisor_jobs_processed", "Jobs this worker completed", ["queue"], registry=self.registry
        )
        self.failed = Counter(
            "axisor_jobs_failed",
            "Job attempts that failed on this worker",
            ["queue"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "axisor_job_duration_seconds",
            "Run time of one job attempt",
            ["queue", "job_name"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.loop_lag = Gauge(
            "axisor_event_loop_lag_seconds", "Delay of a 0.5 s timer", registry=self.registry
        )
        self.redis_latency = Gauge(
            "axisor_redis_latency_seconds", "Round trip of the last PING", registry=self.registry
        )
        self.redis_up = Gauge(
            "axisor_redis_up", "1 when the last PING succeeded", registry=self.registry
        )
        self.recommended = Gauge(
            "axisor_recommended_workers",
            "Worker processes the scaling model recommends",
            ["queue"],
            registry=self.registry,
        )

    def job_finished(self, queue: str, job_name: str, duration_s: float, failed: bool) -> None:
        (self.failed if failed else self.processed).labels(queue=queue).inc()
        self.duration.labels(queue=queue, job_name=job_name).observe(duration_s)

    def update_from(self, monitor: HealthMonitor) -> None:
        """Copy the monitor's last measurements into the gauges, just before a scrape."""
        state = monitor.state
        for name in STATES:
            if name in state.counts:
                self.jobs.labels(queue=monitor.target.name, state=name).set(state.counts[name])
        self.loop_lag.set(state.loop_lag_ms / 1000)
        self.redis_up.set(1 if state.redis_ok else 0)
        if state.redis_latency_ms is not None:
            self.redis_latency.set(state.redis_latency_ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def build_app(monitor: HealthMonitor, metrics: WorkerMetrics) -> Starlette:
    async def health(request: Request) -> Response:
        report = monitor.report()
        return JSONResponse(report, status_code=503 if report["status"] == "UNHEALTHY" else 200)

    async def live(request: Request) -> Response:
        return PlainTextResponse("alive\n")

    async def prometheus(request: Request) -> Response:
        metrics.update_from(monitor)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    routes = [
        Route("/health", health),
        Route("/health/live", live),
        Route("/metrics", prometheus),
    ]
    return Starlette(routes=routes)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the worker process owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class HealthServer:
    """Serves the app on ``host:port`` as a task of the running event loop."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
        self.server = _EmbeddedServer(config)
        self.task: asyncio.Task | None = None

    async def start(self, timeout_s: float = 5.0) -> None:
        self.task = asyncio.create_task(self.server.serve())
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise RuntimeError("the health server stopped before it started")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the health server did not start within {timeout_s} s")
            await asyncio.sleep(0.02)

    @property
    def port(self) -> int:
        """The bound port, which differs from the configured one when that was 0."""
        return self.server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.task is None:
            return
        self.server.should_exit = True
        await self.task
