"""Stuck jobs against a real Redis, including a worker process killed with SIGKILL mid-job."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from bullmq import Queue, Worker
from redis.asyncio import Redis

from axisor.db.models import LedgerState
from axisor.ledger import LedgerRecord
from axisor.ops import QueueTarget
from axisor.ops.health import list_workers
from axisor.ops.stuck import WORKER_FIELD, find_stuck, move_stuck, optimize
from axisor.queue.names import GUARD_ACTION_JOB, MARGIN_GUARD_QUEUE

QUEUE = MARGIN_GUARD_QUEUE

# A worker process: serve_worker with a processor that records each call and sends its
# "exchange action" at most once per key (SET NX), as the action ledger does for real actions.
# The first attempt of a job then sleeps for sleep_s, so the test can kill it mid-job.
WORKER_SCRIPT = """
import asyncio, sys
from bullmq import Worker
from redis.asyncio import Redis
from axisor.cli.worker import ServeOptions, restart_process, serve_worker
from axisor.ops import QueueTarget
from axisor.ops.stuck import record_worker

url, queue, prefix, name = sys.argv[1:5]

async def main():
    redis = Redis.from_url(url)
    await redis.incr(f"{prefix}:starts:{name}")

    async def process(job, token):
        await record_worker(job, name)
        calls = await redis.incr(f"{prefix}:calls:{job.id}")
        if await redis.set(f"{prefix}:action:{job.data['key']}", name, nx=True):
            await redis.incr(f"{prefix}:actions")
        if calls == 1:
            await asyncio.sleep(float(job.data.get("sleep_s", 0)))
        return {"calls": calls}

    options = {"connection": url, "prefix": prefix, "name": name, "lockDuration": 3000,
               "stalledInterval": 3000, "maxStalledCount": 1}
    worker = Worker(queue, process, options)
    serve = ServeOptions("127.0.0.1", 0, "127.0.0.1", heartbeat_interval_s=0.5,
                         heartbeat_ttl_ms=2000)
    restart = await serve_worker(worker, url, QueueTarget(queue, prefix), name, serve)
    await redis.aclose()
    return restart

if asyncio.run(main()):
    restart_process()
"""


def start_worker_process(redis_url: str, prefix: str, name: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, redis_url, QUEUE, prefix, name],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    process.stdout.close()
    process.stderr.close()


async def wait_until(predicate, timeout_s: float = 10.0, interval_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval_s)
    return False


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def client(redis_url):
    redis = Redis.from_url(redis_url, decode_responses=True)
    yield redis
    await redis.aclose()


async def _make_active(
    client: Redis, redis_url: str, prefix: str, job_id: str, data: dict, name="job"
):
    """Add a job and move it to active by hand, as a worker that then vanished would leave it."""
    queue = Queue(QUEUE, {"connection": redis_url, "prefix": prefix})
    await queue.add(name, data, {"jobId": job_id, "attempts": 5})
    await queue.close()
    target = QueueTarget(QUEUE, prefix)
    await client.lmove(target.key("wait"), target.key("active"), "RIGHT", "LEFT")
    await client.hset(target.key(job_id), "processedOn", int(time.time() * 1000))
    return target


async def test_lock_missing_job_is_stuck_and_moved(client, redis_url, prefix):
    target = await _make_active(client, redis_url, prefix, "j1", {"n": 1})
    stuck = await find_stuck(client, target, set())
    assert [s.id for s in stuck] == ["j1"]
    assert stuck[0].reason.startswith("lock expired")

    await client.set(target.lock_key("j1"), "token-1", px=10_000)
    assert await find_stuck(client, target, set()) == []

    await client.delete(target.lock_key("j1"))
    moves = await move_stuck(client, target, stuck, "failed")
    assert moves.moved == ["j1"]
    assert await client.zscore(target.key("failed"), "j1") is not None
    assert "stuck" in await client.hget(target.key("j1"), "failedReason")
    assert await client.llen(target.key("active")) == 0


async def test_move_back_to_wait_keeps_priority(client, redis_url, prefix):
    queue = Queue(QUEUE, {"connection": redis_url, "prefix": prefix})
    await queue.add("job", {}, {"jobId": "p1", "priority": 7})
    await queue.close()
    target = QueueTarget(QUEUE, prefix)
    await client.zrem(target.key("prioritized"), "p1")
    await client.lpush(target.key("active"), "p1")

    moves = await move_stuck(client, target, await find_stuck(client, target, set()), "wait")
    assert moves.moved == ["p1"]
    score = await client.zscore(target.key("prioritized"), "p1")
    assert int(score) >> 32 == 7
    assert await client.hget(target.key("p1"), "stc") == "1"


async def test_worker_without_heartbeat_is_stuck(client, redis_url, prefix):
    """A job whose lock is still held by a worker that has no heartbeat is stuck."""
    target = await _make_active(client, redis_url, prefix, "j2", {})
    await client.set(target.lock_key("j2"), "dead-worker-id:1", px=60_000)
    await client.hset(target.key("j2"), WORKER_FIELD, "host-1234")

    assert await find_stuck(client, target, {"host-1234"}) == []
    stuck = await find_stuck(client, target, {"host-9999"})
    assert stuck[0].reason == "worker host-1234 has no heartbeat"

    await client.hset(target.key("j2"), WORKER_FIELD, "host-5555")
    moves = await move_stuck(client, target, stuck, "wait")
    assert moves.skipped == {"j2": "another worker took it"}
    assert await client.lrange(target.key("active"), 0, -1) == ["j2"]


async def test_completed_job_with_leftover_lock_left_alone(client, redis_url, prefix):
    """A completed job is never marked failed, even with a lock key left behind."""
    queue = Queue(QUEUE, {"connection": redis_url, "prefix": prefix})
    await queue.add("job", {}, {"jobId": "done-1"})

    async def process(job, token):
        return {"ok": True}

    worker = Worker(QUEUE, process, {"connection": redis_url, "prefix": prefix})
    target = QueueTarget(QUEUE, prefix)
    assert await wait_until(lambda: _in_completed(client, target, "done-1"))
    await worker.close()
    await client.set(target.lock_key("done-1"), "stale-token", px=60_000)
    await client.hset(target.key("done-1"), WORKER_FIELD, "gone-worker")

    assert await find_stuck(client, target, set()) == []
    report = await optimize(redis_url, target, to="failed", grace_ms={"completed": 86_400_000})
    assert report.stuck == []
    assert await queue.getJobState("done-1") == "completed"
    assert await client.exists(target.lock_key("done-1")) == 1
    assert await client.zscore(target.key("failed"), "done-1") is None
    await queue.close()


async def _in_completed(client: Redis, target: QueueTarget, job_id: str) -> bool:
    return await client.zscore(target.key("completed"), job_id) is not None


async def test_optimize_rejects_confirmed_action(client, redis_url, prefix):
    """A stuck guard action whose ledger row is confirmed is not sent back to wait."""
    data = {"position_id": 9, "account_id": 1, "version": 2, "action": "add_margin"}
    target = await _make_active(client, redis_url, prefix, "guard-9-v2", data, GUARD_ACTION_JOB)
    await _make_active(client, redis_url, prefix, "other", {"n": 2})

    def lookup(key: str) -> LedgerRecord | None:
        if key != "guard:9:2:add_margin":
            return None
        return LedgerRecord(key, LedgerState.CONFIRMED, 1, "add_margin", 9, 10, 1, 11, None)

    report = await optimize(redis_url, target, to="wait", grace_ms={}, lookup=lookup)
    assert {s.id for s in report.stuck} == {"guard-9-v2", "other"}
    assert report.moves.moved == ["other"]
    assert "confirmed" in report.moves.rejected["guard-9-v2"]
    assert await client.lrange(target.key("wait"), 0, -1) == ["other"]


async def test_killed_worker_job_detected_and_run_once_more(client, redis_url, prefix):
    """SIGKILL mid-job: stuck within one stalled interval (3 s), retried once, one action."""
    target = QueueTarget(QUEUE, prefix)
    process = start_worker_process(redis_url, prefix, "victim-1")
    try:
        assert await wait_until(lambda: _registered(client, "victim-1"), timeout_s=20)
        queue = Queue(QUEUE, {"connection": redis_url, "prefix": prefix})
        await queue.add("job", {"key": "guard:1:1:add_margin", "sleep_s": 60}, {"jobId": "k1"})
        assert await wait_until(lambda: _value_is(client, f"{prefix}:actions", "1"))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        killed_at = time.monotonic()

        assert await wait_until(lambda: _stuck_ids(client, target, ["k1"]), timeout_s=5)
        detected_s = time.monotonic() - killed_at
        assert detected_s <= 3.5
        workers = {w.name for w in await list_workers(client, QUEUE)}
        moves = await move_stuck(client, target, await find_stuck(client, target, workers), "wait")
        assert moves.moved == ["k1"]

        rescuer = start_worker_process(redis_url, prefix, "rescuer-1")
        try:
            assert await wait_until(lambda: _in_completed(client, target, "k1"), timeout_s=20)
            await asyncio.sleep(3.5)
            assert await client.get(f"{prefix}:calls:k1") == "2"
            assert await client.get(f"{prefix}:actions") == "1"
            assert await client.get(f"{prefix}:action:guard:1:1:add_margin") == "victim-1"
            job = await queue.getJob("k1")
            assert job.returnvalue == {"calls": 2}
        finally:
            stop_process(rescuer)
        await queue.close()
    finally:
        stop_process(process)


async def _registered(client: Redis, name: str) -> bool:
    return name in {w.name for w in await list_workers(client, QUEUE)}


async def _value_is(client: Redis, key: str, expected: str) -> bool:
    return await client.get(key) == expected


async def _stuck_ids(client: Redis, target: QueueTarget, expected: list[str]) -> bool:
    workers = {w.name for w in await list_workers(client, QUEUE)}
    return [s.id for s in await find_stuck(client, target, workers)] == expected
