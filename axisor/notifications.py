"""In-app notifications and signed outgoing webhooks, one of each per action or failure.

``Notifier.notify`` writes a Notification row, which the API reads with
``list_notifications``, and then schedules the webhook delivery as a background asyncio task,
so a slow or failing receiver never delays or fails the action. ``drain`` awaits the pending
deliveries on shutdown.

A delivery is one POST with a JSON body and these headers::

    Content-Type: application/json
    X-Axisor-Timestamp: 1700000000            epoch seconds of this attempt
    X-Axisor-Signature: sha256=<hex>          HMAC-SHA256 of the exact body, keyed with the
                                              user's webhook secret

The body's ``timestamp`` equals X-Axisor-Timestamp, so the signature covers the time as well
and a receiver can reject old deliveries. ``id`` is the notification id and stays the same
on every attempt. Timeouts, connection errors and 5xx replies are retried with exponential
backoff, up to ``RetryPolicy.max_attempts`` attempts. Any other reply, 4xx included, ends the
delivery. Log lines show only the scheme and host of the webhook URL, never its path or the
secret.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from axisor.db.models import Notification, utcnow
from axisor.db.session import Database
from axisor.errors import InvalidConfigError

log = structlog.get_logger("axisor.notifications")

SIGNATURE_HEADER = "X-Axisor-Signature"
TIMESTAMP_HEADER = "X-Axisor-Timestamp"


class _WebhookUrlFilter(logging.Filter):
    """Replaces webhook URLs in the httpx request log lines with their scheme and host.

    httpx logs every request's full URL at INFO, and a webhook URL's path may carry a token.
    """

    def __init__(self) -> None:
        super().__init__()
        self.origins: dict[str, str] = {}
        self._in_flight: Counter[str] = Counter()

    @contextmanager
    def masking(self, url: str, origin: str) -> Iterator[None]:
        """Mask ``url`` while a request to it is in flight. Requests to one URL may overlap."""
        self.origins[url] = origin
        self._in_flight[url] += 1
        try:
            yield
        finally:
            self._in_flight[url] -= 1
            if self._in_flight[url] == 0:
                del self._in_flight[url]
                del self.origins[url]

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and self.origins:
            record.args = tuple(self._masked(arg) for arg in record.args)
        return True

    def _masked(self, arg: Any) -> Any:
        origin = self.origins.get(str(arg))
        return arg if origin is None else f"{origin}/..."


_URL_FILTER = _WebhookUrlFilter()
logging.getLogger("httpx").addFilter(_URL_FILTER)


class NotificationKind(enum.StrEnum):
    ACTION = "action"  # the platform did something on an exchange
    FAILURE = "failure"  # an action failed or could not be attempted


@dataclass(frozen=True)
class WebhookTarget:
    """Webhook URL of one user and the secret that signs its deliveries. The repr hides both."""

    url: str
    secret: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidConfigError(
                "webhook_url", "invalid URL; use an absolute http:// or https:// URL"
            )
        if not self.secret:
            raise InvalidConfigError("webhook_secret", "missing; set a non-empty secret")

    @property
    def origin(self) -> str:
        """Scheme, host and port of the URL: the only part that is safe to log."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"

    def __repr__(self) -> str:
        return f"WebhookTarget(url={self.origin!r}/..., secret=[secure])"

    __str__ = __repr__


# Returns the webhook of a user, or None when the user has none. It runs in a worker thread.
WebhookLookup = Callable[[int], WebhookTarget | None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts of one delivery; the wait after attempt n is base_delay_s * 2**(n - 1), capped."""

    max_attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidConfigError(
                "max_attempts", f"{self.max_attempts} is below 1; use at least 1 attempt"
            )

    def delay_s(self, attempt: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))


def sign(secret: str, body: bytes) -> str:
    """Return the X-Axisor-Signature value of ``body``: ``sha256=`` and the hex HMAC."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(secret: str, body: bytes, signature: str) -> bool:
    """Return whether ``signature`` is the X-Axisor-Signature of ``body``, in constant time."""
    return hmac.compare_digest(sign(secret, body), signature)


def list_notifications(
    session: Session, user_id: int, unread_only: bool = False, limit: int = 100
) -> list[Notification]:
    """Return up to ``limit`` notifications of the user, newest first."""
    query = select(Notification).where(Notification.user_id == user_id)
    if unread_only:
        query = query.where(Notification.read.is_(False))
    query = query.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit)
    return list(session.scalars(query).all())


def mark_read(session: Session, user_id: int, notification_ids: list[int]) -> int:
    """Mark the user's notifications in ``notification_ids`` as read; return how many changed."""
    result = session.execute(
        update(Notification)
        .where(
            Notification.user_id == user_id,
            Notification.id.in_(notification_ids),
            Notification.read.is_(False),
        )
        .values(read=True)
    )
    return result.rowcount


@dataclass(frozen=True, slots=True)
class _Stored:
    notification_id: int | None
    created_at: dt.datetime
    target: WebhookTarget | None


class Notifier:
    """Writes notifications and delivers their webhooks in background tasks.

    Use one Notifier per event loop, and await ``aclose`` (or leave ``async with``) on
    shutdown. A client passed in stays open. Otherwise the Notifier creates one and closes it.
    """

    def __init__(
        self,
        database: Database,
        webhooks: WebhookLookup,
        *,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = 5.0,
        retry: RetryPolicy | None = None,
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        self._database = database
        self._webhooks = webhooks
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._timeout = httpx.Timeout(timeout_s)
        self._retry = retry or RetryPolicy()
        self._clock_s = clock_s
        self._tasks: set[asyncio.Task[bool]] = set()

    @property
    def pending(self) -> int:
        """Number of webhook deliveries still running."""
        return len(self._tasks)

    async def notify(
        self,
        user_id: int,
        kind: NotificationKind | str,
        message: str,
        details: dict[str, Any] | None = None,
    ) -> int | None:
        """Store an in-app notification and schedule its webhook; return the notification id.

        Returns None when the row could not be written. A database error is logged, not
        raised, and the webhook is still sent, so it does not fail the action it reports.
        """
        kind = NotificationKind(kind)
        safe_details = _json_safe(details or {})
        stored = await asyncio.to_thread(self._store, user_id, kind, message, safe_details)
        if stored.target is not None:
            payload = {
                "id": stored.notification_id,
                "user_id": user_id,
                "kind": kind.value,
                "message": message,
                "details": safe_details,
                "created_at": stored.created_at.isoformat(),
            }
            self._schedule(stored.target, payload)
        return stored.notification_id

    async def action(
        self, user_id: int, action: str, message: str, details: dict[str, Any] | None = None
    ) -> int | None:
        """Notify that ``action`` (such as add_margin) was carried out."""
        return await self.notify(
            user_id, NotificationKind.ACTION, message, _with_action(action, details)
        )

    async def failure(
        self, user_id: int, action: str, error: str, details: dict[str, Any] | None = None
    ) -> int | None:
        """Notify that ``action`` failed with ``error``."""
        values = {**_with_action(action, details), "error": error}
        return await self.notify(user_id, NotificationKind.FAILURE, error, values)

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the pending deliveries; after ``timeout_s`` cancel those still running."""
        if not self._tasks:
            return
        _, unfinished = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        if unfinished:
            log.warning("webhook.drain_timeout", cancelled=len(unfinished), timeout_s=timeout_s)
            for task in unfinished:
                task.cancel()
            await asyncio.wait(unfinished)

    async def aclose(self, timeout_s: float | None = None) -> None:
        """Drain the deliveries, then close the HTTP client if this Notifier created it."""
        await self.drain(timeout_s)
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Notifier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # Storage, in a worker thread

    def _store(
        self, user_id: int, kind: NotificationKind, message: str, details: dict[str, Any]
    ) -> _Stored:
        notification_id, created_at = None, utcnow()
        try:
            with self._database.session() as session:
                row = Notification(
                    user_id=user_id, kind=kind.value, message=message, details=details
                )
                session.add(row)
                session.flush()
                notification_id, created_at = row.id, row.created_at
        except SQLAlchemyError as exc:
            log.error(
                "notification.store_failed",
                user_id=user_id,
                kind=kind.value,
                error=type(exc).__name__,
            )
        return _Stored(notification_id, created_at, self._lookup(user_id))

    def _lookup(self, user_id: int) -> WebhookTarget | None:
        try:
            return self._webhooks(user_id)
        except Exception as exc:  # such as a secret that no longer decrypts: skip the webhook
            log.error("webhook.lookup_failed", user_id=user_id, error=type(exc).__name__)
            return None

    # Delivery, in background tasks

    def _schedule(self, target: WebhookTarget, payload: dict[str, Any]) -> None:
        task = asyncio.create_task(self._deliver(target, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, target: WebhookTarget, payload: dict[str, Any]) -> bool:
        """Send the webhook until it is accepted, rejected or out of attempts.

        Only cancellation propagates. Every other error is logged and ends the delivery.
        """
        context = {
            "user_id": payload["user_id"],
            "notification_id": payload["id"],
            "webhook": target.origin,
        }
        try:
            return await self._attempts(target, payload, context)
        except Exception as exc:  # a background task has no caller to raise to
            log.error("webhook.crashed", **context, error=_describe(exc, target))
            return False

    async def _attempts(
        self, target: WebhookTarget, payload: dict[str, Any], context: dict[str, Any]
    ) -> bool:
        started_s = time.monotonic()
        attempts = self._retry.max_attempts
        for attempt in range(1, attempts + 1):
            status, error = await self._post(target, payload)
            duration_s = round(time.monotonic() - started_s, 3)
            if status is not None and 200 <= status < 300:
                log.info(
                    "webhook.delivered",
                    **context,
                    status=status,
                    attempt=attempt,
                    duration_s=duration_s,
                )
                return True
            if status is not None and status < 500:
                log.warning("webhook.rejected", **context, status=status, attempt=attempt)
                return False
            if attempt == attempts:
                break
            delay_s = self._retry.delay_s(attempt)
            log.warning(
                "webhook.retry",
                **context,
                status=status,
                error=error,
                attempts_left=attempts - attempt,
                delay_s=delay_s,
            )
            await asyncio.sleep(delay_s)
        log.error("webhook.failed", **context, status=status, error=error, attempts=attempts)
        return False

    async def _post(
        self, target: WebhookTarget, payload: dict[str, Any]
    ) -> tuple[int | None, str | None]:
        """Send one attempt; return the status, or None and the error class when none came."""
        timestamp = int(self._clock_s())
        body = _encode({**payload, "timestamp": timestamp})
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(target.secret, body),
        }
        url = str(httpx.URL(target.url))
        try:
            with _URL_FILTER.masking(url, target.origin):
                response = await self._client.post(
                    url, content=body, headers=headers, timeout=self._timeout
                )
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            return None, type(exc).__name__
        return response.status_code, None


def _with_action(action: str, details: dict[str, Any] | None) -> dict[str, Any]:
    return {**(details or {}), "action": action}


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


def _json_safe(details: dict[str, Any]) -> dict[str, Any]:
    """Return ``details`` with Decimals, datetimes and enums as strings, as JSON stores them."""
    return json.loads(json.dumps(details, default=_json_default))


def _encode(payload: dict[str, Any]) -> bytes:
    text = json.dumps(payload, default=_json_default, separators=(",", ":"), sort_keys=True)
    return text.encode("utf-8")


def _describe(exc: Exception, target: WebhookTarget) -> str:
    """Return the error's class and message with the secret and the URL path hidden."""
    text = f"{type(exc).__name__}: {exc}"
    return text.replace(target.secret, "[secure]").replace(target.url, target.origin)


def stored_webhooks(database, cipher) -> WebhookLookup:
    """Return a lookup of each user's webhook from the users table.

    The secret is stored as a Fernet token under the credentials key; a user without a URL or
    secret gets no webhook, only in-app notifications.
    """
    from axisor.db.models import User

    def lookup(user_id: int) -> WebhookTarget | None:
        with database.session() as session:
            user = session.get(User, user_id)
            if user is None or not user.webhook_url or user.webhook_secret_encrypted is None:
                return None
            secret = cipher.decrypt_text(user.webhook_secret_encrypted)
            return WebhookTarget(url=user.webhook_url, secret=secret)

    return lookup
