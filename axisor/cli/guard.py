"""``axisor guard``: Margin Guard commands that work without a database or an exchange."""

from __future__ import annotations

import json
import sys
from decimal import Decimal, InvalidOperation
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from axisor.errors import InvalidConfigError
from axisor.exchange import math as lnm
from axisor.exchange.models import Side
from axisor.guard.config import AddMarginMode, GuardAction, parse_guard_config
from axisor.guard.preview import GuardPreview, preview_guard

# The option that sets each field named by an InvalidConfigError.
_OPTIONS = {
    "side": "--side",
    "quantity_usd": "--quantity",
    "entry_price": "--entry",
    "margin_sats": "--margin",
    "leverage": "--leverage",
    "margin_threshold": "--threshold",
    "action": "--action",
    "add_margin_mode": "--mode",
    "add_margin_percent": "--percent",
    "restore_fraction": "--restore-fraction",
    "budget_sats": "--budget",
    "balance_sats": "--balance",
    "price": "--price",
    "tier": "--fee-tier",
}


class DecimalType(click.ParamType):
    """A finite decimal number, parsed exactly from its text."""

    name = "decimal"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, Decimal):
            return value
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            self.fail(f"{value!r} is not a number; use digits such as 60000 or 0.8", param, ctx)
        if not number.is_finite():
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


DECIMAL = DecimalType()


@click.group("guard")
def guard_group() -> None:
    """Margin Guard commands."""


@guard_group.command("preview")
@click.option(
    "--side",
    required=True,
    type=click.Choice(["buy", "sell", "long", "short"], case_sensitive=False),
    help="Direction of the trade: buy (long) or sell (short).",
)
@click.option(
    "--quantity", "quantity_usd", required=True, type=int, help="Quantity in USD contracts."
)
@click.option("--entry", "entry_price", required=True, type=DECIMAL, help="Entry price, USD/BTC.")
@click.option("--margin", "margin_sats", type=int, help="Margin in sats. Give this or --leverage.")
@click.option(
    "--leverage",
    type=DECIMAL,
    help="Leverage from 1 to 100; the margin is then computed as the venue computes it.",
)
@click.option(
    "--threshold",
    required=True,
    type=DECIMAL,
    help="Fraction of the distance from entry to liquidation the price may use up before the "
    "guard acts, such as 0.8.",
)
@click.option(
    "--action",
    type=click.Choice([action.value for action in GuardAction]),
    default=GuardAction.ADD_MARGIN.value,
    show_default=True,
    help="What the guard does at the trigger.",
)
@click.option(
    "--mode",
    "add_margin_mode",
    type=click.Choice([mode.value for mode in AddMarginMode]),
    default=AddMarginMode.PERCENT.value,
    show_default=True,
    help="How add_margin sizes the margin: a percent of the current margin, or enough to "
    "restore the distance to liquidation.",
)
@click.option("--percent", type=DECIMAL, help="Percent of the current margin to add [default: 50].")
@click.option(
    "--restore-fraction",
    type=DECIMAL,
    help="In restore mode, the fraction of the distance from entry to liquidation that the price "
    "has used once the margin is added [default: 0.5].",
)
@click.option("--budget", "budget_sats", type=int, help="Max sats the guard may add to the trade.")
@click.option(
    "--balance",
    "balance_sats",
    type=click.IntRange(min=0),
    help="Free balance in sats that added margin is drawn from. Required for add_margin.",
)
@click.option("--price", type=DECIMAL, help="Preview at this price, USD/BTC, not the trigger.")
@click.option("--fee-tier", type=click.IntRange(1, 4), default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def preview_command(**options: Any) -> None:
    """Show the trigger, the margin added, fees and the liquidation price the guard would reach.

    Nothing is sent to an exchange.
    """
    try:
        preview = _preview(options)
    except InvalidConfigError as exc:
        option = _OPTIONS.get(exc.field, exc.field)
        raise click.UsageError(f"{option}: {exc.message}") from exc

    if options["as_json"]:
        sys.stdout.write(json.dumps(preview.to_dict()) + "\n")
    else:
        Console(highlight=False).print(_preview_table(preview))


def _preview(options: dict[str, Any]) -> GuardPreview:
    margin_sats = _margin_sats(options)
    config = parse_guard_config(_config_values(options))
    balance_sats = options["balance_sats"]
    if balance_sats is None:
        if config.action is GuardAction.ADD_MARGIN:
            raise InvalidConfigError("balance_sats", "missing; add_margin needs --balance in sats")
        balance_sats = 0
    return preview_guard(
        side=Side.parse(options["side"]),
        quantity_usd=options["quantity_usd"],
        entry_price=options["entry_price"],
        margin_sats=margin_sats,
        config=config,
        free_balance_sats=balance_sats,
        price=options["price"],
        fee_tier=options["fee_tier"],
    )


def _config_values(options: dict[str, Any]) -> dict[str, Any]:
    values = {
        "margin_threshold": options["threshold"],
        "action": options["action"],
        "add_margin_mode": options["add_margin_mode"],
        "add_margin_percent": options["percent"],
        "restore_fraction": options["restore_fraction"],
        "budget_sats": options["budget_sats"],
    }
    # Strings keep the messages of parse_guard_config in the form the user typed.
    return {
        name: str(value) if isinstance(value, Decimal) else value
        for name, value in values.items()
        if value is not None
    }


def _margin_sats(options: dict[str, Any]) -> int:
    margin_sats, leverage = options["margin_sats"], options["leverage"]
    if (margin_sats is None) == (leverage is None):
        raise InvalidConfigError("margin_sats", "give exactly one of --margin and --leverage")
    if margin_sats is not None:
        return margin_sats
    return lnm.margin_for(options["quantity_usd"], leverage, options["entry_price"])


def _preview_table(preview: GuardPreview) -> Table:
    table = Table(title=f"Margin Guard preview: {preview.action.value}", show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for label, value in _rows(preview):
        table.add_row(label, "-" if value is None else str(value))
    return table


def _rows(preview: GuardPreview) -> list[tuple[str, Any]]:
    return [
        ("side", preview.side.value),
        ("quantity (USD)", preview.quantity_usd),
        ("entry price (USD)", preview.entry_price),
        ("margin (sats)", preview.margin_sats),
        ("liquidation price (USD)", preview.liquidation_price),
        ("trigger price (USD)", preview.trigger_price),
        ("action price (USD)", preview.action_price),
        ("margin added (sats)", preview.margin_added_sats),
        ("shortfall (sats)", preview.shortfall_sats),
        ("limited by", preview.limited_by),
        ("fee (sats)", preview.fee_sats),
        ("P&L at close (sats)", preview.pnl_sats),
        ("new margin (sats)", preview.new_margin_sats),
        ("new liquidation price (USD)", preview.new_liquidation_price),
        ("distance before (USD)", preview.distance_before_usd),
        ("distance before (% of price)", preview.distance_before_percent),
        ("distance after (USD)", preview.distance_after_usd),
        ("distance after (% of price)", preview.distance_after_percent),
    ]
