"""Helpers shared by the operator commands: output as a table or JSON, confirmation, common
options, and opening Redis and the database."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from axisor.config import Settings
from axisor.queue.names import MARGIN_GUARD_QUEUE, QUEUES

# Output helpers


def emit(as_json: bool, document: Any, show: Callable[[], None]) -> None:
    """Print ``document`` as JSON, or call ``show`` to print it for reading."""
    if as_json:
        click.echo(json.dumps(document, indent=2, default=str))
    else:
        show()


def print_table(title: str, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("-" if value is None else str(value) for value in row))
    Console(width=140).print(table)


def confirm(message: str, yes: bool) -> None:
    """Print what will change and ask; abort (exit status 1) on no."""
    click.echo(message, err=True)
    if not yes:
        click.confirm("Proceed?", abort=True, err=True)


def target_options(queue_required: bool = True):
    """Add --queue, --prefix and --json to a command."""

    def decorate(function):
        default = MARGIN_GUARD_QUEUE if queue_required else None
        function = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(
            function
        )
        function = click.option(
            "--prefix", default="bull", show_default=True, help="BullMQ key prefix."
        )(function)
        return click.option(
            "--queue",
            type=click.Choice(QUEUES),
            default=default,
            show_default=True,
            help="Queue name." if queue_required else "Queue name (default: all).",
        )(function)

    return decorate


def yes_option(function):
    return click.option("--yes", is_flag=True, help="Do not ask for confirmation.")(function)


def redis_url_of(settings: Settings) -> str:
    from axisor.redis_server import ensure_redis

    return ensure_redis(settings)


@contextmanager
def database_of(settings: Settings):
    from axisor.db.migrate import upgrade
    from axisor.db.session import Database

    database = Database(settings.effective_database_url)
    upgrade(database)
    try:
        yield database
    finally:
        database.dispose()


def ledger_lookup(database):
    from axisor.ledger import ActionLedger

    return ActionLedger(database).get


def lookup_errors(function):
    """Turn a LookupError (job or user not found, wrong state) into a one-line error."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except LookupError as exc:
            raise click.ClickException(str(exc.args[0] if exc.args else exc)) from exc

    return wrapper
