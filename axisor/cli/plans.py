"""``axisor plan``: change a user's plan; a downgrade disarms what the new plan does not allow."""

from __future__ import annotations

import asyncio
import json

import click

from axisor.config import Settings
from axisor.errors import InvalidConfigError


@click.group("plan")
def plan_group() -> None:
    """Users' plans: free, basic, advanced, pro, lifetime."""


@plan_group.command("set")
@click.argument("user")
@click.argument("plan")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def plan_set(settings: Settings, user: str, plan: str, yes: bool, as_json: bool) -> None:
    """Set USER's (id or e-mail) plan to PLAN and list the settings it disarmed."""
    from axisor.db.migrate import upgrade
    from axisor.db.session import Database
    from axisor.plans import downgrade, parse_plan

    new_plan = parse_plan(plan)
    database = Database(settings.effective_database_url)
    upgrade(database)
    if not yes:
        click.confirm(f"set the plan of {user} to {new_plan.value}?", abort=True)
    with database.session() as session:
        report = downgrade(session, _find_user(session, user), new_plan)
    _announce(settings, database, report.user_id)
    disarmed = [_fields(item) for item in report.disarmed]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "user_id": report.user_id,
                    "old_plan": report.old_plan.value,
                    "new_plan": report.new_plan.value,
                    "disarmed": disarmed,
                }
            )
        )
        return
    click.echo(f"plan of user {report.user_id}: {report.old_plan.value} -> {report.new_plan.value}")
    for item in disarmed:
        click.echo(
            f"  disarmed {item['kind']} {item['id']} (account {item['account_id']}): "
            f"{item['reason']}"
        )
    if not disarmed:
        click.echo("  nothing disarmed")


def _fields(item) -> dict:
    return {name: getattr(item, name) for name in ("kind", "id", "account_id", "limit", "reason")}


def _find_user(session, user: str):
    from sqlalchemy import select

    from axisor.db.models import User

    column = User.id if user.isdigit() else User.email
    value = int(user) if user.isdigit() else user
    found = session.scalar(select(User).where(column == value))
    if found is None:
        raise InvalidConfigError("user", f"no user {user!r}; give a user id or e-mail")
    return found


def _announce(settings: Settings, database, user_id: int) -> None:
    """Tell a running engine to re-read the user's positions, whose settings may have changed."""
    from redis.asyncio import Redis
    from sqlalchemy import select

    from axisor.db.models import ExchangeAccount, Position, PositionStatus
    from axisor.engine.events import publish_position_changed

    if not settings.redis_url:
        return  # no shared Redis, so no engine to tell
    with database.session() as session:
        ids = list(
            session.scalars(
                select(Position.id)
                .join(ExchangeAccount)
                .where(
                    ExchangeAccount.user_id == user_id,
                    Position.status == PositionStatus.RUNNING.value,
                )
            )
        )

    async def publish() -> None:
        redis = Redis.from_url(settings.redis_url)
        for position_id in ids:
            await publish_position_changed(redis, position_id)
        await redis.aclose()

    asyncio.run(publish())
