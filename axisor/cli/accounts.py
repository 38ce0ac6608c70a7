"""``axisor accounts``: link, list, test and remove LN Markets accounts."""

from __future__ import annotations

import asyncio
import json

import click
from rich.console import Console
from rich.table import Table

from axisor.config import Settings


def _database(settings: Settings):
    from axisor.db.migrate import upgrade
    from axisor.db.session import Database

    database = Database(settings.effective_database_url)
    upgrade(database)
    return database


def _cipher(settings: Settings):
    from axisor.db.crypto import CredentialCipher

    return CredentialCipher.from_env(data_dir=settings.data_dir)


@click.group("accounts")
def accounts_group() -> None:
    """Linked LN Markets accounts; credentials are encrypted at rest and never printed."""


@accounts_group.command("add")
@click.option("--email", required=True, help="Owner's e-mail; the user is created if new.")
@click.option("--key", prompt="API key", help="LN Markets API key.")
@click.option("--secret", prompt="API secret", hide_input=True, help="LN Markets API secret.")
@click.option("--passphrase", prompt="API passphrase", hide_input=True, help="API passphrase.")
@click.option("--network", default="mainnet", show_default=True, help="mainnet or testnet.")
@click.option("--label", default="", help="A name for the account.")
@click.pass_obj
def accounts_add(settings: Settings, email, key, secret, passphrase, network, label) -> None:
    """Link an account. Give the secret and passphrase at the prompt, not on the command line."""
    from axisor.accounts import link_account
    from axisor.db.crypto import Credentials

    credentials = Credentials(key=key, secret=secret, passphrase=passphrase, network=network)
    account_id = link_account(
        _database(settings), _cipher(settings), email=email, credentials=credentials, label=label
    )
    click.echo(f"linked account {account_id} for {email} on {network}")


@accounts_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def accounts_list(settings: Settings, as_json: bool) -> None:
    """List linked accounts with their keys masked."""
    from axisor.accounts import list_accounts

    rows = list_accounts(_database(settings), _cipher(settings))
    if as_json:
        click.echo(json.dumps([_as_dict(row) for row in rows]))
        return
    table = Table("id", "user", "exchange", "network", "label", "key", "active")
    for row in rows:
        table.add_row(
            str(row.id),
            row.email,
            row.exchange,
            row.network,
            row.label,
            row.key_masked,
            "yes" if row.active else "no",
        )
    Console().print(table)


def _as_dict(row) -> dict:
    return {name: getattr(row, name) for name in row.__slots__}


@accounts_group.command("test")
@click.argument("account_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def accounts_test(settings: Settings, account_id: int, as_json: bool) -> None:
    """Check connectivity, authentication, balance and running trades of one account."""
    from axisor.accounts import test_account
    from axisor.exchange.registry import lnm_base_url_from_env

    base_url = lnm_base_url_from_env()
    results = asyncio.run(
        test_account(_database(settings), _cipher(settings), account_id, base_url)
    )
    if as_json:
        click.echo(json.dumps([_as_dict(result) for result in results]))
    else:
        for result in results:
            mark = "ok  " if result.ok else "FAIL"
            click.echo(f"{mark} {result.step:15} {result.detail}")
    if not all(result.ok for result in results):
        raise SystemExit(1)


@accounts_group.command("remove")
@click.argument("account_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def accounts_remove(settings: Settings, account_id: int, yes: bool) -> None:
    """Unlink an account and delete its stored credentials, positions and guard settings."""
    from axisor.accounts import remove_account

    if not yes:
        click.confirm(f"remove account {account_id} and everything stored for it?", abort=True)
    remove_account(_database(settings), account_id)
    click.echo(f"removed account {account_id}")


@accounts_group.command("rotate-key")
@click.pass_obj
def accounts_rotate_key(settings: Settings) -> None:
    """Re-encrypt every stored credential under the first key of AXISOR_SECRET_KEY."""
    from axisor.accounts import rotate_credentials

    count = rotate_credentials(_database(settings), _cipher(settings))
    click.echo(f"re-encrypted the credentials of {count} accounts under the newest key")
