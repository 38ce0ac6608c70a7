"""Queue commands against a real Redis: stats, failed, clean, pause, retry, promote, memory."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from decimal import Decimal

import click
import pytest
from bullmq import Queue, Worker
from click.testing import CliRunner

from axisor.cli.main import AxisorGroup
from axisor.cli.ops import OPS_COMMANDS
from axisor.config import Settings
from axisor.db.models import ExchangeAccount, LedgerEntry, LedgerState, Position, User
from axisor.ops import MASK, QueueTarget
from axisor.ops.cleanup import set_paused
from axisor.queue.names import GUARD_ACTION_JOB, GUARD_CHECK_JOB, MARGIN_GUARD_QUEUE

QUEUE = MARGIN_GUARD_QUEUE


def _cli() -> click.Group:
    group = AxisorGroup()
    for command in OPS_COMMANDS:
        group.add_command(command)
    return group


def invoke(settings: Settings, *args: str, input: str | None = None):
    return CliRunner().invoke(_cli(), list(args), obj=settings, input=input)


def invoke_json(settings: Settings, *args: str) -> dict:
    result = invoke(settings, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(redis_url, tmp_path) -> Settings:
    return Settings(data_dir=tmp_path, redis_url=redis_url)


def _queue(redis_url: str, prefix: str) -> Queue:
    return Queue(QUEUE, {"connection": redis_url, "prefix": prefix})


async def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval_s)
    return False


async def _finish_jobs(redis_url: str, prefix: str, jobs: list[tuple[str, dict, dict]]) -> None:
    """Add ``jobs`` and run them with a worker that fails every job named "bad"."""
    queue = _queue(redis_url, prefix)
    for name, data, opts in jobs:
        await queue.add(name, data, opts)

    async def process(job, token):
        if job.name == "bad":
            raise RuntimeError("exchange rejected the request")
        return {"ok": True}

    worker = Worker(QUEUE, process, {"connection": redis_url, "prefix": prefix})
    finished = await wait_until(lambda: _finished_count(queue, len(jobs)), timeout_s=15.0)
    await worker.close()
    await queue.close()
    assert finished


async def _finished_count(queue: Queue, expected: int) -> bool:
    counts = await queue.getJobCounts("completed", "failed")
    return counts["completed"] + counts["failed"] >= expected


def test_stats_counts_and_rates(settings, redis_url, prefix):
    """Counts per state and per-minute rates come from BullMQ's keys."""
    asyncio.run(
        _finish_jobs(
            redis_url,
            prefix,
            [("good", {}, {}), ("good", {}, {}), ("bad", {}, {"attempts": 1})],
        )
    )

    async def add_pending():
        queue = _queue(redis_url, prefix)
        await queue.add("later", {}, {"delay": 60_000})
        await queue.add("urgent", {}, {"priority": 3})
        await queue.add("plain", {}, {})
        await queue.close()

    asyncio.run(add_pending())
    document = invoke_json(settings, "queue", "stats", QUEUE, "--prefix", prefix, "--window", "5m")
    stats = document["queues"][0]
    assert stats["counts"]["completed"] == 2
    assert stats["counts"]["failed"] == 1
    assert stats["counts"]["delayed"] == 1
    assert stats["counts"]["prioritized"] == 1
    assert stats["counts"]["waiting"] == 1
    assert stats["counts"]["active"] == 0
    assert stats["completed_per_min"] == 0.4
    assert stats["failed_per_min"] == 0.2
    assert stats["is_paused"] is False

    table = invoke(settings, "queue", "stats", "--prefix", prefix)
    assert table.exit_code == 0
    assert "margin-guard" in table.stdout
    assert "automation-execute" in table.stdout


def test_failed_lists_reason_with_secrets_masked(settings, redis_url, prefix):
    data = {"position_id": 4, "api_key": "live-key-123", "nested": {"passphrase": "pp-456"}}
    asyncio.run(_finish_jobs(redis_url, prefix, [("bad", data, {"attempts": 1})]))

    result = invoke(settings, "queue", "failed", "--prefix", prefix, "--json")
    assert result.exit_code == 0
    assert "live-key-123" not in result.stdout
    assert "pp-456" not in result.stdout
    job = json.loads(result.stdout)["failed"][0]
    assert job["reason"] == "exchange rejected the request"
    assert job["attempts_made"] == 1
    assert job["data"] == {"position_id": 4, "api_key": MASK, "nested": {"passphrase": MASK}}

    table = invoke(settings, "queue", "failed", "--prefix", prefix)
    assert "live-key-123" not in table.stdout


def test_clean_keeps_next_scheduled_check(settings, redis_url, prefix):
    """Cleaning delayed jobs with no grace keeps the scheduler's next margin-guard-check."""

    async def arrange():
        queue = _queue(redis_url, prefix)
        await queue.upsertJobScheduler(
            "margin-guard-check:account-1",
            {"every": 60_000},
            job_name=GUARD_CHECK_JOB,
            job_data={"account_id": 1},
        )
        await queue.add("one-off", {}, {"delay": 3_600_000, "jobId": "old-delayed"})
        await queue.close()

    asyncio.run(arrange())
    before = asyncio.run(_scheduled_ids(redis_url, prefix))
    assert any(i.startswith("repeat:") for i in before)

    result = invoke(
        settings,
        "queue",
        "clean",
        "--prefix",
        prefix,
        "--delayed",
        "0s",
        "--wait",
        "0s",
        "--prioritized",
        "0s",
        "--yes",
        "--json",
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["removed"]["delayed"] == ["old-delayed"]
    assert set(document["kept_scheduled"]) == {i for i in before if i.startswith("repeat:")}

    after = asyncio.run(_scheduled_ids(redis_url, prefix))
    assert "old-delayed" not in after
    assert [i for i in after if i.startswith("repeat:")] == [
        i for i in before if i.startswith("repeat:")
    ]
    scheduler = asyncio.run(_scheduler(redis_url, prefix))
    assert scheduler is not None
    assert scheduler["every"] == 60_000


async def _scheduled_ids(redis_url: str, prefix: str) -> list[str]:
    queue = _queue(redis_url, prefix)
    jobs = await queue.getJobs(["delayed", "waiting", "prioritized"])
    await queue.close()
    return sorted(str(job.id) for job in jobs)


async def _scheduler(redis_url: str, prefix: str):
    queue = _queue(redis_url, prefix)
    scheduler = await queue.getJobScheduler("margin-guard-check:account-1")
    await queue.close()
    return scheduler


def test_clean_finished_by_age_and_asks_first(settings, redis_url, prefix):
    asyncio.run(_finish_jobs(redis_url, prefix, [("good", {}, {}), ("bad", {}, {"attempts": 1})]))

    declined = invoke(
        settings, "queue", "clean", "--prefix", prefix, "--completed", "0s", input="n\n"
    )
    assert declined.exit_code == 1
    assert "will remove 1 completed jobs" in declined.stderr
    kept_young = invoke_json(
        settings,
        "queue",
        "clean",
        "--prefix",
        prefix,
        "--completed",
        "1d",
        "--failed",
        "7d",
        "--yes",
    )
    assert kept_young["removed"] == {"completed": [], "failed": []}

    removed = invoke_json(
        settings,
        "queue",
        "clean",
        "--prefix",
        prefix,
        "--completed",
        "0s",
        "--failed",
        "0s",
        "--yes",
    )
    assert len(removed["removed"]["completed"]) == 1
    assert len(removed["removed"]["failed"]) == 1
    stats = invoke_json(settings, "queue", "stats", QUEUE, "--prefix", prefix)["queues"][0]
    assert stats["counts"]["completed"] == 0
    assert stats["counts"]["failed"] == 0


def test_clean_rejects_bad_duration(settings, prefix):
    result = invoke(settings, "queue", "clean", "--prefix", prefix, "--completed", "1 day", "--yes")
    assert result.exit_code != 0
    assert "not a duration" in result.output


async def test_pause_holds_new_and_delayed_jobs(redis_url, prefix):
    """A worker already waiting takes no job after pause, nor a delayed job that comes due."""
    target = QueueTarget(QUEUE, prefix)
    processed: list[str] = []

    async def process(job, token):
        processed.append(job.name)
        return {}

    worker = Worker(QUEUE, process, {"connection": redis_url, "prefix": prefix})
    queue = _queue(redis_url, prefix)
    await queue.add("warm-up", {})
    assert await wait_until(lambda: _async_true(processed == ["warm-up"]))
    await asyncio.sleep(0.3)

    assert await set_paused(redis_url, target, True) is False
    await queue.add("after-pause", {})
    await queue.add("due-soon", {}, {"delay": 300})
    await asyncio.sleep(2.0)
    assert processed == ["warm-up"]

    assert await set_paused(redis_url, target, False) is True
    assert await wait_until(lambda: _async_true(len(processed) == 3))
    assert sorted(processed[1:]) == ["after-pause", "due-soon"]
    await worker.close()
    await queue.close()


async def _async_true(value: bool) -> bool:
    return value


def test_pause_resume_commands(settings, redis_url, prefix):
    paused = invoke_json(settings, "queue", "pause", "--prefix", prefix, "--yes")
    assert paused == {"queue": QUEUE, "paused": True, "changed": True}
    again = invoke_json(settings, "queue", "pause", "--prefix", prefix, "--yes")
    assert again["changed"] is False
    stats = invoke_json(settings, "queue", "stats", QUEUE, "--prefix", prefix)["queues"][0]
    assert stats["is_paused"] is True
    resumed = invoke_json(settings, "queue", "resume", "--prefix", prefix, "--yes")
    assert resumed == {"queue": QUEUE, "paused": False, "changed": True}


def _confirmed_action(db) -> dict:
    """Store a position whose add_margin action at version 3 the ledger shows confirmed."""
    with db.session() as session:
        user = User(email="trader@example.com")
        session.add(user)
        session.flush()
        account = ExchangeAccount(user_id=user.id, exchange="paper")
        session.add(account)
        session.flush()
        position = Position(
            account_id=account.id,
            trade_id="t-1",
            side="buy",
            quantity_usd=600,
            entry_price=Decimal(60_000),
            margin_sats=100_000,
            leverage=Decimal(10),
            liquidation_price=Decimal(54_545),
        )
        session.add(position)
        session.flush()
        session.add(
            LedgerEntry(
                idempotency_key=f"guard:{position.id}:3:add_margin",
                account_id=account.id,
                position_id=position.id,
                action="add_margin",
                state=LedgerState.CONFIRMED.value,
            )
        )
        return {"position_id": position.id, "account_id": account.id}


def test_retry_rejects_confirmed_action(db, redis_url, prefix, tmp_path):
    """A failed guard action whose ledger row is confirmed is not retried; others are."""
    ids = _confirmed_action(db)
    data = {
        "position_id": ids["position_id"],
        "account_id": ids["account_id"],
        "version": 3,
        "action": "add_margin",
    }
    jobs = [("bad", {"n": 1}, {"attempts": 1, "jobId": "other"})]
    asyncio.run(_finish_jobs(redis_url, prefix, jobs))

    async def fail_guard_job():
        queue = _queue(redis_url, prefix)
        await queue.add(GUARD_ACTION_JOB, data, {"attempts": 1, "jobId": "guard-1-v3"})

        async def process(job, token):
            raise RuntimeError("worker lost the reply")

        worker = Worker(QUEUE, process, {"connection": redis_url, "prefix": prefix})
        assert await wait_until(lambda: _finished_count(queue, 2))
        await worker.close()
        await queue.close()

    asyncio.run(fail_guard_job())
    settings = Settings(data_dir=tmp_path, redis_url=redis_url, database_url=db.url)

    single = invoke(settings, "queue", "retry", "guard-1-v3", "--prefix", prefix, "--yes", "--json")
    assert single.exit_code == 1
    document = json.loads(single.stdout)
    assert document["retried"] == []
    assert "confirmed" in document["rejected"]["guard-1-v3"]

    every = invoke_json(settings, "queue", "retry", "--failed", "--prefix", prefix, "--yes")
    assert every["retried"] == ["other"]
    assert list(every["rejected"]) == ["guard-1-v3"]

    missing = invoke(settings, "queue", "retry", "nope", "--prefix", prefix, "--yes")
    assert missing.exit_code == 1
    assert "job nope not found" in missing.output


def test_promote_runs_delayed_now(settings, redis_url, prefix):
    async def add():
        queue = _queue(redis_url, prefix)
        await queue.add("later", {}, {"delay": 3_600_000, "jobId": "d1"})
        await queue.add("later", {}, {"delay": 3_600_000, "jobId": "d2"})
        await queue.close()

    asyncio.run(add())
    one = invoke_json(settings, "queue", "promote", "d1", "--prefix", prefix, "--yes")
    assert one["promoted"] == ["d1"]
    rest = invoke_json(settings, "queue", "promote", "--prefix", prefix, "--yes")
    assert rest["promoted"] == ["d2"]
    stats = invoke_json(settings, "queue", "stats", QUEUE, "--prefix", prefix)["queues"][0]
    assert stats["counts"]["delayed"] == 0
    assert stats["counts"]["waiting"] == 2


def test_priorities_buckets(settings, redis_url, prefix):
    async def add():
        queue = _queue(redis_url, prefix)
        for priority in (1, 1, 5, 50, 5_000, 500_000):
            await queue.add("p", {}, {"priority": priority})
        await queue.add("plain", {})
        await queue.close()

    asyncio.run(add())
    buckets = invoke_json(settings, "jobs", "priorities", "--prefix", prefix)["buckets"]
    assert {b["priority"]: b["waiting"] for b in buckets} == {
        "1": 2,
        "2-10": 1,
        "11-100": 1,
        "101-1000": 0,
        "1001-10000": 1,
        "10001-2097152": 1,
        "none": 1,
    }


def test_redis_memory_reports_policy(settings):
    document = invoke_json(settings, "redis", "memory")
    assert document["used_bytes"] > 0
    assert document["peak_bytes"] >= document["used_bytes"] or document["peak_bytes"] > 0
    assert document["maxmemory_policy"]
    if document["maxmemory_policy"] == "noeviction":
        assert document["warning"] is None
    else:
        assert "noeviction" in document["warning"]
