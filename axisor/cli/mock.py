"""``axisor mock-exchange``: a local mock of the LN Markets v3 API, for tests and trials."""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal, InvalidOperation

import click

from axisor.errors import InvalidConfigError


def _parse_account(value: str) -> tuple[str, str, str, int]:
    parts = value.split(":")
    if len(parts) != 4 or not all(parts[:3]):
        raise click.BadParameter("expected KEY:SECRET:PASSPHRASE:BALANCE_SATS")
    try:
        balance_sats = int(parts[3])
    except ValueError:
        raise click.BadParameter(f"balance {parts[3]!r} is not a whole number of sats") from None
    return parts[0], parts[1], parts[2], balance_sats


def _parse_price(value: str) -> Decimal:
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise InvalidConfigError("--price", f"{value!r} is not a number") from None
    if not price.is_finite() or price <= 0:
        raise InvalidConfigError("--price", f"{value} must be a positive price in USD per BTC")
    return price


@click.command("mock-exchange")
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65_535),
    help="TCP port on 127.0.0.1 (0 picks a free one).",
)
@click.option(
    "--price",
    default="60000",
    show_default=True,
    help="Starting BTC price in USD; move it with POST /_mock/price.",
)
@click.option(
    "--account",
    "accounts",
    multiple=True,
    metavar="KEY:SECRET:PASSPHRASE:SATS",
    help="Register an API key with a starting balance; repeat for more accounts.",
)
def mock_exchange_command(port: int, price: str, accounts: tuple[str, ...]) -> None:
    """Serve the LN Markets v3 routes on 127.0.0.1, backed by the paper exchange."""
    from axisor.exchange.paper import PaperVenue
    from axisor.mockexchange.server import MockExchange, run_mock_exchange

    venue = PaperVenue()
    venue.set_price(_parse_price(price), 0)
    mock = MockExchange(venue)
    for index, value in enumerate(accounts, 1):
        key, secret, passphrase, balance_sats = _parse_account(value)
        mock.register(f"mock-{index}", key, secret, passphrase, balance_sats=balance_sats)

    async def serve() -> None:
        async with run_mock_exchange(mock, port=port) as base_url:
            click.echo(f"mock LN Markets API on {base_url}/v3 (Ctrl-C stops it)", err=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
