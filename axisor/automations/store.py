"""Stored automations: validated on write, armed and disarmed, each firing at most once per arming.

The ``automations.config`` JSON column holds the validated settings (Decimals as strings) and,
under ``"_state"``, what the platform keeps about the automation:

- ``version``: the arming version. Arming raises it, job ids and ledger keys carry it, so each
  arming can fire once and a job of an earlier arming is recognised as stale.
- ``position_id``: the position a take profit or a stop loss acts on.
- ``placement``: where a stop loss runs (``exchange`` or ``engine``), resolved when written.
- ``placed_version``: the arming whose stop the worker placed on the exchange.
- ``cooldown_until_ms``: an auto entry with ``cooldown_s`` stays armed but idle until then.
- ``best_price_usd``: the best price a trailing stop has followed, when one was stored.
- ``last_trade_id``: the trade an auto entry opened last.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from axisor.automations.config import (
    AutomationConfig,
    AutomationType,
    StopLossConfig,
    check_supported,
    parse_automation_config,
    parse_automation_type,
    stop_placement,
)
from axisor.db.models import Automation, ExchangeAccount, Position, PositionStatus, utcnow
from axisor.db.session import Database
from axisor.errors import InvalidConfigError
from axisor.exchange.models import CloseReason
from axisor.exchange.registry import capabilities_for
from axisor.plans import check_automation

STATE_KEY = "_state"
# Automation types that act on one running position.
POSITION_TYPES = frozenset({AutomationType.TAKE_PROFIT, AutomationType.STOP_LOSS})


@dataclass(frozen=True, slots=True)
class AutomationState:
    """The platform's bookkeeping of one automation, stored under ``"_state"``."""

    version: int = 1
    position_id: int | None = None
    placement: str | None = None
    placed_version: int | None = None
    cooldown_until_ms: int | None = None
    best_price_usd: Decimal | None = None
    last_trade_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        if self.best_price_usd is not None:
            values["best_price_usd"] = str(self.best_price_usd)
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any] | None) -> AutomationState:
        values = dict(values or {})
        if values.get("best_price_usd") is not None:
            values["best_price_usd"] = Decimal(values["best_price_usd"])
        known = {name: values[name] for name in cls.__slots__ if name in values}
        return cls(**known)


@dataclass(frozen=True, slots=True)
class StoredAutomation:
    """One automation row with its parsed settings, safe to use after the session closed."""

    id: int
    user_id: int
    account_id: int
    type: AutomationType
    config: AutomationConfig
    state: AutomationState
    active: bool
    last_executed_at: dt.datetime | None


def settings_of(row: Automation) -> dict[str, Any]:
    """Return the stored settings without the ``"_state"`` entry."""
    return {name: value for name, value in (row.config or {}).items() if name != STATE_KEY}


def state_of(row: Automation) -> AutomationState:
    return AutomationState.from_json((row.config or {}).get(STATE_KEY))


def to_stored(row: Automation) -> StoredAutomation:
    """Parse the row; an invalid stored configuration raises InvalidConfigError."""
    return StoredAutomation(
        id=row.id,
        user_id=row.user_id,
        account_id=row.account_id,
        type=parse_automation_type(row.type),
        config=parse_automation_config(row.type, settings_of(row)),
        state=state_of(row),
        active=row.active,
        last_executed_at=row.last_executed_at,
    )


def create_automation(
    database: Database,
    account_id: int,
    automation_type: AutomationType | str,
    raw: dict[str, Any],
    *,
    position_id: int | None = None,
) -> int:
    """Validate ``raw`` and store it as an armed automation of the account; return its id.

    A take profit or stop loss needs ``position_id``, a running position of the account, and an
    auto entry takes none. The venue must support the settings and the user's plan must allow
    one more active automation of this type. Raises InvalidConfigError naming the field (a
    PlanLimitError names the limit and the cheapest plan allowing it) and stores nothing then.
    """
    kind = parse_automation_type(automation_type)
    config = parse_automation_config(kind, raw)
    with database.session() as session:
        account = _account(session, account_id)
        capabilities = capabilities_for(account.exchange)
        check_supported(config, capabilities)
        _check_target(session, kind, account_id, position_id)
        check_automation(account.user.plan, kind, _active_count(session, account.user_id))
        placement = None
        if isinstance(config, StopLossConfig):
            placement = stop_placement(config, capabilities).value
        state = AutomationState(position_id=position_id, placement=placement)
        row = Automation(
            user_id=account.user_id,
            account_id=account_id,
            type=kind.value,
            config=_config_json(config, state),
            active=True,
        )
        session.add(row)
        session.flush()
        return row.id


def arm(database: Database, automation_id: int) -> int:
    """Arm the automation again with a new version and return it.

    An inactive automation counts against the plan's limits again. Arming clears the cooldown
    and the placed stop of the previous arming.
    """
    with database.session() as session:
        row = _row(session, automation_id, lock=True)
        if not row.active:
            user_plan = row_plan(session, row)
            check_automation(user_plan, row.type, _active_count(session, row.user_id))
        state = state_of(row)
        _set_state(
            row,
            replace(
                state,
                version=state.version + 1,
                placed_version=None,
                cooldown_until_ms=None,
                best_price_usd=None,
            ),
        )
        row.active = True
        return state.version + 1


def disarm(database: Database, automation_id: int) -> None:
    """Turn the automation off; ``arm`` turns it on again with a new version."""
    with database.session() as session:
        _row(session, automation_id, lock=True).active = False


def load_automation(database: Database, automation_id: int) -> StoredAutomation | None:
    with database.session() as session:
        row = session.get(Automation, automation_id)
        return None if row is None else to_stored(row)


def load_active(
    session: Session, ids: list[int] | None = None
) -> list[tuple[StoredAutomation, Position | None]]:
    """Return the active automations (all, or those in ``ids``) with their target positions.

    Rows whose stored settings no longer parse are left out.
    """
    statement = select(Automation).where(Automation.active.is_(True)).order_by(Automation.id)
    if ids is not None:
        statement = statement.where(Automation.id.in_(ids))
    loaded = []
    for row in session.scalars(statement):
        try:
            stored = to_stored(row)
        except InvalidConfigError:
            continue
        position = None
        if stored.state.position_id is not None:
            position = session.get(Position, stored.state.position_id)
        loaded.append((stored, position))
    return loaded


def ids_for_positions(session: Session, position_ids: set[int]) -> list[int]:
    """Return the ids of active automations that act on one of ``position_ids``."""
    rows = session.scalars(select(Automation).where(Automation.active.is_(True)))
    return [row.id for row in rows if state_of(row).position_id in position_ids]


def record_fired(
    session: Session,
    automation_id: int,
    version: int,
    *,
    time_ms: int | None = None,
    last_trade_id: str | None = None,
) -> None:
    """Store that the arming ``version`` fired, in the caller's transaction.

    The automation is disarmed, except an auto entry with ``cooldown_s``: it is armed again
    with a new version that waits until ``time_ms`` plus the cooldown. A fire of an earlier
    arming only sets ``last_executed_at``.
    """
    row = _row(session, automation_id, lock=True)
    row.last_executed_at = utcnow()
    state = state_of(row)
    if last_trade_id is not None:
        state = replace(state, last_trade_id=last_trade_id)
    if state.version != version:
        _set_state(row, state)
        return
    cooldown_s = (row.config or {}).get("cooldown_s")
    if row.type == AutomationType.AUTO_ENTRY.value and cooldown_s is not None:
        until_ms = (time_ms or 0) + int(cooldown_s) * 1000
        state = replace(state, version=version + 1, cooldown_until_ms=until_ms)
    else:
        row.active = False
    _set_state(row, state)


def record_placed(
    database: Database, automation_id: int, version: int, best_price_usd: Decimal | None
) -> None:
    """Store that the worker placed the stop of arming ``version`` on the exchange."""
    with database.session() as session:
        row = _row(session, automation_id, lock=True)
        state = state_of(row)
        if state.version == version:
            _set_state(row, replace(state, placed_version=version, best_price_usd=best_price_usd))


def record_best_prices(database: Database, best: dict[int, tuple[int, Decimal]]) -> int:
    """Store the best price each engine-enforced trailing stop has followed, so that a restarted
    engine trails on from there. ``best`` maps automation id to (version, price); a row armed
    again since is left alone. Returns the number of rows written."""
    written = 0
    with database.session() as session:
        for automation_id, (version, price) in sorted(best.items()):
            row = session.get(Automation, automation_id)
            if row is None or not row.active:
                continue
            state = state_of(row)
            if state.version == version:
                _set_state(row, replace(state, best_price_usd=price))
                written += 1
    return written


def disarm_in_session(session: Session, automation_id: int, version: int | None = None) -> None:
    """Turn the automation off in the caller's transaction, unless it was re-armed since
    ``version``."""
    row = _row(session, automation_id, lock=True)
    if version is None or state_of(row).version == version:
        row.active = False


def trade_closed(
    database: Database, account_id: int, trade_id: str, reason: CloseReason | str
) -> list[int]:
    """Disarm the automations acting on a trade the venue no longer runs; return their ids.

    A stop loss the worker placed on the exchange is recorded as fired when the venue reports
    a stop loss fill.
    """
    with database.session() as session:
        position_ids = set(
            session.scalars(
                select(Position.id).where(
                    Position.account_id == account_id, Position.trade_id == trade_id
                )
            )
        )
        ids = ids_for_positions(session, position_ids) if position_ids else []
        for automation_id in ids:
            row = _row(session, automation_id, lock=True)
            if _venue_filled(row, reason):
                row.last_executed_at = utcnow()
            row.active = False
        return ids


def row_plan(session: Session, row: Automation) -> str:
    return _account(session, row.account_id).user.plan


def _venue_filled(row: Automation, reason: CloseReason | str) -> bool:
    state = state_of(row)
    placed = state.placed_version is not None and state.placed_version == state.version
    return placed and str(reason) == CloseReason.STOPLOSS.value


def _config_json(config: AutomationConfig, state: AutomationState) -> dict[str, Any]:
    return {**config.model_dump(mode="json", exclude_none=True), STATE_KEY: state.to_json()}


def _set_state(row: Automation, state: AutomationState) -> None:
    # A new dict, so that the ORM detects the change of the JSON column.
    row.config = {**settings_of(row), STATE_KEY: state.to_json()}


def _row(session: Session, automation_id: int, *, lock: bool = False) -> Automation:
    row = session.get(Automation, automation_id, with_for_update=lock)
    if row is None:
        raise InvalidConfigError("automation_id", f"no automation with id {automation_id}")
    return row


def _account(session: Session, account_id: int) -> ExchangeAccount:
    account = session.get(ExchangeAccount, account_id)
    if account is None:
        raise InvalidConfigError("account_id", f"no linked account with id {account_id}")
    return account


def _active_count(session: Session, user_id: int) -> int:
    statement = select(func.count()).where(
        Automation.user_id == user_id, Automation.active.is_(True)
    )
    return session.scalar(statement)


def _check_target(
    session: Session, kind: AutomationType, account_id: int, position_id: int | None
) -> None:
    if kind not in POSITION_TYPES:
        if position_id is not None:
            raise InvalidConfigError(
                "position_id", f"an {kind.value} opens its own trade; leave position_id out"
            )
        return
    if position_id is None:
        raise InvalidConfigError(
            "position_id", f"missing; a {kind.value} needs the running position it acts on"
        )
    position = session.get(Position, position_id)
    if position is None or position.account_id != account_id:
        raise InvalidConfigError(
            "position_id", f"no position {position_id} on account {account_id}"
        )
    if position.status != PositionStatus.RUNNING.value:
        raise InvalidConfigError(
            "position_id", f"position {position_id} is {position.status}, not running"
        )
