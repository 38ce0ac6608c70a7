"""Linked exchange accounts: stored encrypted, checked step by step, re-encrypted on rotation."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from axisor.db.crypto import CredentialCipher, Credentials, mask_key
from axisor.db.models import ExchangeAccount, User
from axisor.db.session import Database
from axisor.errors import AuthenticationError, ExchangeError, InvalidConfigError
from axisor.exchange.lnmarkets.client import BASE_URLS, LNMarketsClient, base_url_for

NETWORKS = tuple(BASE_URLS)


@dataclass(frozen=True, slots=True)
class AccountRow:
    """One linked account as listed to its owner; the API key is masked."""

    id: int
    email: str
    exchange: str
    network: str
    label: str
    key_masked: str
    active: bool


def link_account(
    database: Database,
    cipher: CredentialCipher,
    *,
    email: str,
    credentials: Credentials,
    label: str = "",
) -> int:
    """Store LN Markets credentials for the user (created if new); return the account id."""
    _check_credentials(credentials)
    _check_not_linked(database, cipher, credentials)
    token = cipher.encrypt(
        {
            "key": credentials.key,
            "secret": credentials.secret,
            "passphrase": credentials.passphrase,
            "network": credentials.network,
        }
    )
    with database.session() as session:
        user = session.scalar(select(User).where(User.email == email))
        if user is None:
            user = User(email=email)
        account = ExchangeAccount(
            user=user,
            exchange="lnmarkets",
            network=credentials.network,
            label=label,
            credentials_encrypted=token,
        )
        session.add(account)
        session.flush()
        return account.id


def _check_credentials(credentials: Credentials) -> None:
    for field in ("key", "secret", "passphrase"):
        if not getattr(credentials, field).strip():
            raise InvalidConfigError(field, "is empty; copy it from the LN Markets API page")
    if credentials.network not in NETWORKS:
        raise InvalidConfigError(
            "network", f"unknown network {credentials.network!r}; use one of: {', '.join(NETWORKS)}"
        )


def _check_not_linked(
    database: Database, cipher: CredentialCipher, credentials: Credentials
) -> None:
    """Reject a key already linked: two accounts on one key would guard the same trades twice."""
    with database.session() as session:
        rows = session.execute(
            select(ExchangeAccount.id, ExchangeAccount.credentials_encrypted).where(
                ExchangeAccount.exchange == "lnmarkets",
                ExchangeAccount.credentials_encrypted.is_not(None),
            )
        ).all()
    for account_id, token in rows:
        stored = cipher.decrypt(token)
        if stored.key == credentials.key and stored.network == credentials.network:
            raise InvalidConfigError(
                "key",
                f"this API key is already linked as account {account_id}; remove that account "
                "first to link it again",
            )


def list_accounts(database: Database, cipher: CredentialCipher) -> list[AccountRow]:
    with database.session() as session:
        rows = session.execute(
            select(ExchangeAccount, User.email).join(User).order_by(ExchangeAccount.id)
        ).all()
        return [_row(account, email, cipher) for account, email in rows]


def _row(account: ExchangeAccount, email: str, cipher: CredentialCipher) -> AccountRow:
    key = "-"
    if account.credentials_encrypted is not None:
        try:
            key = mask_key(cipher.decrypt(account.credentials_encrypted).key)
        except InvalidConfigError:
            key = "(cannot decrypt: wrong AXISOR_SECRET_KEY)"
    return AccountRow(
        account.id, email, account.exchange, account.network, account.label, key, account.active
    )


def remove_account(database: Database, account_id: int) -> None:
    with database.session() as session:
        account = session.get(ExchangeAccount, account_id)
        if account is None:
            raise InvalidConfigError("account_id", f"no linked account with id {account_id}")
        session.delete(account)


def rotate_credentials(database: Database, cipher: CredentialCipher) -> int:
    """Re-encrypt every stored credential under the newest key; return how many were rotated."""
    with database.session() as session:
        accounts = session.scalars(
            select(ExchangeAccount).where(ExchangeAccount.credentials_encrypted.is_not(None))
        ).all()
        for account in accounts:
            account.credentials_encrypted = cipher.rotate(account.credentials_encrypted)
        return len(accounts)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One step of an account test: its name, whether it passed, and what was seen."""

    step: str
    ok: bool
    detail: str


async def test_account(
    database: Database, cipher: CredentialCipher, account_id: int, base_url: str | None = None
) -> list[CheckResult]:
    """Check connectivity, authentication, balance and running trades, in that order.

    A failed step reports its reason, and the steps after it are reported as skipped.
    """
    with database.session() as session:
        account = session.get(ExchangeAccount, account_id)
        if account is None:
            raise InvalidConfigError("account_id", f"no linked account with id {account_id}")
        credentials = cipher.decrypt(account.credentials_encrypted)
    url = base_url or base_url_for(credentials.network)
    async with LNMarketsClient(url, credentials) as client:
        return await _run_checks(client)


async def _run_checks(client: LNMarketsClient) -> list[CheckResult]:
    steps = [
        ("connectivity", _check_time),
        ("authentication", _check_auth),
        ("balance", _check_balance),
        ("running trades", _check_trades),
    ]
    results: list[CheckResult] = []
    for name, check in steps:
        if results and not results[-1].ok:
            results.append(CheckResult(name, False, "skipped: an earlier step failed"))
            continue
        try:
            results.append(CheckResult(name, True, await check(client)))
        except (ExchangeError, OSError) as exc:
            results.append(CheckResult(name, False, _reason(exc)))
    return results


def _reason(error: Exception) -> str:
    if isinstance(error, AuthenticationError):
        return f"authentication failed: {error}"
    return f"{type(error).__name__}: {error}"


async def _check_time(client: LNMarketsClient) -> str:
    server_ms = await client.get_server_time_ms()
    return f"server time {server_ms} ms"


async def _check_auth(client: LNMarketsClient) -> str:
    await client.get_account()
    return "credentials accepted"


async def _check_balance(client: LNMarketsClient) -> str:
    balance = await client.get_balance()
    return f"free {balance.free_sats:,} sats of {balance.total_sats:,}"


async def _check_trades(client: LNMarketsClient) -> str:
    trades = await client.get_running_trades()
    return f"{len(trades)} running isolated trades"
