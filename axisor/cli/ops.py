"""Operator commands: ``queue``, ``redis``, ``doctor``, ``jobs``, ``trades``, ``automations``,
``accounts`` and ``pool``.

Every command prints a table, or one JSON document with --json. Every command that changes
state first prints what it will change and requests confirmation, unless --yes is given.

Each area has its own module: ``axisor.cli.queue`` (queue and redis), ``axisor.cli.doctor``,
``axisor.cli.workload`` (jobs, trades, automations and accounts balances) and
``axisor.cli.pool``; the helpers they share are in ``axisor.cli.common``.
"""

from __future__ import annotations

from axisor.cli.common import (
    confirm,
    database_of,
    emit,
    ledger_lookup,
    lookup_errors,
    print_table,
    redis_url_of,
    target_options,
    yes_option,
)
from axisor.cli.doctor import doctor_group
from axisor.cli.pool import pool_group
from axisor.cli.queue import queue_group, redis_group
from axisor.cli.workload import automations_group, jobs_group, trades_group

__all__ = [
    "OPS_COMMANDS",
    "confirm",
    "database_of",
    "emit",
    "ledger_lookup",
    "lookup_errors",
    "print_table",
    "redis_url_of",
    "target_options",
    "yes_option",
]

OPS_COMMANDS = (
    queue_group,
    redis_group,
    doctor_group,
    jobs_group,
    trades_group,
    automations_group,
    pool_group,
)
