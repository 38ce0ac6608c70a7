"""Guard and stop previews: each figure equals what PaperVenue does when the action runs."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from axisor.cli.guard import guard_group
from axisor.errors import InvalidConfigError, RejectedError
from axisor.exchange import math as lnm
from axisor.exchange.models import CloseReason, OpenTradeRequest, Side, Trade
from axisor.exchange.paper import PaperVenue
from axisor.guard.config import GuardConfig
from axisor.guard.preview import preview_guard, preview_stop

D = Decimal
ENTRY = D(60_000)
ACCOUNT = "a"
LEVERAGE = D(10)
BALANCE_SATS = 1_000_000_000


def open_trade(
    side: Side,
    quantity_usd: int = 600,
    leverage: D = LEVERAGE,
    fee_tier: int = 1,
    balance_sats: int = BALANCE_SATS,
) -> tuple[PaperVenue, Trade]:
    venue = PaperVenue(fee_tier=fee_tier)
    venue.create_account(ACCOUNT, balance_sats)
    venue.set_price(ENTRY, 1)
    trade = venue.open_trade(
        ACCOUNT, OpenTradeRequest(side=side, leverage=leverage, quantity_usd=quantity_usd)
    )
    return venue, trade


def preview_for(venue: PaperVenue, trade: Trade, config: GuardConfig, **options):
    options.setdefault("free_balance_sats", venue.balance(ACCOUNT).free_sats)
    return preview_guard(
        trade.side, trade.quantity_usd, trade.entry_price, trade.margin_sats, config, **options
    )


def free_sats(venue: PaperVenue) -> int:
    return venue.balance(ACCOUNT).free_sats


ADD_MARGIN_CONFIGS = [
    GuardConfig(margin_threshold=D("0.8")),
    GuardConfig(margin_threshold=D("0.5"), add_margin_percent=D("12.5")),
    GuardConfig(margin_threshold=D("0.8"), add_margin_mode="restore"),
    GuardConfig(margin_threshold=D("0.9"), add_margin_mode="restore", restore_fraction=D("0.2")),
]


@pytest.mark.parametrize("config", ADD_MARGIN_CONFIGS)
@pytest.mark.parametrize("side", list(Side))
def test_add_margin_matches_venue(side, config):
    venue, trade = open_trade(side)
    preview = preview_for(venue, trade, config)

    assert preview.liquidation_price == trade.liquidation_price
    assert venue.set_price(preview.trigger_price, 2) == []
    before_sats = free_sats(venue)
    updated = venue.add_margin(ACCOUNT, trade.id, preview.margin_added_sats)

    assert preview.margin_added_sats > 0
    assert preview.shortfall_sats == 0
    assert updated.margin_sats == preview.new_margin_sats
    assert updated.liquidation_price == preview.new_liquidation_price
    assert before_sats - free_sats(venue) == preview.margin_added_sats + preview.fee_sats
    assert preview.fee_sats == 0
    distance_usd = abs(preview.trigger_price - updated.liquidation_price)
    assert preview.distance_after_usd == distance_usd
    assert preview.distance_before_usd == abs(preview.trigger_price - trade.liquidation_price)


def test_restore_mode_restores_fraction():
    venue, trade = open_trade(Side.BUY)
    config = GuardConfig(margin_threshold=D("0.8"), add_margin_mode="restore")
    preview = preview_for(venue, trade, config)

    used_usd = trade.entry_price - preview.trigger_price
    room_usd = trade.entry_price - preview.new_liquidation_price
    assert used_usd / room_usd <= D("0.5")


@pytest.mark.parametrize("fee_tier", [1, 2, 3, 4])
@pytest.mark.parametrize("side", list(Side))
def test_close_matches_venue(side, fee_tier):
    venue, trade = open_trade(side, quantity_usd=2_500, leverage=D(25), fee_tier=fee_tier)
    config = GuardConfig(margin_threshold=D("0.7"), action="close_position")
    preview = preview_for(venue, trade, config, fee_tier=fee_tier)

    venue.set_price(preview.trigger_price, 2)
    before_sats = free_sats(venue)
    closed = venue.close_trade(ACCOUNT, trade.id)

    assert preview.closes_trade
    assert closed.closing_fee_sats == preview.fee_sats
    assert closed.pnl_sats == preview.pnl_sats
    credit_sats = trade.margin_sats + preview.pnl_sats + trade.maintenance_margin_sats
    assert free_sats(venue) - before_sats == credit_sats - preview.fee_sats
    assert preview.margin_added_sats == 0
    assert preview.new_margin_sats is None
    assert preview.new_liquidation_price is None
    assert preview.distance_after_usd is None


def test_notify_changes_nothing():
    venue, trade = open_trade(Side.SELL)
    preview = preview_for(venue, trade, GuardConfig(margin_threshold=D("0.8"), action="notify"))

    assert preview.margin_added_sats == 0
    assert preview.fee_sats == 0
    assert preview.new_margin_sats == trade.margin_sats
    assert preview.new_liquidation_price == trade.liquidation_price
    assert preview.distance_after_usd == preview.distance_before_usd


def test_balance_limits_added_margin():
    venue, trade = open_trade(Side.BUY, balance_sats=100_000 + 1_100 + 1_000 + 20_000)
    config = GuardConfig(margin_threshold=D("0.8"), add_margin_percent=D(50))
    preview = preview_for(venue, trade, config)

    assert free_sats(venue) == 20_000
    assert preview.margin_added_sats == 20_000
    assert preview.needed_sats == 50_000
    assert preview.shortfall_sats == 30_000
    assert preview.limited_by == "balance"
    venue.set_price(preview.trigger_price, 2)
    updated = venue.add_margin(ACCOUNT, trade.id, preview.margin_added_sats)
    assert updated.liquidation_price == preview.new_liquidation_price
    assert free_sats(venue) == 0


def test_budget_counts_sats_added():
    venue, trade = open_trade(Side.BUY)
    config = GuardConfig(margin_threshold=D("0.8"), budget_sats=70_000)
    preview = preview_for(venue, trade, config, sats_added=40_000)

    assert preview.margin_added_sats == 30_000
    assert preview.limited_by == "budget"


def test_leverage_one_caps_added_margin():
    venue, trade = open_trade(Side.BUY, leverage=D(2))
    config = GuardConfig(margin_threshold=D("0.8"), add_margin_percent=D(500))
    preview = preview_for(venue, trade, config)

    assert preview.limited_by == "leverage"
    venue.set_price(preview.trigger_price, 2)
    with pytest.raises(RejectedError):
        venue.add_margin(ACCOUNT, trade.id, preview.margin_added_sats + 1)
    updated = venue.add_margin(ACCOUNT, trade.id, preview.margin_added_sats)
    assert updated.margin_sats == preview.new_margin_sats
    assert updated.margin_sats == lnm.max_margin_sats(trade.quantity_usd, trade.entry_price)
    assert updated.liquidation_price == preview.new_liquidation_price


def test_gap_price_beyond_trigger():
    venue, trade = open_trade(Side.BUY)
    config = GuardConfig(
        margin_threshold=D("0.5"), add_margin_mode="restore", restore_fraction=D("0.3")
    )
    preview = preview_for(venue, trade, config, price=D("56000.3"))

    assert preview.action_price == D("56000.5")
    assert preview.trigger_price == D("57272.5")
    venue.set_price(D("56000.3"), 2)
    updated = venue.add_margin(ACCOUNT, trade.id, preview.margin_added_sats)
    assert updated.liquidation_price == preview.new_liquidation_price
    assert preview.distance_before_usd == D("56000.5") - trade.liquidation_price


def test_distance_percent_of_price():
    venue, trade = open_trade(Side.BUY)
    preview = preview_for(venue, trade, GuardConfig(margin_threshold=D("0.8")))

    # 1,091 USD from 55,636 USD is 1.9609...%, shown rounded down.
    assert preview.trigger_price == D("55636.0")
    assert preview.distance_before_usd == D("1091.0")
    assert preview.distance_before_percent == D("1.96")


def test_price_beyond_liquidation_rejected():
    venue, trade = open_trade(Side.BUY)
    with pytest.raises(InvalidConfigError) as caught:
        preview_for(venue, trade, GuardConfig(margin_threshold=D("0.8")), price=D(54_545))

    assert caught.value.field == "price"
    assert "54545" in caught.value.message


def test_short_without_liquidation_never_acts():
    venue, trade = open_trade(Side.SELL, leverage=D(1))
    preview = preview_for(venue, trade, GuardConfig(margin_threshold=D("0.8")))

    assert trade.liquidation_price is None
    assert preview.trigger_price is None
    assert preview.action_price is None
    assert preview.margin_added_sats == 0
    assert preview.distance_before_usd is None


def test_reduce_position_not_supported():
    config = GuardConfig(margin_threshold=D("0.8"), action="reduce_position")
    with pytest.raises(InvalidConfigError) as caught:
        preview_guard("buy", 600, ENTRY, 100_000, config, 1_000_000)

    assert caught.value.field == "action"


def test_invalid_trade_names_argument():
    with pytest.raises(InvalidConfigError) as caught:
        preview_guard("buy", 0, ENTRY, 100_000, GuardConfig(margin_threshold=D("0.8")), 0)

    assert caught.value.field == "quantity_usd"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    side=st.sampled_from(list(Side)),
    quantity_usd=st.integers(1, 100_000),
    leverage=st.integers(2, 100),
    threshold_percent=st.integers(5, 95),
    restore=st.booleans(),
    percent=st.integers(1, 300),
)
def test_add_margin_matches_venue_property(
    side, quantity_usd, leverage, threshold_percent, restore, percent
):
    threshold = D(threshold_percent) / 100
    config = GuardConfig(
        margin_threshold=threshold,
        add_margin_mode="restore" if restore else "percent",
        add_margin_percent=D(percent),
        restore_fraction=threshold / 2,
    )
    venue, trade = open_trade(side, quantity_usd=quantity_usd, leverage=D(leverage))
    preview = preview_for(venue, trade, config)

    assert venue.set_price(preview.trigger_price, 2) == []
    if preview.margin_added_sats == 0:
        return
    updated = venue.add_margin(ACCOUNT, trade.id, preview.margin_added_sats)
    assert updated.margin_sats == preview.new_margin_sats
    assert updated.liquidation_price == preview.new_liquidation_price


# Stops


@pytest.mark.parametrize("fee_tier", [1, 3])
@pytest.mark.parametrize(
    ("side", "level", "kind"),
    [
        (Side.BUY, D("57000.5"), "stop_loss"),
        (Side.SELL, D("62999.5"), "stop_loss"),
        (Side.BUY, D(66_000), "take_profit"),
        (Side.SELL, D("54321.5"), "take_profit"),
    ],
)
def test_stop_matches_venue(side, level, kind, fee_tier):
    venue, trade = open_trade(side, quantity_usd=1_234, leverage=D(15), fee_tier=fee_tier)
    preview = preview_stop(
        side, trade.quantity_usd, trade.entry_price, trade.margin_sats, level, fee_tier
    )
    if kind == "stop_loss":
        venue.set_stoploss(ACCOUNT, trade.id, level, None)
    else:
        venue.set_takeprofit(ACCOUNT, trade.id, level)

    events = venue.set_price(level, 2)
    closed = venue.closed_trades(ACCOUNT, 1)[0]

    assert [event.reason for event in events] == [CloseReason(kind.replace("_", ""))]
    assert preview.kind == kind
    assert preview.price == level
    assert closed.pnl_sats == preview.pnl_sats
    assert closed.closing_fee_sats == preview.closing_fee_sats
    assert preview.net_pnl_sats == closed.pnl_sats - closed.closing_fee_sats
    assert (preview.net_pnl_sats > 0) == (kind == "take_profit")


def test_stop_price_rounds_to_tick():
    preview = preview_stop("buy", 600, ENTRY, 100_000, D("57000.2"))

    assert preview.price == D("57000.0")
    assert preview.net_pnl_percent == (D(preview.net_pnl_sats) / 1000).quantize(D("0.01"))


def test_stop_beyond_liquidation_rejected():
    with pytest.raises(InvalidConfigError) as caught:
        preview_stop("sell", 600, ENTRY, 100_000, D(67_000))

    assert caught.value.field == "price"


# Command line


BASE_ARGS = ["preview", "--side", "long", "--quantity", "600", "--entry", "60000"]


def run(*args: str):
    return CliRunner().invoke(guard_group, [*BASE_ARGS, *args])


def test_cli_json_equals_preview():
    result = run("--leverage", "10", "--threshold", "0.8", "--balance", "1000000", "--json")

    assert result.exit_code == 0, result.output
    expected = preview_guard(
        "buy", 600, ENTRY, 100_000, GuardConfig(margin_threshold=D("0.8")), 1_000_000
    )
    assert json.loads(result.output) == expected.to_dict()
    assert json.loads(result.output)["new_liquidation_price"] == "52174"


def test_cli_restore_options():
    result = run(
        "--margin",
        "100000",
        "--threshold",
        "0.8",
        "--mode",
        "restore",
        "--restore-fraction",
        "0.4",
        "--balance",
        "5000000",
        "--json",
    )

    assert result.exit_code == 0, result.output
    config = GuardConfig(
        margin_threshold=D("0.8"), add_margin_mode="restore", restore_fraction=D("0.4")
    )
    expected = preview_guard("buy", 600, ENTRY, 100_000, config, 5_000_000)
    assert json.loads(result.output) == expected.to_dict()


def test_cli_table_for_close():
    result = run("--margin", "100000", "--threshold", "0.8", "--action", "close_position")

    assert result.exit_code == 0, result.output
    assert "Margin Guard preview: close_position" in result.output
    assert "trigger price (USD)" in result.output
    assert "55636.0" in result.output
    assert "1078" in result.output  # closing fee at 55,636 USD


def test_cli_percent_option():
    result = run("--margin", "100000", "--threshold", "0.8", "--percent", "20", "--balance", "9")

    assert result.exit_code == 0, result.output
    assert "margin added (sats)" in result.output
    assert "balance" in result.output


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--threshold", "0.8", "--balance", "1"], "--margin: give exactly one of"),
        (["--margin", "1", "--leverage", "2", "--threshold", "0.8"], "give exactly one"),
        (["--margin", "100000", "--threshold", "1.5", "--balance", "1"], "--threshold: "),
        (["--margin", "100000", "--threshold", "0.8"], "--balance: missing"),
        (["--margin", "100000", "--threshold", "abc"], "'abc' is not a number"),
        (["--leverage", "200", "--threshold", "0.8", "--balance", "1"], "--leverage: "),
        (
            ["--margin", "100000", "--threshold", "0.8", "--action", "reduce_position"],
            "--action: ",
        ),
        (
            ["--margin", "100000", "--threshold", "0.8", "--percent", "0", "--balance", "1"],
            "--percent: ",
        ),
    ],
)
def test_cli_invalid_option(args, text):
    result = run(*args)

    assert result.exit_code == 2
    assert text in result.output
