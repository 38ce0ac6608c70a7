"""Writing a Margin Guard configuration: validated in full before anything is stored."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from axisor.db.models import ExchangeAccount, MarginGuardConfig, Position, PositionStatus
from axisor.db.session import Database
from axisor.errors import InvalidConfigError
from axisor.exchange.models import Capabilities
from axisor.exchange.registry import capabilities_for
from axisor.guard.config import GuardConfig, GuardScope, check_supported, parse_guard_config
from axisor.guard.positions import increment
from axisor.plans import check_guard_config


def configure_guard(
    database: Database,
    account_id: int,
    raw: dict[str, Any],
    *,
    position_id: int | None = None,
    mode: str | None = None,
    enabled: bool = True,
    cross: bool = False,
) -> tuple[GuardConfig, list[int]]:
    """Validate ``raw`` and store it for the account (or one of its positions).

    ``mode`` is "global" for an account-wide setting, and "selected" (the default) or
    "individual" for one position. ``cross`` (or ``"scope": "cross"`` in ``raw``) stores the
    setting for the account's cross margin position: account-wide, mode "global", with scope
    cross in the stored JSON. The user's plan must allow the mode, the action and the
    figures. Returns the configuration and the ids of the running positions whose triggers must
    be re-armed. An invalid configuration raises InvalidConfigError naming the field (a
    PlanLimitError names the limit and the plan that allows it) and leaves whatever was stored
    before unchanged.
    """
    config = _parse(raw, cross)
    cross = config.scope is GuardScope.CROSS
    mode = _cross_mode(mode, position_id) if cross else _mode(mode, position_id)
    with database.session() as session:
        account = session.get(ExchangeAccount, account_id)
        if account is None:
            raise InvalidConfigError("account_id", f"no linked account with id {account_id}")
        check_supported(config, _capabilities(account), cross=cross)
        _check_position(session, account_id, position_id)
        covered = _protected_after_write(session, account, position_id)
        check_guard_config(account.user.plan, config, mode, covered)
        row = session.scalar(
            select(MarginGuardConfig).where(
                MarginGuardConfig.account_id == account_id,
                _same_position(position_id),
            )
        )
        if row is None:
            row = MarginGuardConfig(
                user_id=account.user_id, account_id=account_id, position_id=position_id
            )
            session.add(row)
        else:
            _check_scope_change(row, config)
        row.config = config.model_dump(mode="json")
        row.mode = mode
        row.enabled = enabled
        affected = _running_positions(session, account_id, position_id)
        _bump_versions(session, affected)
    return config, affected


def _parse(raw: dict[str, Any], cross: bool) -> GuardConfig:
    config = parse_guard_config(raw)
    if cross:
        return config.model_copy(update={"scope": GuardScope.CROSS})
    return config


def _cross_mode(mode: str | None, position_id: int | None) -> str:
    """Return "global": a cross guard covers the one cross margin position of the account."""
    if position_id is not None:
        raise InvalidConfigError(
            "position_id",
            f"a cross margin guard covers the account's cross position, not position "
            f"{position_id}; leave position_id out",
        )
    if mode not in (None, "global"):
        raise InvalidConfigError(
            "mode", f"a cross margin guard is account-wide; use global, not {mode!r}"
        )
    return "global"


def _check_scope_change(row: MarginGuardConfig, config: GuardConfig) -> None:
    """Reject replacing an enabled setting of the other scope.

    An account stores one account-wide setting, so a cross setting written over an isolated one
    (or the reverse) would silently end the protection the old one gave.
    """
    stored = GuardScope(row.config.get("scope", GuardScope.ISOLATED.value))
    if stored is config.scope or not row.enabled:
        return
    raise InvalidConfigError(
        "scope",
        f"account {row.account_id} already has an enabled account-wide guard setting for "
        f"{_SCOPE_NAMES[stored]}, and an account stores one account-wide setting; disable "
        f"that setting (enabled=False) before storing one for {_SCOPE_NAMES[config.scope]}",
    )


_SCOPE_NAMES = {
    GuardScope.ISOLATED: "isolated trades",
    GuardScope.CROSS: "the cross margin position",
}


def _mode(mode: str | None, position_id: int | None) -> str:
    if position_id is None:
        if mode not in (None, "global"):
            raise InvalidConfigError("mode", f"{mode!r} needs a position_id; leave it out")
        return "global"
    mode = mode or "selected"
    if mode not in ("selected", "individual"):
        raise InvalidConfigError("mode", f"unknown mode {mode!r}; use selected or individual")
    return mode


def _protected_after_write(session, account: ExchangeAccount, position_id: int | None) -> int:
    """Count the user's running positions that a guard setting covers once this one is stored."""
    rows = session.scalars(
        select(MarginGuardConfig).where(
            MarginGuardConfig.user_id == account.user_id, MarginGuardConfig.enabled.is_(True)
        )
    ).all()
    whole_accounts = {row.account_id for row in rows if row.position_id is None}
    single = {row.position_id for row in rows if row.position_id is not None}
    if position_id is None:
        whole_accounts.add(account.id)
    else:
        single.add(position_id)
    running = session.execute(
        select(Position.id, Position.account_id)
        .join(ExchangeAccount)
        .where(
            ExchangeAccount.user_id == account.user_id,
            Position.status == PositionStatus.RUNNING.value,
        )
    ).all()
    return sum(1 for pid, aid in running if aid in whole_accounts or pid in single)


def _capabilities(account: ExchangeAccount) -> Capabilities:
    try:
        return capabilities_for(account.exchange)
    except KeyError:
        raise InvalidConfigError(
            "exchange", f"account {account.id} is on unknown venue {account.exchange!r}"
        ) from None


def _check_position(session, account_id: int, position_id: int | None) -> None:
    if position_id is None:
        return
    position = session.get(Position, position_id)
    if position is None or position.account_id != account_id:
        raise InvalidConfigError(
            "position_id", f"position {position_id} is not a position of account {account_id}"
        )


def _same_position(position_id: int | None):
    column = MarginGuardConfig.position_id
    return column.is_(None) if position_id is None else column == position_id


def _running_positions(session, account_id: int, position_id: int | None) -> list[int]:
    statement = select(Position.id).where(
        Position.account_id == account_id, Position.status == PositionStatus.RUNNING.value
    )
    if position_id is not None:
        statement = statement.where(Position.id == position_id)
    return list(session.scalars(statement))


def _bump_versions(session, position_ids: list[int]) -> None:
    """Move each position's version, so jobs queued under the old settings find themselves
    stale."""
    for position_id in position_ids:
        increment(session.get(Position, position_id), "guard_version", 1)
