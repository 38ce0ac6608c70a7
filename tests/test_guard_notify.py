"""Margin Guard notifications: an in-app record and a signed webhook for actions and failures."""

from __future__ import annotations

import pytest

from axisor.notifications import Notifier, WebhookTarget, list_notifications
from axisor.workers.guard_action import run_guard_action
from tests.guard_fixtures import CROSSING_PRICE, guard_world


@pytest.fixture
async def world(db, redis_url):
    async with guard_world(db, redis_url) as guarded_world:
        yield guarded_world


async def test_action_notified_in_app(world):
    """An added margin leaves one in-app action notification for the position's owner."""
    notifier = Notifier(world.db, lambda user_id: None)
    world.ctx.notifier = notifier
    trade, position_id = await world.open_position()
    world.venue.set_price(CROSSING_PRICE, 2_000)

    result = await run_guard_action(world.ctx, world.action_job(position_id))
    await notifier.aclose()

    assert result["outcome"] == "margin_added"
    with world.db.session() as session:
        rows = list_notifications(session, world.user_id)
    assert len(rows) == 1
    assert rows[0].kind == "action"
    assert "added" in rows[0].message
    assert rows[0].details["position_id"] == position_id


async def test_unfunded_notified_as_failure(world):
    """No free sats gives a failure notification that tells the user what to do."""
    notifier = Notifier(world.db, lambda user_id: None)
    world.ctx.notifier = notifier
    _, position_id = await world.open_position(spare_sats=0)
    world.venue.set_price(CROSSING_PRICE, 2_000)

    await run_guard_action(world.ctx, world.action_job(position_id))
    await notifier.aclose()

    with world.db.session() as session:
        rows = list_notifications(session, world.user_id)
    assert [row.kind for row in rows] == ["failure"]
    assert "deposit" in rows[0].message


async def test_webhook_lookup_failure_skips(world):
    """A webhook lookup that fails never fails the action; the in-app row is still written."""

    def broken(user_id: int) -> WebhookTarget | None:
        raise RuntimeError("secret no longer decrypts")

    notifier = Notifier(world.db, broken)
    world.ctx.notifier = notifier
    _, position_id = await world.open_position()
    world.venue.set_price(CROSSING_PRICE, 2_000)

    result = await run_guard_action(world.ctx, world.action_job(position_id))
    await notifier.aclose()

    assert result["outcome"] == "margin_added"
    with world.db.session() as session:
        assert len(list_notifications(session, world.user_id)) == 1


def test_stored_webhook_lookup(db):
    """A user's webhook URL and encrypted secret become the delivery target."""
    from cryptography.fernet import Fernet

    from axisor.db.crypto import CredentialCipher
    from axisor.db.models import User
    from axisor.notifications import stored_webhooks

    cipher = CredentialCipher([Fernet.generate_key()])
    with db.session() as session:
        hooked = User(
            email="hook@example.test",
            webhook_url="http://127.0.0.1:9/hook",
            webhook_secret_encrypted=cipher.encrypt_text("whsec-1"),
        )
        plain = User(email="plain@example.test")
        session.add_all([hooked, plain])
        session.flush()
        hooked_id, plain_id = hooked.id, plain.id
    lookup = stored_webhooks(db, cipher)
    target = lookup(hooked_id)
    assert target.url == "http://127.0.0.1:9/hook"
    assert target.secret == "whsec-1"
    assert "whsec-1" not in repr(target)
    assert lookup(plain_id) is None
