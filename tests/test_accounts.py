"""Linked LN Markets accounts: encrypted storage, listing, step-by-step test, removal."""

from __future__ import annotations

from decimal import Decimal

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from axisor.accounts import link_account, list_accounts, remove_account, rotate_credentials
from axisor.accounts import test_account as check_account
from axisor.db.crypto import CredentialCipher, Credentials
from axisor.db.models import ExchangeAccount, User
from axisor.errors import InvalidConfigError, NotSupportedError
from axisor.exchange.paper import PaperVenue
from axisor.exchange.registry import AccountResolver
from axisor.mockexchange.server import MockExchange, run_mock_exchange

SECRET = "s3cr3t-never-shown-anywhere"
PASSPHRASE = "pass-never-shown-anywhere"


@pytest.fixture
def cipher() -> CredentialCipher:
    return CredentialCipher([Fernet.generate_key()])


def credentials(key: str = "lnm-key-0001") -> Credentials:
    return Credentials(key=key, secret=SECRET, passphrase=PASSPHRASE, network="mainnet")


def test_link_stores_encrypted(db, cipher):
    """The stored token decrypts to the credentials and contains none of them in clear."""
    account_id = link_account(db, cipher, email="a@example.test", credentials=credentials())
    with db.session() as session:
        token = session.get(ExchangeAccount, account_id).credentials_encrypted
    assert SECRET.encode() not in token
    assert PASSPHRASE.encode() not in token
    assert cipher.decrypt(token).secret == SECRET


def test_list_masks_key(db, cipher):
    """Listing shows the first characters of the key and never the secret."""
    link_account(db, cipher, email="a@example.test", credentials=credentials())
    rows = list_accounts(db, cipher)
    assert rows[0].key_masked == "lnm-…"
    assert SECRET not in repr(rows)


@pytest.mark.parametrize(
    ("field", "value"),
    [("key", ""), ("secret", " "), ("passphrase", ""), ("network", "moonnet")],
)
def test_link_rejects_bad_field(db, cipher, field, value):
    """An empty credential or an unknown network names the field and stores nothing."""
    values = {"key": "k", "secret": "s", "passphrase": "p", "network": "mainnet", field: value}
    with pytest.raises(InvalidConfigError) as error:
        link_account(db, cipher, email="a@example.test", credentials=Credentials(**values))
    assert error.value.field == field
    with db.session() as session:
        assert session.scalar(select(ExchangeAccount)) is None


def test_rotation_reencrypts(db):
    """After rotation the credentials decrypt with the new key alone."""
    old, new = Fernet.generate_key(), Fernet.generate_key()
    link_account(db, CredentialCipher([old]), email="a@example.test", credentials=credentials())
    assert rotate_credentials(db, CredentialCipher([new, old])) == 1
    rows = list_accounts(db, CredentialCipher([new]))
    assert rows[0].key_masked == "lnm-…"


def test_remove_deletes_account(db, cipher):
    """Removing an account deletes it; removing it again names account_id."""
    account_id = link_account(db, cipher, email="a@example.test", credentials=credentials())
    remove_account(db, account_id)
    with pytest.raises(InvalidConfigError) as error:
        remove_account(db, account_id)
    assert error.value.field == "account_id"


async def test_account_checks_pass_on_mock(db, cipher):
    """Against the local mock, every step passes and reports what it saw."""
    venue = PaperVenue()
    venue.set_price(Decimal(60_000), 1)
    mock = MockExchange(venue)
    account_id = link_account(db, cipher, email="a@example.test", credentials=credentials())
    mock.register(str(account_id), "lnm-key-0001", SECRET, PASSPHRASE, balance_sats=250_000)
    async with run_mock_exchange(mock) as base_url:
        results = await check_account(db, cipher, account_id, base_url)
    assert [r.step for r in results] == [
        "connectivity",
        "authentication",
        "balance",
        "running trades",
    ]
    assert all(r.ok for r in results)
    assert "250,000" in results[2].detail


async def test_account_checks_name_failure(db, cipher):
    """A wrong secret fails at authentication, and later steps are skipped."""
    venue = PaperVenue()
    venue.set_price(Decimal(60_000), 1)
    mock = MockExchange(venue)
    account_id = link_account(db, cipher, email="a@example.test", credentials=credentials())
    mock.register(str(account_id), "lnm-key-0001", "another-secret", PASSPHRASE, 1_000)
    async with run_mock_exchange(mock) as base_url:
        results = await check_account(db, cipher, account_id, base_url)
    assert results[0].ok
    assert not results[1].ok
    assert "authentication failed" in results[1].detail
    assert results[2].detail.startswith("skipped")
    assert SECRET not in " ".join(r.detail for r in results)


async def test_resolver_rejects_paper_account(db, cipher):
    """A worker cannot resolve a paper account, which exists only inside a replay."""
    with db.session() as session:
        account = ExchangeAccount(user=User(email="p@example.test"), exchange="paper")
        session.add(account)
        session.flush()
        account_id = account.id
    resolver = AccountResolver(db, cipher, base_url="http://127.0.0.1:9")
    with pytest.raises(NotSupportedError):
        await resolver.for_account(account_id)


async def test_resolver_builds_client_once(db, cipher):
    """The resolver returns one cached client per account, on the configured host."""
    account_id = link_account(db, cipher, email="a@example.test", credentials=credentials())
    resolver = AccountResolver(db, cipher, base_url="http://127.0.0.1:9")
    first = await resolver.for_account(account_id)
    second = await resolver.for_account(account_id)
    assert first is second
    assert first.base_url == "http://127.0.0.1:9"
    assert SECRET not in repr(first)
    await resolver.aclose()


def test_cli_add_list_remove(tmp_path, monkeypatch):
    """The accounts commands link, list (masked) and remove, never printing the secrets."""
    import json

    from click.testing import CliRunner

    from axisor.cli.main import main

    monkeypatch.setenv("AXISOR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("AXISOR_SECRET_KEY", Fernet.generate_key().decode())
    runner = CliRunner()
    added = runner.invoke(
        main,
        ["accounts", "add", "--email", "cli@example.test", "--key", "lnm-cli-key"],
        input=f"{SECRET}\n{PASSPHRASE}\n",
    )
    assert added.exit_code == 0, added.output
    assert SECRET not in added.output
    assert PASSPHRASE not in added.output

    listed = runner.invoke(main, ["accounts", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert rows[0]["key_masked"] == "lnm-…"
    assert SECRET not in listed.output

    removed = runner.invoke(main, ["accounts", "remove", str(rows[0]["id"]), "--yes"])
    assert removed.exit_code == 0, removed.output
    assert json.loads(runner.invoke(main, ["accounts", "list", "--json"]).output) == []


def test_link_same_key_twice_rejected(db, cipher):
    """A key already linked cannot be linked again, even for another user."""
    link_account(db, cipher, email="a@example.test", credentials=credentials())
    with pytest.raises(InvalidConfigError) as error:
        link_account(db, cipher, email="b@example.test", credentials=credentials())
    assert error.value.field == "key"
    assert "already linked as account" in str(error.value)


@pytest.mark.parametrize("value", ["notaurl", "ftp://127.0.0.1:1", "http://"])
def test_base_url_env_checked(monkeypatch, value):
    """AXISOR_LNM_BASE_URL must be an http(s) URL with a host; the error names the variable."""
    from axisor.exchange.registry import lnm_base_url_from_env

    monkeypatch.setenv("AXISOR_LNM_BASE_URL", value)
    with pytest.raises(InvalidConfigError) as error:
        lnm_base_url_from_env()
    assert error.value.field == "AXISOR_LNM_BASE_URL"
