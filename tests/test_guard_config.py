"""Margin Guard configuration: field-by-field validation, venue support and JSON round trips."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from axisor.errors import InvalidConfigError
from axisor.exchange.paper import LN_MARKETS_ISOLATED
from axisor.guard.config import (
    AddMarginMode,
    GuardAction,
    GuardConfig,
    check_supported,
    parse_guard_config,
)

D = Decimal
BASE = {"margin_threshold": "0.8"}

INVALID_CONFIGS = [
    pytest.param({"margin_threshold": "0"}, "margin_threshold", "'0'", id="threshold-zero"),
    pytest.param({"margin_threshold": "1"}, "margin_threshold", "'1'", id="threshold-one"),
    pytest.param({"margin_threshold": "-0.1"}, "margin_threshold", "'-0.1'", id="threshold-neg"),
    pytest.param({"margin_threshold": "abc"}, "margin_threshold", "'abc'", id="threshold-text"),
    pytest.param({}, "margin_threshold", "missing", id="threshold-missing"),
    pytest.param({**BASE, "action": "sell"}, "action", "'sell'", id="action-unknown"),
    pytest.param({**BASE, "add_margin_percent": "0"}, "add_margin_percent", "'0'", id="percent-0"),
    pytest.param(
        {**BASE, "add_margin_percent": "2000"}, "add_margin_percent", "'2000'", id="percent-2000"
    ),
    pytest.param(
        {**BASE, "add_margin_mode": "restore", "restore_fraction": "0.8"},
        "restore_fraction",
        "0.8",
        id="restore-equal",
    ),
    pytest.param(
        {**BASE, "add_margin_mode": "restore", "restore_fraction": "0.9"},
        "restore_fraction",
        "0.9",
        id="restore-above",
    ),
    pytest.param({**BASE, "budget_sats": -1}, "budget_sats", "-1", id="budget-negative"),
    pytest.param({**BASE, "max_actions": 0}, "max_actions", "0", id="max-actions-0"),
    pytest.param({**BASE, "max_actions": 101}, "max_actions", "101", id="max-actions-101"),
    pytest.param({**BASE, "trailing": True}, "trailing", "unknown setting", id="unknown-key"),
]


@pytest.mark.parametrize(("raw", "field", "detail"), INVALID_CONFIGS)
def test_parse_rejects_invalid(raw, field, detail):
    """Each invalid setting raises InvalidConfigError naming the field and the bad value."""
    with pytest.raises(InvalidConfigError) as caught:
        parse_guard_config(raw)
    error = caught.value
    assert error.field == field
    assert str(error).startswith(f"{field}: ")
    assert detail in error.message


def test_parse_rejects_non_object():
    """A configuration that is not a JSON object is rejected as a whole."""
    with pytest.raises(InvalidConfigError) as caught:
        parse_guard_config(["margin_threshold", "0.8"])
    assert caught.value.field == "config"


def test_restore_fraction_free_in_percent():
    """restore_fraction only has to be below the threshold when the restore mode uses it."""
    config = parse_guard_config({**BASE, "restore_fraction": "0.9"})
    assert config.restore_fraction == D("0.9")


def test_reduce_unsupported_on_paper():
    """reduce_position is rejected for LN Markets isolated trades, which cannot shrink."""
    config = parse_guard_config({**BASE, "action": "reduce_position"})
    with pytest.raises(InvalidConfigError) as caught:
        check_supported(config, LN_MARKETS_ISOLATED)
    error = caught.value
    assert error.field == "action"
    assert "reduce_position is not supported" in error.message
    assert LN_MARKETS_ISOLATED.name in error.message
    assert "partially reduce" in error.message


def test_reduce_supported_when_declared():
    """A venue that declares partial reduction accepts reduce_position."""
    config = parse_guard_config({**BASE, "action": "reduce_position"})
    capabilities = replace(LN_MARKETS_ISOLATED, partial_reduce_isolated=True)
    check_supported(config, capabilities)


@pytest.mark.parametrize("action", ["add_margin", "close_position", "notify"])
def test_other_actions_supported(action):
    """Actions other than reduce_position pass check_supported for the paper venue."""
    check_supported(parse_guard_config({**BASE, "action": action}), LN_MARKETS_ISOLATED)


ROUND_TRIP_CONFIGS = [
    GuardConfig(margin_threshold=D("0.8")),
    GuardConfig(
        margin_threshold=D("0.123456789"),
        add_margin_mode=AddMarginMode.RESTORE,
        restore_fraction=D("0.000000001"),
        budget_sats=2_100_000_000_000_000,
        max_actions=100,
    ),
    GuardConfig(
        margin_threshold=D("0.95"),
        action=GuardAction.CLOSE_POSITION,
        add_margin_percent=D("999.99"),
        reduce_percent=D("0.01"),
        budget_sats=0,
        max_actions=1,
    ),
]


def _contains_float(value) -> bool:
    if isinstance(value, dict):
        return any(_contains_float(item) for item in value.values())
    if isinstance(value, list):
        return any(_contains_float(item) for item in value)
    return isinstance(value, float)


@pytest.mark.parametrize("config", ROUND_TRIP_CONFIGS)
def test_json_round_trip_exact(config):
    """A config dumped as JSON contains no float and parses back to the same exact Decimals."""
    dumped = config.model_dump(mode="json")
    assert not _contains_float(dumped)
    assert dumped["margin_threshold"] == str(config.margin_threshold)
    assert parse_guard_config(dumped) == config
