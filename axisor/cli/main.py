"""The ``axisor`` command: one group, one module per area of commands."""

from __future__ import annotations

import sys

import click
import redis.exceptions
import sqlalchemy.exc

from axisor import __version__
from axisor.cli.accounts import accounts_group
from axisor.cli.engine import engine_group
from axisor.cli.guard import guard_group
from axisor.cli.mock import mock_exchange_command
from axisor.cli.ops import OPS_COMMANDS
from axisor.cli.plans import plan_group
from axisor.cli.simulate import simulate_command
from axisor.cli.worker import worker_group
from axisor.config import Settings
from axisor.errors import AxisorError
from axisor.logs import configure_logging


class AxisorGroup(click.Group):
    """Turns the platform's own errors into one readable line and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AxisorError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except redis.exceptions.ConnectionError as exc:
            click.echo(
                f"error: REDIS_URL: cannot connect to Redis ({exc}); start Redis, or unset "
                "REDIS_URL to let Axisor start its own",
                err=True,
            )
            sys.exit(2)
        except sqlalchemy.exc.OperationalError as exc:
            click.echo(
                f"error: DATABASE_URL: the database failed ({exc.orig}); check that it is "
                "running, then run `axisor db upgrade`",
                err=True,
            )
            sys.exit(2)


@click.group(cls=AxisorGroup)
@click.version_option(__version__, prog_name="axisor")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Axisor: Margin Guard and trading automations for LN Markets futures."""
    try:
        settings = Settings.from_env()
    except AxisorError as exc:
        raise click.UsageError(str(exc)) from exc
    configure_logging(settings.log_format, settings.log_level)
    ctx.obj = settings


@main.group()
def db() -> None:
    """Database commands."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: Settings) -> None:
    """Apply every pending migration to the database (DATABASE_URL, or the SQLite default)."""
    from axisor.db.migrate import current_revision, upgrade
    from axisor.db.session import Database

    database = Database(settings.effective_database_url)
    upgrade(database)
    click.echo(f"database {database.url} is at revision {current_revision(database)}")


@main.command("episodes")
def episodes_command() -> None:
    """List the real BTC/USD price episodes shipped with Axisor."""
    from axisor.market.episodes import EPISODES

    for episode in EPISODES.values():
        click.echo(f"{episode.name:18} {episode.resolution_s // 60:>3} min  {episode.title}")


main.add_command(simulate_command)
main.add_command(accounts_group)
main.add_command(mock_exchange_command)
main.add_command(guard_group)
main.add_command(worker_group)
main.add_command(engine_group)
main.add_command(plan_group)
for command in OPS_COMMANDS:
    main.add_command(command)


if __name__ == "__main__":
    main()
