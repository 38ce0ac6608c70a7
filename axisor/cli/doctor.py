"""``axisor doctor``: check the platform, or one user's Margin Guard, and print each problem
with its fix."""

from __future__ import annotations

import asyncio

import click

from axisor.cli.common import database_of, emit, lookup_errors, print_table, redis_url_of
from axisor.config import Settings
from axisor.ops import redis_client

# doctor


@click.group("doctor", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def doctor_group(ctx: click.Context, as_json: bool) -> None:
    """Check the platform: Redis, migrations, workers, engine and stream."""
    if ctx.invoked_subcommand is not None:
        return
    from axisor.ops.doctor import diagnose_platform

    settings: Settings = ctx.obj

    async def run(database):
        async with redis_client(redis_url_of(settings)) as client:
            return await diagnose_platform(client, database)

    with database_of(settings) as database:
        findings = asyncio.run(run(database))
    _emit_findings(as_json, "platform", findings)


def _emit_findings(as_json: bool, subject: str, findings, extra: dict | None = None) -> None:
    document = {"subject": subject, **(extra or {}), "findings": [f.to_dict() for f in findings]}
    problems = [f for f in findings if not f.ok]

    def show() -> None:
        print_table(
            f"Doctor: {subject}",
            ["check", "result", "problem", "fix"],
            [[f.check, "ok" if f.ok else "PROBLEM", f.problem, f.fix] for f in findings],
        )
        click.echo(f"{len(problems)} problems found" if problems else "no problems found")

    emit(as_json, document, show)
    if problems:
        raise SystemExit(1)


@doctor_group.command("margin-guard")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
@lookup_errors
def doctor_guard_command(settings: Settings, user: str, as_json: bool) -> None:
    """List every reason the Margin Guard of USER (id or email) would not act, with the fix."""
    from axisor.ops.doctor import diagnose_user, engine_price

    async def run(database):
        checks = AccountChecks(settings, database)
        async with redis_client(redis_url_of(settings)) as client:
            price = await engine_price(client)
        price = price or await ticker_price()
        try:
            return await diagnose_user(
                database,
                user,
                check_credentials=checks.credentials,
                check_exchange=checks.exchange,
                price_usd=price,
            )
        finally:
            await checks.aclose()

    with database_of(settings) as database:
        facts, findings = asyncio.run(run(database))
    _emit_findings(
        as_json,
        f"user {facts.user_id} ({facts.email})",
        findings,
        {"user_id": facts.user_id, "plan": facts.plan},
    )


class AccountChecks:
    """Credential and exchange checks for the doctor, through the account resolver."""

    def __init__(self, settings: Settings, database) -> None:
        self.settings = settings
        self.database = database
        self._resolver = None

    def resolver(self):
        if self._resolver is None:
            from axisor.exchange.registry import account_resolver

            self._resolver = account_resolver(self.database, data_dir=self.settings.data_dir)
        return self._resolver

    async def aclose(self) -> None:
        if self._resolver is not None:
            await self._resolver.aclose()

    async def credentials(self, account) -> str | None:
        if account.exchange == "paper":
            return None
        if not account.credentials_encrypted:
            return "no credentials are stored"
        from axisor.db.crypto import CredentialCipher
        from axisor.errors import InvalidConfigError

        try:
            CredentialCipher.from_env(data_dir=self.settings.data_dir).decrypt(
                account.credentials_encrypted
            )
        except InvalidConfigError as exc:
            return f"credentials cannot be decrypted ({exc.field})"
        return None

    async def exchange(self, account) -> str | None:
        from axisor.errors import AxisorError

        try:
            exchange = await self.resolver().for_account(account.id)
            await exchange.get_ticker()
        except (AxisorError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


async def ticker_price():
    """Return the last BTC price in USD from the public LN Markets ticker, or None when the
    request fails. AXISOR_LNM_BASE_URL replaces the mainnet host, as it does for workers."""
    from axisor.errors import AxisorError
    from axisor.exchange.lnmarkets.client import LNMarketsClient
    from axisor.exchange.registry import lnm_base_url_from_env

    try:
        async with LNMarketsClient(lnm_base_url_from_env(), None) as client:
            return (await client.get_ticker()).last_price
    except (AxisorError, OSError):
        return None
