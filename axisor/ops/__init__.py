"""The operator's toolkit: queue statistics, cleaning, stuck jobs, worker health and scaling.

Every function here reads or changes BullMQ's keys in Redis, directly or through ``bullmq.Queue``,
and returns plain data. The ``axisor`` commands in ``axisor.cli.ops`` and ``axisor.cli.worker``
print that data as a table or as JSON.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from bullmq import Queue
from redis.asyncio import Redis

# A key whose name contains one of these words has its value replaced in every output.
SECRET_WORDS = ("secret", "passphrase", "key", "token", "password")
MASK = "[secure]"
DEFAULT_PREFIX = "bull"


def mask_secrets(value: Any) -> Any:
    """Return a copy of ``value`` in which every mapping entry with a secret-looking key is
    replaced by ``[secure]``, at any depth."""
    if isinstance(value, dict):
        return {key: _masked_entry(str(key), item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_secrets(item) for item in value]
    return value


def _masked_entry(key: str, item: Any) -> Any:
    if any(word in key.lower() for word in SECRET_WORDS):
        return MASK
    return mask_secrets(item)


@dataclass(frozen=True)
class QueueTarget:
    """One BullMQ queue: its name and the key prefix its keys start with."""

    name: str
    prefix: str = DEFAULT_PREFIX

    def key(self, suffix: str) -> str:
        """Return the key ``<prefix>:<queue>:<suffix>``, such as ``bull:margin-guard:wait``."""
        return f"{self.prefix}:{self.name}:{suffix}"

    def lock_key(self, job_id: str) -> str:
        return self.key(f"{job_id}:lock")


def open_queue(redis_url: str, target: QueueTarget) -> Queue:
    """Return a ``bullmq.Queue``; the connection is a URL because a client object can lose data."""
    return Queue(target.name, {"connection": redis_url, "prefix": target.prefix})


@asynccontextmanager
async def redis_client(redis_url: str) -> AsyncIterator[Redis]:
    """Yield a decoding Redis client and close it afterwards."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def queue_session(redis_url: str, target: QueueTarget) -> AsyncIterator[Queue]:
    """Yield an open ``bullmq.Queue`` and close it afterwards."""
    queue = open_queue(redis_url, target)
    try:
        yield queue
    finally:
        await queue.close()
