"""Plan limits: every limit rejected with its plan and the cheapest plan that allows the value."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select

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
from axisor.guard.config import GuardAction, GuardConfig
from axisor.plans import (
    PLAN_ORDER,
    PLANS,
    GuardMode,
    PlanLimitError,
    check_automation,
    check_guard_config,
    check_linked_accounts,
    downgrade,
)

D = Decimal
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def guard(**values) -> GuardConfig:
    values.setdefault("margin_threshold", D("0.9"))
    values.setdefault("action", GuardAction.CLOSE_POSITION)
    return GuardConfig(**values)


def test_every_plan_has_limits():
    assert set(PLANS) == set(Plan)
    assert set(PLAN_ORDER) == set(Plan)
    assert PLANS[Plan.PRO] == PLANS[Plan.LIFETIME]


@pytest.mark.parametrize(("lower", "higher"), list(zip(PLAN_ORDER, PLAN_ORDER[1:], strict=False)))
def test_limits_never_shrink_up_the_ladder(lower, higher):
    low, high = PLANS[lower], PLANS[higher]

    assert low.guard_modes <= high.guard_modes
    assert low.guard_actions <= high.guard_actions
    assert low.automation_types <= high.automation_types
    assert low.max_protected_positions <= high.max_protected_positions
    assert low.min_margin_threshold >= high.min_margin_threshold
    assert low.max_add_margin_percent <= high.max_add_margin_percent
    assert low.max_automations <= high.max_automations
    assert low.max_linked_accounts <= high.max_linked_accounts


GUARD_REJECTIONS = [
    # (plan, config, mode, protected positions, field, limit, cheapest plan allowing it)
    (Plan.FREE, guard(), "selected", 1, "mode", "guard_modes", Plan.BASIC),
    (Plan.FREE, guard(), "individual", 1, "mode", "guard_modes", Plan.ADVANCED),
    (Plan.BASIC, guard(), "individual", 1, "mode", "guard_modes", Plan.ADVANCED),
    (Plan.FREE, guard(action="add_margin"), "global", 1, "action", "guard_actions", Plan.BASIC),
    (
        Plan.BASIC,
        guard(action="reduce_position"),
        "global",
        1,
        "action",
        "guard_actions",
        Plan.ADVANCED,
    ),
    (
        Plan.FREE,
        guard(margin_threshold=D("0.75")),
        "global",
        1,
        "margin_threshold",
        "min_margin_threshold",
        Plan.BASIC,
    ),
    (
        Plan.BASIC,
        guard(margin_threshold=D("0.6")),
        "global",
        1,
        "margin_threshold",
        "min_margin_threshold",
        Plan.ADVANCED,
    ),
    (
        Plan.ADVANCED,
        guard(margin_threshold=D("0.3")),
        "global",
        1,
        "margin_threshold",
        "min_margin_threshold",
        Plan.PRO,
    ),
    (
        Plan.PRO,
        guard(margin_threshold=D("0.1")),
        "global",
        1,
        "margin_threshold",
        "min_margin_threshold",
        None,
    ),
    (
        Plan.LIFETIME,
        guard(margin_threshold=D("0.19")),
        "global",
        1,
        "margin_threshold",
        "min_margin_threshold",
        None,
    ),
    (
        Plan.BASIC,
        guard(action="add_margin", add_margin_percent=D("50.5")),
        "global",
        1,
        "add_margin_percent",
        "max_add_margin_percent",
        Plan.ADVANCED,
    ),
    (
        Plan.ADVANCED,
        guard(action="add_margin", add_margin_percent=D(300)),
        "global",
        1,
        "add_margin_percent",
        "max_add_margin_percent",
        Plan.PRO,
    ),
    (Plan.FREE, guard(), "global", 3, "protected_positions", "max_protected_positions", Plan.BASIC),
    (
        Plan.BASIC,
        guard(),
        "selected",
        6,
        "protected_positions",
        "max_protected_positions",
        Plan.ADVANCED,
    ),
    (
        Plan.ADVANCED,
        guard(),
        "global",
        26,
        "protected_positions",
        "max_protected_positions",
        Plan.PRO,
    ),
    (Plan.PRO, guard(), "global", 101, "protected_positions", "max_protected_positions", None),
]


@pytest.mark.parametrize(
    ("plan", "config", "mode", "positions", "field", "limit", "required"), GUARD_REJECTIONS
)
def test_guard_limit_rejected(plan, config, mode, positions, field, limit, required):
    with pytest.raises(PlanLimitError) as caught:
        check_guard_config(plan, config, mode, positions)

    error = caught.value
    assert isinstance(error, InvalidConfigError)
    assert error.field == field
    assert error.limit == limit
    assert error.plan is plan
    assert error.required_plan is required
    assert f"on the {plan.value} plan ({limit}: " in error.message
    if required is None:
        assert "No plan allows it" in error.message
    else:
        assert f"The {required.value} plan allows it" in error.message
        assert f"upgrade to {required.value}" in error.message


@pytest.mark.parametrize(
    ("plan", "config", "mode", "positions"),
    [
        (Plan.FREE, guard(margin_threshold=D("0.8")), "global", 2),
        (Plan.FREE, guard(action="notify", add_margin_percent=D(1000)), "global", 0),
        (Plan.BASIC, guard(action="add_margin", add_margin_percent=D(50)), "selected", 5),
        (
            Plan.BASIC,
            guard(action="add_margin", add_margin_mode="restore", add_margin_percent=D(1000)),
            "global",
            1,
        ),
        (Plan.ADVANCED, guard(action="reduce_position"), "individual", 25),
        (Plan.LIFETIME, guard(margin_threshold=D("0.2")), GuardMode.INDIVIDUAL, 100),
    ],
)
def test_guard_config_within_limits(plan, config, mode, positions):
    check_guard_config(plan.value, config, mode, positions)


AUTOMATION_REJECTIONS = [
    # (plan, type, active automations, field, limit, cheapest plan allowing it)
    (Plan.FREE, "take_profit", 0, "type", "automation_types", Plan.BASIC),
    (Plan.BASIC, "auto_entry", 0, "type", "automation_types", Plan.ADVANCED),
    (Plan.BASIC, "stop_loss", 2, "automations", "max_automations", Plan.ADVANCED),
    (Plan.ADVANCED, "auto_entry", 10, "automations", "max_automations", Plan.PRO),
    (Plan.LIFETIME, "take_profit", 50, "automations", "max_automations", None),
]


@pytest.mark.parametrize(
    ("plan", "automation_type", "active", "field", "limit", "required"), AUTOMATION_REJECTIONS
)
def test_automation_limit_rejected(plan, automation_type, active, field, limit, required):
    with pytest.raises(PlanLimitError) as caught:
        check_automation(plan, automation_type, active)

    assert caught.value.field == field
    assert caught.value.limit == limit
    assert caught.value.required_plan is required
    assert f"{plan.value} plan" in caught.value.message


def test_automation_within_limits():
    check_automation(Plan.BASIC, "take_profit", 1)
    check_automation(Plan.ADVANCED, "auto_entry", 9)


@pytest.mark.parametrize(
    ("plan", "count", "required"),
    [(Plan.FREE, 2, Plan.ADVANCED), (Plan.BASIC, 2, Plan.ADVANCED), (Plan.ADVANCED, 4, Plan.PRO)],
)
def test_linked_accounts_rejected(plan, count, required):
    with pytest.raises(PlanLimitError) as caught:
        check_linked_accounts(plan, count)

    assert caught.value.field == "linked_accounts"
    assert caught.value.limit == "max_linked_accounts"
    assert caught.value.required_plan is required
    check_linked_accounts(plan, count - 1)


def test_pro_linked_accounts_beyond_every_plan():
    with pytest.raises(PlanLimitError) as caught:
        check_linked_accounts("pro", 11)

    assert caught.value.required_plan is None
    assert "No plan allows it" in caught.value.message


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: check_linked_accounts("gold", 1), "plan"),
        (lambda: check_guard_config("free", guard(), "all", 1), "mode"),
        (lambda: check_automation("pro", "grid", 0), "type"),
    ],
)
def test_unknown_names_rejected(call, field):
    with pytest.raises(InvalidConfigError) as caught:
        call()

    assert not isinstance(caught.value, PlanLimitError)
    assert caught.value.field == field


# Downgrade, on both database backends


def _at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def _config(**values) -> dict:
    return guard(**values).model_dump(mode="json")


class World:
    """A user on the pro plan with two linked accounts, built in one session."""

    def __init__(self, session) -> None:
        self.session = session
        self.user = User(email="downgrade@example.com", plan=Plan.PRO.value)
        session.add(self.user)
        session.flush()
        self.first = self.account(_at(0))
        self.second = self.account(_at(1))

    def account(self, created_at: dt.datetime) -> ExchangeAccount:
        account = ExchangeAccount(user_id=self.user.id, exchange="paper", created_at=created_at)
        self.session.add(account)
        self.session.flush()
        return account

    def position(self, account: ExchangeAccount, name: str, running: bool = True) -> Position:
        status = PositionStatus.RUNNING if running else PositionStatus.CLOSED
        position = Position(
            account_id=account.id,
            trade_id=name,
            side="buy",
            quantity_usd=600,
            entry_price=D(60_000),
            margin_sats=100_000,
            leverage=D(10),
            status=status.value,
        )
        self.session.add(position)
        self.session.flush()
        return position

    def guard_row(
        self, account, position, seconds, config, enabled=True, mode=None
    ) -> MarginGuardConfig:
        row = MarginGuardConfig(
            user_id=self.user.id,
            account_id=account.id,
            position_id=None if position is None else position.id,
            mode=mode or ("global" if position is None else "selected"),
            config=config,
            enabled=enabled,
            created_at=_at(seconds),
        )
        self.session.add(row)
        self.session.flush()
        return row

    def automation(self, account, kind, seconds, active=True) -> Automation:
        row = Automation(
            user_id=self.user.id,
            account_id=account.id,
            type=kind,
            config={},
            active=active,
            created_at=_at(seconds),
        )
        self.session.add(row)
        self.session.flush()
        return row


def test_downgrade_disarms_guard_settings(db):
    shared = _config(action="add_margin", add_margin_percent=D(30), margin_threshold=D("0.75"))
    with db.session() as session:
        world = World(session)
        a1 = world.first
        positions = [world.position(a1, f"p{n}") for n in range(1, 8)]
        closed = world.position(a1, "closed", running=False)
        p1, p2, p3, p4, p5, p6, p7 = positions
        other = world.position(world.second, "q1")
        too_generous = world.guard_row(
            a1, None, 10, _config(action="add_margin", add_margin_percent=D(80))
        )
        reference = world.guard_row(a1, p1, 20, shared)
        same = world.guard_row(a1, p2, 30, shared)
        individual = world.guard_row(
            a1, p3, 40, _config(margin_threshold=D("0.9")), mode="individual"
        )
        on_closed = world.guard_row(a1, closed, 50, shared)
        kept = [world.guard_row(a1, p, 60 + n, shared) for n, p in enumerate((p4, p5, p6))]
        over_count = world.guard_row(a1, p7, 70, shared)
        second_account = world.guard_row(world.second, None, 5, _config(action="notify"))
        already_off = world.guard_row(
            world.second, other, 1, _config(action="reduce_position"), enabled=False
        )
        report = downgrade(session, world.user, Plan.BASIC)
        user_id = world.user.id

    assert report.old_plan is Plan.PRO
    assert report.new_plan is Plan.BASIC
    assert report.accounts_over_limit == [world.second.id]
    disarmed = [(item.kind, item.id, item.limit) for item in report.disarmed]
    assert disarmed == [
        ("guard_config", second_account.id, "max_linked_accounts"),
        ("guard_config", too_generous.id, "max_add_margin_percent"),
        ("guard_config", individual.id, "guard_modes"),
        ("guard_config", over_count.id, "max_protected_positions"),
    ]
    reasons = {item.id: item.reason for item in report.disarmed}
    assert "80 is not allowed on the basic plan" in reasons[too_generous.id]
    assert "individual is not allowed on the basic plan" in reasons[individual.id]
    assert "6 is not allowed on the basic plan" in reasons[over_count.id]

    with db.session() as session:
        enabled = {
            key: value
            for key, value in session.execute(
                select(MarginGuardConfig.id, MarginGuardConfig.enabled)
            )
        }
        user = session.get(User, user_id)
        accounts = session.scalars(select(ExchangeAccount.active)).all()
    assert user.plan == Plan.BASIC.value
    assert accounts == [True, True]
    for row in (reference, same, on_closed, *kept):
        assert enabled[row.id] is True
    for row in (too_generous, individual, over_count, second_account, already_off):
        assert enabled[row.id] is False


@pytest.mark.parametrize(
    ("config", "limit"),
    [
        (_config(action="add_margin", add_margin_percent=D(10)), "guard_actions"),
        (_config(margin_threshold=D("0.75")), "min_margin_threshold"),
        (_config(margin_threshold=D("0.85")), None),
    ],
)
def test_downgrade_to_free_global_setting(db, config, limit):
    with db.session() as session:
        world = World(session)
        world.position(world.first, "p1")
        world.position(world.first, "p2")
        row = world.guard_row(world.first, None, 10, config)
        report = downgrade(session, world.user, "free")

    expected = [] if limit is None else [("guard_config", row.id, limit)]
    assert [(item.kind, item.id, item.limit) for item in report.disarmed] == expected


def test_downgrade_global_over_position_count(db):
    with db.session() as session:
        world = World(session)
        for name in ("p1", "p2", "p3"):
            world.position(world.first, name)
        row = world.guard_row(world.first, None, 10, _config())
        report = downgrade(session, world.user, "free")

    assert [(item.id, item.limit) for item in report.disarmed] == [
        (row.id, "max_protected_positions")
    ]


def test_downgrade_disarms_automations(db):
    with db.session() as session:
        world = World(session)
        a1, a2 = world.first, world.second
        on_second = world.automation(a2, "stop_loss", 0)
        first = world.automation(a1, "take_profit", 10)
        entry = world.automation(a1, "auto_entry", 20)
        second = world.automation(a1, "stop_loss", 30)
        third = world.automation(a1, "take_profit", 40)
        inactive = world.automation(a1, "auto_entry", 5, active=False)
        report = downgrade(session, world.user, Plan.BASIC)

    assert [(item.kind, item.id, item.limit) for item in report.disarmed] == [
        ("automation", on_second.id, "max_linked_accounts"),
        ("automation", entry.id, "automation_types"),
        ("automation", third.id, "max_automations"),
    ]
    with db.session() as session:
        active = {
            key: value for key, value in session.execute(select(Automation.id, Automation.active))
        }
    assert active == {
        on_second.id: False,
        first.id: True,
        entry.id: False,
        second.id: True,
        third.id: False,
        inactive.id: False,
    }


def test_downgrade_twice_disarms_nothing_more(db):
    with db.session() as session:
        world = World(session)
        world.automation(world.first, "auto_entry", 10)
        first = downgrade(session, world.user, "basic")
        second = downgrade(session, world.user, "basic")

    assert len(first.disarmed) == 1
    assert second.disarmed == []
    assert second.old_plan is Plan.BASIC


def test_upgrade_disarms_nothing(db):
    with db.session() as session:
        world = World(session)
        world.user.plan = Plan.FREE.value
        world.automation(world.first, "auto_entry", 10)
        world.guard_row(world.first, None, 10, _config(margin_threshold=D("0.3")))
        report = downgrade(session, world.user, Plan.LIFETIME)

    assert report.disarmed == []
    assert report.accounts_over_limit == []
    assert report.new_plan is Plan.LIFETIME


def test_plan_command_lists_disarmed(tmp_path, monkeypatch):
    """`axisor plan set` downgrades and names each setting it disarmed, with the reason."""
    import json

    from click.testing import CliRunner

    from axisor.cli.main import main
    from axisor.db.migrate import upgrade
    from axisor.db.session import Database

    monkeypatch.setenv("AXISOR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    database = Database(f"sqlite:///{tmp_path / 'axisor.db'}")
    upgrade(database)
    with database.session() as session:
        user = User(email="down@example.test", plan="pro")
        account = ExchangeAccount(user=user, exchange="paper")
        session.add(account)
        session.flush()
        session.add(
            MarginGuardConfig(
                user_id=user.id,
                account_id=account.id,
                mode="global",
                config=_config(action="add_margin"),
            )
        )
    database.dispose()

    result = CliRunner().invoke(
        main, ["plan", "set", "down@example.test", "free", "--yes", "--json"]
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["old_plan"] == "pro"
    assert report["new_plan"] == "free"
    assert [item["kind"] for item in report["disarmed"]] == ["guard_config"]
    assert "free" in report["disarmed"][0]["reason"]
