"""Notifications: in-app rows and signed webhooks, checked by a receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from axisor.db.models import Notification, User
from axisor.errors import InvalidConfigError
from axisor.notifications import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    NotificationKind,
    Notifier,
    RetryPolicy,
    WebhookTarget,
    list_notifications,
    mark_read,
    sign,
    verify_signature,
)

SECRET = "whsec-test-4f1d2c9a7b"
PATH_TOKEN = "tok-93b7e1"
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver that records each request and replies with the next scripted status.

    Each script entry is ``(status, delay_s)``. Once the script runs out, it replies 200.
    """

    script: list[tuple[int, float]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    base_url: str = ""

    @property
    def url(self) -> str:
        return f"{self.base_url}/hooks/{PATH_TOKEN}"

    async def handle(self, request: Request) -> Response:
        self.requests.append(Received(dict(request.headers), await request.body()))
        status, delay_s = self.script.pop(0) if self.script else (200, 0.0)
        if delay_s:
            await asyncio.sleep(delay_s)
        return Response(status_code=status)


@asynccontextmanager
async def running_receiver(*script: tuple[int, float]) -> AsyncIterator[Receiver]:
    receiver = Receiver(script=list(script))
    app = Starlette(routes=[Route("/hooks/{token}", receiver.handle, methods=["POST"])])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        access_log=False,
        lifespan="off",
        ws="none",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    receiver.base_url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task


def closed_port_url() -> str:
    """Return a URL on 127.0.0.1 whose port was just released, so connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks/{PATH_TOKEN}"


def add_user(db) -> int:
    with db.session() as session:
        user = User(email="notify@example.com")
        session.add(user)
        session.flush()
        return user.id


def notifier_for(db, url: str | None, **options) -> Notifier:
    target = None if url is None else WebhookTarget(url, SECRET)
    options.setdefault("retry", FAST_RETRY)
    return Notifier(db, lambda user_id: target, **options)


async def test_signature_verified_by_receiver(db):
    user_id = add_user(db)
    async with running_receiver() as receiver, notifier_for(db, receiver.url) as notifier:
        notification_id = await notifier.action(
            user_id, "add_margin", "added 5000 sats", {"amount_sats": 5000}
        )

    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert verify_signature(SECRET, request.body, request.headers[SIGNATURE_HEADER.lower()])
    assert request.headers[SIGNATURE_HEADER.lower()] == sign(SECRET, request.body)
    assert not verify_signature("another-secret", request.body, sign(SECRET, request.body))
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert body["id"] == notification_id
    assert body["kind"] == "action"
    assert body["message"] == "added 5000 sats"
    assert body["details"] == {"amount_sats": 5000, "action": "add_margin"}
    assert body["timestamp"] == int(request.headers[TIMESTAMP_HEADER.lower()])
    assert abs(body["timestamp"] - time.time()) < 60


async def test_in_app_row_written(db):
    user_id = add_user(db)
    async with notifier_for(db, None) as notifier:
        first = await notifier.failure(user_id, "close_position", "the exchange timed out")
        second = await notifier.notify(
            user_id, NotificationKind.ACTION, "closed", {"price": Decimal("55636.5")}
        )

    with db.session() as session:
        rows = list_notifications(session, user_id)
        assert [row.id for row in rows] == [second, first]
        assert rows[0].details == {"price": "55636.5"}
        assert rows[1].kind == "failure"
        assert rows[1].details == {"action": "close_position", "error": "the exchange timed out"}
        assert mark_read(session, user_id, [first]) == 1
    with db.session() as session:
        unread = list_notifications(session, user_id, unread_only=True)
        assert [row.id for row in unread] == [second]
        assert list_notifications(session, user_id + 1) == []


async def test_retries_503_then_success(db):
    user_id = add_user(db)
    async with running_receiver((503, 0), (503, 0)) as receiver:
        with structlog.testing.capture_logs() as logs:
            async with notifier_for(db, receiver.url) as notifier:
                await notifier.notify(user_id, "action", "added margin")

    assert len(receiver.requests) == 3
    bodies = [json.loads(request.body) for request in receiver.requests]
    assert len({body["id"] for body in bodies}) == 1
    retries = [entry for entry in logs if entry["event"] == "webhook.retry"]
    assert [entry["attempts_left"] for entry in retries] == [3, 2]
    assert [entry["status"] for entry in retries] == [503, 503]
    assert [entry["delay_s"] for entry in retries] == [0.01, 0.02]
    assert [entry["event"] for entry in logs][-1] == "webhook.delivered"


async def test_no_retry_on_400(db):
    user_id = add_user(db)
    async with running_receiver((400, 0)) as receiver:
        with structlog.testing.capture_logs() as logs:
            async with notifier_for(db, receiver.url) as notifier:
                await notifier.notify(user_id, "failure", "could not add margin")

    assert len(receiver.requests) == 1
    assert [entry["event"] for entry in logs] == ["webhook.rejected"]
    assert logs[0]["status"] == 400


async def test_gives_up_after_max_attempts(db):
    user_id = add_user(db)
    async with running_receiver(*[(500, 0)] * 10) as receiver:
        with structlog.testing.capture_logs() as logs:
            async with notifier_for(db, receiver.url) as notifier:
                notification_id = await notifier.notify(user_id, "action", "closed")

    assert notification_id is not None
    assert len(receiver.requests) == FAST_RETRY.max_attempts
    assert logs[-1]["event"] == "webhook.failed"
    assert logs[-1]["attempts"] == FAST_RETRY.max_attempts


async def test_timeout_is_retried(db):
    user_id = add_user(db)
    async with running_receiver((200, 1.0)) as receiver:
        with structlog.testing.capture_logs() as logs:
            async with notifier_for(db, receiver.url, timeout_s=0.2) as notifier:
                await notifier.notify(user_id, "action", "closed")

    assert len(receiver.requests) == 2
    retries = [entry for entry in logs if entry["event"] == "webhook.retry"]
    assert [entry["error"] for entry in retries] == ["ReadTimeout"]
    assert logs[-1]["event"] == "webhook.delivered"


async def test_connection_error_never_raises(db):
    user_id = add_user(db)
    with structlog.testing.capture_logs() as logs:
        async with notifier_for(db, closed_port_url()) as notifier:
            notification_id = await notifier.notify(user_id, "action", "closed")
            await notifier.drain()

    assert notification_id is not None
    retries = [entry for entry in logs if entry["event"] == "webhook.retry"]
    assert [entry["error"] for entry in retries] == ["ConnectError"] * 3
    assert logs[-1]["event"] == "webhook.failed"


async def test_notify_returns_while_receiver_slow(db):
    user_id = add_user(db)
    async with running_receiver((200, 1.0)) as receiver:
        notifier = notifier_for(db, receiver.url, timeout_s=5.0)
        started = time.monotonic()
        notification_id = await notifier.notify(user_id, "action", "added margin")
        elapsed_s = time.monotonic() - started

        assert elapsed_s < 0.5
        assert notifier.pending == 1
        with db.session() as session:
            assert session.get(Notification, notification_id) is not None
        await notifier.aclose()

    assert notifier.pending == 0
    assert len(receiver.requests) == 1


async def test_drain_timeout_cancels_delivery(db):
    user_id = add_user(db)
    async with running_receiver((200, 3.0)) as receiver:
        with structlog.testing.capture_logs() as logs:
            notifier = notifier_for(db, receiver.url)
            await notifier.notify(user_id, "action", "added margin")
            await asyncio.sleep(0.1)
            await notifier.aclose(timeout_s=0.1)

    assert notifier.pending == 0
    assert [entry["event"] for entry in logs] == ["webhook.drain_timeout"]
    assert logs[0]["cancelled"] == 1


async def test_failed_row_still_sends_webhook(db):
    async with running_receiver() as receiver:
        with structlog.testing.capture_logs() as logs:
            async with notifier_for(db, receiver.url) as notifier:
                notification_id = await notifier.notify(10_000, "action", "unknown user")

    assert notification_id is None
    assert logs[0]["event"] == "notification.store_failed"
    assert logs[0]["error"] == "IntegrityError"
    assert json.loads(receiver.requests[0].body)["id"] is None


async def test_failed_lookup_skips_webhook(db):
    user_id = add_user(db)

    def broken_lookup(user_id: int) -> WebhookTarget | None:
        raise RuntimeError(f"cannot decrypt {SECRET}")

    with structlog.testing.capture_logs() as logs:
        async with Notifier(db, broken_lookup, retry=FAST_RETRY) as notifier:
            notification_id = await notifier.notify(user_id, "action", "closed")
            assert notifier.pending == 0

    assert notification_id is not None
    assert logs == [
        {
            "event": "webhook.lookup_failed",
            "user_id": user_id,
            "error": "RuntimeError",
            "log_level": "error",
        }
    ]


async def test_no_secret_in_logs(db, caplog):
    """Every log line of retries, rejections and failures omits the secret and the URL path."""
    caplog.set_level(logging.DEBUG)
    user_id = add_user(db)
    async with running_receiver((503, 0.1), (404, 0.2), (200, 0)) as receiver:
        with structlog.testing.capture_logs() as logs:
            async with notifier_for(db, receiver.url) as notifier:
                # Both deliveries are in flight at once, to the same URL.
                await notifier.notify(user_id, "action", "first")
                await notifier.notify(user_id, "failure", "second")
            async with notifier_for(db, closed_port_url()) as notifier:
                await notifier.notify(user_id, "action", "third")
            text = repr(WebhookTarget(receiver.url, SECRET))

    lines = [str(entry) for entry in logs] + [record.getMessage() for record in caplog.records]
    lines.append(text)
    requests = [line for line in lines if line.startswith("HTTP Request: POST")]
    assert len(requests) == 3
    assert len(logs) >= 6
    for line in lines:
        assert SECRET not in line
        assert PATH_TOKEN not in line
    assert "[secure]" in text


@pytest.mark.parametrize(
    ("url", "secret", "field"),
    [
        ("ftp://127.0.0.1/hook", SECRET, "webhook_url"),
        ("/hooks/relative", SECRET, "webhook_url"),
        ("http://127.0.0.1/hook", "", "webhook_secret"),
    ],
)
def test_invalid_webhook_target(url, secret, field):
    with pytest.raises(InvalidConfigError) as caught:
        WebhookTarget(url, secret)

    assert caught.value.field == field
    assert SECRET not in str(caught.value)


def test_retry_policy_backoff():
    policy = RetryPolicy(max_attempts=6, base_delay_s=0.5, max_delay_s=3.0)

    assert [policy.delay_s(attempt) for attempt in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(InvalidConfigError):
        RetryPolicy(max_attempts=0)
