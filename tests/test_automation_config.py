"""Automation configurations: each invalid value names its field, valid ones round-trip exactly."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal

import pytest

from axisor.automations.config import (
    AutoEntryConfig,
    AutomationType,
    StopLossConfig,
    StopPlacement,
    TakeProfitConfig,
    TriggerOn,
    check_supported,
    parse_automation_config,
    stop_placement,
)
from axisor.errors import InvalidConfigError
from axisor.exchange.models import Side
from axisor.exchange.paper import LN_MARKETS_ISOLATED

D = Decimal

ENTRY = {
    "side": "buy",
    "quantity_usd": 600,
    "leverage": "10",
    "trigger": "above",
    "price_usd": "60000",
}


def entry(**changes):
    values = {**ENTRY, **changes}
    return {name: value for name, value in values.items() if value is not None}


INVALID = [
    # (type, raw config, field the error names, text the message contains)
    ("take_profit", {}, "price_usd", "exactly one of price_usd or pnl_percent"),
    ("take_profit", {"price_usd": "70000", "pnl_percent": "50"}, "pnl_percent", "exactly one"),
    ("take_profit", {"price_usd": 70000.5}, "price_usd", "float is not exact"),
    ("take_profit", {"price_usd": "70000.125"}, "price_usd", "2 decimal places"),
    ("take_profit", {"price_usd": "-1"}, "price_usd", "greater than 0"),
    ("take_profit", {"price_usd": "NaN"}, "price_usd", "finite"),
    ("take_profit", {"price_usd": "abc"}, "price_usd", "'abc'"),
    ("take_profit", {"pnl_percent": "0"}, "pnl_percent", "greater than 0"),
    ("take_profit", {"price_usd": "70000", "action": "sell"}, "action", "'close' or 'cash_in'"),
    ("take_profit", {"price_usd": "70000", "trigger_on": "bid"}, "trigger_on", "last"),
    ("take_profit", {"price_usd": "70000", "size": 1}, "size", "unknown setting"),
    ("stop_loss", {}, "price_usd", "trailing_distance_usd or trailing_percent"),
    (
        "stop_loss",
        {"price_usd": "50000", "trailing_percent": "2"},
        "trailing_percent",
        "exactly one",
    ),
    (
        "stop_loss",
        {"trailing_distance_usd": "500", "trailing_percent": "2"},
        "trailing_percent",
        "exactly one",
    ),
    ("stop_loss", {"trailing_percent": "100"}, "trailing_percent", "less than 100"),
    ("stop_loss", {"trailing_distance_usd": "0"}, "trailing_distance_usd", "greater than 0"),
    ("stop_loss", {"price_usd": "50000", "placement": "venue"}, "placement", "'engine'"),
    ("auto_entry", entry(side="up"), "side", "invalid side 'up'"),
    ("auto_entry", entry(side=None), "side", "missing"),
    ("auto_entry", entry(quantity_usd=None), "quantity_usd", "exactly one of"),
    ("auto_entry", entry(margin_sats=10_000), "margin_sats", "exactly one of"),
    ("auto_entry", entry(quantity_usd=0), "quantity_usd", "greater than or equal to 1"),
    ("auto_entry", entry(quantity_usd="600"), "quantity_usd", "valid integer"),
    ("auto_entry", entry(quantity_usd=True), "quantity_usd", "valid integer"),
    ("auto_entry", entry(leverage="0.5"), "leverage", "greater than or equal to 1"),
    ("auto_entry", entry(leverage="101"), "leverage", "less than or equal to 100"),
    ("auto_entry", entry(leverage=10.0), "leverage", "float is not exact"),
    ("auto_entry", entry(trigger="cross"), "trigger", "'above' or 'below'"),
    ("auto_entry", entry(trigger=None), "trigger", "missing"),
    ("auto_entry", entry(price_usd=None), "price_usd", "missing"),
    ("auto_entry", entry(stoploss_price="61000"), "stoploss_price", "below the entry"),
    ("auto_entry", entry(takeprofit_price="59000"), "takeprofit_price", "above the entry"),
    ("auto_entry", entry(takeprofit_price="60000"), "takeprofit_price", "above the entry"),
    (
        "auto_entry",
        entry(side="sell", stoploss_price="59000"),
        "stoploss_price",
        "above the entry",
    ),
    (
        "auto_entry",
        entry(side="sell", takeprofit_price="61000"),
        "takeprofit_price",
        "below the entry",
    ),
    ("auto_entry", entry(cooldown_s=-1), "cooldown_s", "greater than or equal to 0"),
    ("auto_entry", entry(cooldown_s=30 * 86400 + 1), "cooldown_s", "less than or equal"),
    ("grid", {}, "type", "unknown automation type 'grid'"),
    ("take_profit", ["price_usd"], "config", "expected an object"),
]


@pytest.mark.parametrize(
    ("automation_type", "raw", "field", "text"),
    INVALID,
    ids=[f"{case[0]}-{case[2]}-{index}" for index, case in enumerate(INVALID)],
)
def test_invalid_config_names_field(automation_type, raw, field, text):
    with pytest.raises(InvalidConfigError) as caught:
        parse_automation_config(automation_type, raw)

    assert caught.value.field == field
    assert text in caught.value.message
    assert str(caught.value).startswith(f"{field}: ")


VALID = [
    ("take_profit", {"price_usd": "70000.50"}),
    ("take_profit", {"pnl_percent": "150.125", "action": "cash_in", "trigger_on": "index"}),
    ("stop_loss", {"price_usd": "55000.5", "placement": "engine"}),
    ("stop_loss", {"trailing_distance_usd": "750.25"}),
    ("stop_loss", {"trailing_percent": "2.5", "trigger_on": "mark"}),
    ("auto_entry", entry(stoploss_price="58000.5", takeprofit_price="65000", cooldown_s=600)),
    (
        "auto_entry",
        entry(
            side="sell",
            quantity_usd=None,
            margin_sats=250_000,
            leverage="12.5",
            trigger="below",
            price_usd="59999.99",
            stoploss_price="61000",
            takeprofit_price="50000",
        ),
    ),
]


def _floats(value) -> list:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [item for child in value.values() for item in _floats(child)]
    return []


@pytest.mark.parametrize(("automation_type", "raw"), VALID)
def test_valid_config_round_trip(automation_type, raw):
    config = parse_automation_config(automation_type, raw)
    dumped = config.model_dump(mode="json")

    assert _floats(dumped) == []
    for name, value in raw.items():
        if isinstance(value, str) and name not in ("side", "trigger", "action"):
            assert dumped[name] == value
    again = parse_automation_config(automation_type, json.loads(json.dumps(dumped)))
    assert again == config


def test_decimals_stay_exact():
    config = parse_automation_config("take_profit", {"price_usd": "70000.10"})

    assert isinstance(config, TakeProfitConfig)
    assert config.price_usd == D("70000.10")
    assert config.model_dump(mode="json")["price_usd"] == "70000.10"
    assert config.trigger_on is TriggerOn.LAST


def test_auto_entry_side_aliases():
    config = parse_automation_config(AutomationType.AUTO_ENTRY, entry(side="Long"))

    assert isinstance(config, AutoEntryConfig)
    assert config.side is Side.BUY
    assert config.model_dump(mode="json")["side"] == "buy"


def test_stop_placement_defaults_to_exchange():
    stop = parse_automation_config("stop_loss", {"price_usd": "55000"})

    assert stop_placement(stop, LN_MARKETS_ISOLATED) is StopPlacement.EXCHANGE


@pytest.mark.parametrize(
    "raw",
    [
        {"trailing_percent": "2"},
        {"price_usd": "55000", "trigger_on": "index"},
    ],
)
def test_stop_placement_falls_back_to_engine(raw):
    stop = parse_automation_config("stop_loss", raw)

    assert stop_placement(stop, LN_MARKETS_ISOLATED) is StopPlacement.ENGINE


def test_stop_placement_without_venue_stops():
    venue = replace(LN_MARKETS_ISOLATED, exchange_stoploss=False)
    stop = parse_automation_config("stop_loss", {"price_usd": "55000"})

    assert stop_placement(stop, venue) is StopPlacement.ENGINE
    with pytest.raises(InvalidConfigError) as caught:
        check_supported(stop.model_copy(update={"placement": StopPlacement.EXCHANGE}), venue)
    assert caught.value.field == "placement"


def test_usd_trail_needs_venue_trailing():
    venue = replace(LN_MARKETS_ISOLATED, trailing_stoploss=False)
    stop = parse_automation_config(
        "stop_loss", {"trailing_distance_usd": "500", "placement": "exchange"}
    )

    assert isinstance(stop, StopLossConfig)
    check_supported(stop, LN_MARKETS_ISOLATED)
    with pytest.raises(InvalidConfigError) as caught:
        check_supported(stop, venue)
    assert caught.value.field == "placement"


def test_mark_price_not_available():
    stop = parse_automation_config("stop_loss", {"trailing_percent": "2", "trigger_on": "mark"})

    with pytest.raises(InvalidConfigError) as caught:
        check_supported(stop, LN_MARKETS_ISOLATED)
    assert caught.value.field == "trigger_on"
    assert "'mark'" in caught.value.message
    check_supported(stop, LN_MARKETS_ISOLATED, frozenset(TriggerOn))


def test_entry_beyond_venue_limits():
    venue = replace(LN_MARKETS_ISOLATED, max_leverage=50, max_quantity_usd=1000)
    too_big = parse_automation_config("auto_entry", entry(quantity_usd=1001))
    too_leveraged = parse_automation_config("auto_entry", entry(leverage="60"))

    with pytest.raises(InvalidConfigError) as caught:
        check_supported(too_big, venue)
    assert caught.value.field == "quantity_usd"
    with pytest.raises(InvalidConfigError) as caught:
        check_supported(too_leveraged, venue)
    assert caught.value.field == "leverage"
    check_supported(too_big, LN_MARKETS_ISOLATED)
