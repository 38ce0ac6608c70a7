"""Subscription plans: what each plan allows, checked whenever a configuration is written.

``PLANS`` is the one table of limits. ``check_guard_config``, ``check_automation`` and
``check_linked_accounts`` raise PlanLimitError (an InvalidConfigError) naming the limit, the
plan and the cheapest plan that allows the value. ``downgrade`` sets a new plan and disarms
what that plan no longer allows, keeping the oldest settings.

Margin Guard modes: ``global`` is one setting for every position of an account (a
MarginGuardConfig row without a position), ``selected`` is one setting shared by positions the
user chose, and ``individual`` is a setting per position (rows with a position).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from axisor.automations.config import AutomationType, parse_automation_type
from axisor.db.models import (
    Automation,
    ExchangeAccount,
    MarginGuardConfig,
    Plan,
    Position,
    PositionStatus,
    User,
)
from axisor.errors import InvalidConfigError
from axisor.guard.config import AddMarginMode, GuardAction, GuardConfig, parse_guard_config


class GuardMode(enum.StrEnum):
    GLOBAL = "global"  # one setting for every position of an account
    SELECTED = "selected"  # one setting shared by the positions the user chose
    INDIVIDUAL = "individual"  # a setting per position


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """Limits of one plan.

    ``min_margin_threshold`` is the smallest margin_threshold allowed: lower plans may not make
    the guard act as early in the distance from entry to liquidation. ``max_add_margin_percent``
    bounds add_margin_percent in percent mode and is 0 where add_margin is not allowed.
    """

    guard_modes: frozenset[GuardMode]
    guard_actions: frozenset[GuardAction]
    max_protected_positions: int
    min_margin_threshold: Decimal
    max_add_margin_percent: Decimal
    max_automations: int
    max_linked_accounts: int
    automation_types: frozenset[AutomationType]


_ALL_MODES = frozenset(GuardMode)
_ALL_ACTIONS = frozenset(GuardAction)
_CLOSING = frozenset({GuardAction.NOTIFY, GuardAction.CLOSE_POSITION})
_STOPS = frozenset({AutomationType.TAKE_PROFIT, AutomationType.STOP_LOSS})

_PRO = PlanLimits(
    guard_modes=_ALL_MODES,
    guard_actions=_ALL_ACTIONS,
    max_protected_positions=100,
    min_margin_threshold=Decimal("0.2"),
    max_add_margin_percent=Decimal(1000),
    max_automations=50,
    max_linked_accounts=10,
    automation_types=frozenset(AutomationType),
)

PLANS: dict[Plan, PlanLimits] = {
    Plan.FREE: PlanLimits(
        guard_modes=frozenset({GuardMode.GLOBAL}),
        guard_actions=_CLOSING,
        max_protected_positions=2,
        min_margin_threshold=Decimal("0.8"),
        max_add_margin_percent=Decimal(0),
        max_automations=0,
        max_linked_accounts=1,
        automation_types=frozenset(),
    ),
    Plan.BASIC: PlanLimits(
        guard_modes=frozenset({GuardMode.GLOBAL, GuardMode.SELECTED}),
        guard_actions=_CLOSING | {GuardAction.ADD_MARGIN},
        max_protected_positions=5,
        min_margin_threshold=Decimal("0.7"),
        max_add_margin_percent=Decimal(50),
        max_automations=2,
        max_linked_accounts=1,
        automation_types=_STOPS,
    ),
    Plan.ADVANCED: PlanLimits(
        guard_modes=_ALL_MODES,
        guard_actions=_ALL_ACTIONS,
        max_protected_positions=25,
        min_margin_threshold=Decimal("0.5"),
        max_add_margin_percent=Decimal(200),
        max_automations=10,
        max_linked_accounts=3,
        automation_types=frozenset(AutomationType),
    ),
    Plan.PRO: _PRO,
    Plan.LIFETIME: _PRO,
}

# Cheapest first. Lifetime allows what pro allows and is listed after it.
PLAN_ORDER: tuple[Plan, ...] = (Plan.FREE, Plan.BASIC, Plan.ADVANCED, Plan.PRO, Plan.LIFETIME)


class PlanLimitError(InvalidConfigError):
    """The value is valid but the user's plan does not allow it.

    ``required_plan`` is the cheapest plan that allows it, or None when no plan does.
    """

    def __init__(
        self, field: str, message: str, *, limit: str, plan: Plan, required_plan: Plan | None
    ) -> None:
        super().__init__(field, message)
        self.limit = limit
        self.plan = plan
        self.required_plan = required_plan


@dataclass(frozen=True, slots=True)
class _Rule:
    """One limit of PlanLimits: how a value is checked against it and how it reads."""

    limit: str
    field: str
    allows: Callable[[PlanLimits, Any], bool]
    describe: Callable[[PlanLimits], str]


def _names(values: frozenset[enum.StrEnum]) -> str:
    return ", ".join(sorted(value.value for value in values)) or "none"


MODE_RULE = _Rule(
    "guard_modes",
    "mode",
    lambda limits, mode: mode in limits.guard_modes,
    lambda limits: _names(limits.guard_modes),
)
ACTION_RULE = _Rule(
    "guard_actions",
    "action",
    lambda limits, action: action in limits.guard_actions,
    lambda limits: _names(limits.guard_actions),
)
THRESHOLD_RULE = _Rule(
    "min_margin_threshold",
    "margin_threshold",
    lambda limits, threshold: threshold >= limits.min_margin_threshold,
    lambda limits: str(limits.min_margin_threshold),
)
PERCENT_RULE = _Rule(
    "max_add_margin_percent",
    "add_margin_percent",
    lambda limits, percent: percent <= limits.max_add_margin_percent,
    lambda limits: str(limits.max_add_margin_percent),
)
POSITIONS_RULE = _Rule(
    "max_protected_positions",
    "protected_positions",
    lambda limits, count: count <= limits.max_protected_positions,
    lambda limits: str(limits.max_protected_positions),
)
AUTOMATION_TYPE_RULE = _Rule(
    "automation_types",
    "type",
    lambda limits, kind: kind in limits.automation_types,
    lambda limits: _names(limits.automation_types),
)
AUTOMATIONS_RULE = _Rule(
    "max_automations",
    "automations",
    lambda limits, count: count <= limits.max_automations,
    lambda limits: str(limits.max_automations),
)
LINKED_ACCOUNTS_RULE = _Rule(
    "max_linked_accounts",
    "linked_accounts",
    lambda limits, count: count <= limits.max_linked_accounts,
    lambda limits: str(limits.max_linked_accounts),
)


def parse_plan(value: Plan | str) -> Plan:
    """Return the Plan named by ``value``; InvalidConfigError names ``plan``."""
    try:
        return Plan(value)
    except ValueError:
        known = ", ".join(plan.value for plan in PLAN_ORDER)
        raise InvalidConfigError("plan", f"unknown plan {value!r}; use one of: {known}") from None


def cheapest_plan_allowing(rule: _Rule, value: Any) -> Plan | None:
    """Return the first plan in PLAN_ORDER whose limit allows ``value``, or None."""
    return next((plan for plan in PLAN_ORDER if rule.allows(PLANS[plan], value)), None)


def check_guard_config(
    plan: Plan | str, config: GuardConfig, mode: GuardMode | str, protected_positions: int
) -> None:
    """Raise PlanLimitError when ``plan`` does not allow this Margin Guard setting.

    ``protected_positions`` is the number of running positions the user's guard settings cover
    once this one is written.
    """
    error = _first_guard_error(parse_plan(plan), config, _parse_mode(mode), protected_positions)
    if error is not None:
        raise error


def check_automation(
    plan: Plan | str, automation_type: AutomationType | str, active_count: int
) -> None:
    """Raise PlanLimitError when ``plan`` does not allow one more active automation of this type.

    ``active_count`` is the number of the user's active automations, not counting the one being
    written.
    """
    plan = parse_plan(plan)
    kind = parse_automation_type(automation_type)
    _enforce(plan, AUTOMATION_TYPE_RULE, kind)
    _enforce(plan, AUTOMATIONS_RULE, active_count + 1)


def check_linked_accounts(plan: Plan | str, count: int) -> None:
    """Raise PlanLimitError when ``plan`` does not allow ``count`` linked accounts in total."""
    _enforce(parse_plan(plan), LINKED_ACCOUNTS_RULE, count)


def _parse_mode(value: GuardMode | str) -> GuardMode:
    try:
        return GuardMode(value)
    except ValueError:
        known = ", ".join(mode.value for mode in GuardMode)
        raise InvalidConfigError("mode", f"unknown mode {value!r}; use one of: {known}") from None


def _first_guard_error(
    plan: Plan, config: GuardConfig, mode: GuardMode, protected_positions: int | None
) -> PlanLimitError | None:
    """Return the error for the first limit ``config`` breaks, or None.

    A None ``protected_positions`` skips the count, which ``downgrade`` checks by itself.
    """
    checks: list[tuple[_Rule, Any]] = [
        (MODE_RULE, mode),
        (ACTION_RULE, config.action),
        (THRESHOLD_RULE, config.margin_threshold),
    ]
    adding_percent = config.add_margin_mode is AddMarginMode.PERCENT
    if config.action is GuardAction.ADD_MARGIN and adding_percent:
        checks.append((PERCENT_RULE, config.add_margin_percent))
    if protected_positions is not None:
        checks.append((POSITIONS_RULE, protected_positions))
    for rule, value in checks:
        if not rule.allows(PLANS[plan], value):
            return _limit_error(plan, rule, value)
    return None


def _enforce(plan: Plan, rule: _Rule, value: Any) -> None:
    if not rule.allows(PLANS[plan], value):
        raise _limit_error(plan, rule, value)


def _limit_error(plan: Plan, rule: _Rule, value: Any) -> PlanLimitError:
    required = cheapest_plan_allowing(rule, value)
    value_text = value.value if isinstance(value, enum.Enum) else value
    message = (
        f"{value_text} is not allowed on the {plan.value} plan "
        f"({rule.limit}: {rule.describe(PLANS[plan])}). "
    )
    if required is None:
        message += "No plan allows it; choose a value within the limit"
    else:
        message += (
            f"The {required.value} plan allows it; choose a value within the limit or upgrade "
            f"to {required.value}"
        )
    return PlanLimitError(rule.field, message, limit=rule.limit, plan=plan, required_plan=required)


# Downgrade


@dataclass(frozen=True, slots=True)
class Disarmed:
    """A setting that ``downgrade`` turned off, and the limit that it breaks."""

    kind: str  # "guard_config" or "automation"
    id: int
    account_id: int
    limit: str
    reason: str


@dataclass
class DowngradeReport:
    """Changes made by ``downgrade``: guard settings first, then automations, oldest first.

    ``accounts_over_limit`` lists the linked accounts beyond the new plan's limit; they stay
    linked, but their guard settings and automations are disarmed.
    """

    user_id: int
    old_plan: Plan
    new_plan: Plan
    disarmed: list[Disarmed] = field(default_factory=list)
    accounts_over_limit: list[int] = field(default_factory=list)


def downgrade(session: Session, user: User, new_plan: Plan | str) -> DowngradeReport:
    """Set ``user.plan`` and disarm what ``new_plan`` no longer allows, in this session.

    Guard settings get ``enabled=False`` and automations ``active=False``. The oldest settings
    are kept: rows are visited by creation time, then id, and each count limit keeps the first
    rows that fit. The caller commits.
    """
    plan = parse_plan(new_plan)
    report = DowngradeReport(user.id, parse_plan(user.plan), plan)
    user.plan = plan.value

    accounts = session.scalars(
        select(ExchangeAccount.id)
        .where(ExchangeAccount.user_id == user.id, ExchangeAccount.active.is_(True))
        .order_by(ExchangeAccount.created_at, ExchangeAccount.id)
    ).all()
    report.accounts_over_limit = list(accounts[PLANS[plan].max_linked_accounts :])

    _disarm_guard_configs(session, user.id, plan, report)
    _disarm_automations(session, user.id, plan, report)
    session.flush()
    return report


def _disarm_guard_configs(session: Session, user_id: int, plan: Plan, report: DowngradeReport):
    rows = session.scalars(
        select(MarginGuardConfig)
        .where(MarginGuardConfig.user_id == user_id, MarginGuardConfig.enabled.is_(True))
        .order_by(MarginGuardConfig.created_at, MarginGuardConfig.id)
    ).all()
    coverage = _GuardCoverage(session, user_id)
    references: dict[int, GuardConfig] = {}
    protected = 0
    for row in rows:
        limit, reason = _guard_row_violation(row, plan, report, references)
        if limit is None:
            count = coverage.positions_covered(row)
            limit, reason = _positions_violation(plan, protected + count)
            if limit is None:
                protected += count
                continue
        row.enabled = False
        report.disarmed.append(Disarmed("guard_config", row.id, row.account_id, limit, reason))


def _guard_row_violation(
    row: MarginGuardConfig,
    plan: Plan,
    report: DowngradeReport,
    references: dict[int, GuardConfig],
) -> tuple[str | None, str]:
    """Return the limit the row breaks and why, except the protected-position count."""
    if row.account_id in report.accounts_over_limit:
        return _account_violation(plan)
    try:
        config = parse_guard_config(row.config)
    except InvalidConfigError as exc:
        return "invalid_config", f"the stored setting is invalid: {exc}"
    mode = _row_mode(row, config, PLANS[plan], references)
    error = _first_guard_error(plan, config, mode, None)
    if error is None:
        return None, ""
    return error.limit, str(error)


def _row_mode(
    row: MarginGuardConfig,
    config: GuardConfig,
    limits: PlanLimits,
    references: dict[int, GuardConfig],
) -> GuardMode:
    """Return the mode the row was written with (a row without a position is global)."""
    if row.position_id is None:
        return GuardMode.GLOBAL
    return GuardMode(row.mode)


def _positions_violation(plan: Plan, protected: int) -> tuple[str | None, str]:
    if POSITIONS_RULE.allows(PLANS[plan], protected):
        return None, ""
    return POSITIONS_RULE.limit, str(_limit_error(plan, POSITIONS_RULE, protected))


def _account_violation(plan: Plan) -> tuple[str, str]:
    limits = PLANS[plan]
    error = _limit_error(plan, LINKED_ACCOUNTS_RULE, limits.max_linked_accounts + 1)
    return LINKED_ACCOUNTS_RULE.limit, f"the account is beyond the oldest linked accounts: {error}"


class _GuardCoverage:
    """Counts the running positions a guard row protects.

    A position's own row, enabled or not, takes precedence over its account's row.
    """

    def __init__(self, session: Session, user_id: int) -> None:
        self._running = _running_positions(session, user_id)
        own_rows = session.scalars(
            select(MarginGuardConfig.position_id).where(
                MarginGuardConfig.user_id == user_id, MarginGuardConfig.position_id.is_not(None)
            )
        ).all()
        self._with_own_row = set(own_rows)

    def positions_covered(self, row: MarginGuardConfig) -> int:
        if row.position_id is not None:
            return 1 if row.position_id in self._running else 0
        return sum(
            1
            for position_id, account_id in self._running.items()
            if account_id == row.account_id and position_id not in self._with_own_row
        )


def _running_positions(session: Session, user_id: int) -> dict[int, int]:
    """Return the account id of each running position of the user, by position id."""
    rows = session.execute(
        select(Position.id, Position.account_id)
        .join(ExchangeAccount, ExchangeAccount.id == Position.account_id)
        .where(
            ExchangeAccount.user_id == user_id,
            Position.status == PositionStatus.RUNNING.value,
        )
    ).all()
    return {position_id: account_id for position_id, account_id in rows}


def _disarm_automations(session: Session, user_id: int, plan: Plan, report: DowngradeReport):
    rows = session.scalars(
        select(Automation)
        .where(Automation.user_id == user_id, Automation.active.is_(True))
        .order_by(Automation.created_at, Automation.id)
    ).all()
    kept_count = 0
    for row in rows:
        limit, reason = _automation_violation(row, plan, report, kept_count + 1)
        if limit is None:
            kept_count += 1
            continue
        row.active = False
        report.disarmed.append(Disarmed("automation", row.id, row.account_id, limit, reason))


def _automation_violation(
    row: Automation, plan: Plan, report: DowngradeReport, count: int
) -> tuple[str | None, str]:
    if row.account_id in report.accounts_over_limit:
        return _account_violation(plan)
    try:
        kind = parse_automation_type(row.type)
    except InvalidConfigError as exc:
        return "invalid_config", f"the stored automation is invalid: {exc}"
    for rule, value in ((AUTOMATION_TYPE_RULE, kind), (AUTOMATIONS_RULE, count)):
        if not rule.allows(PLANS[plan], value):
            return rule.limit, str(_limit_error(plan, rule, value))
    return None, ""
