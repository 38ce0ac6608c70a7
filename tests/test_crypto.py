"""Credential encryption at rest: round trip, key rotation, tampering and masking."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
import structlog
from cryptography.fernet import Fernet

from axisor.db.crypto import CredentialCipher, Credentials
from axisor.errors import InvalidConfigError

CREDENTIALS = {
    "key": "lnm-key-ABCDEFGH",
    "secret": "very-secret-value",
    "passphrase": "pass-phrase-value",
    "network": "testnet",
}


def _key() -> str:
    return Fernet.generate_key().decode()


def test_round_trip() -> None:
    """decrypt(encrypt(x)) returns every field."""
    cipher = CredentialCipher([_key()])

    credentials = cipher.decrypt(cipher.encrypt(CREDENTIALS))

    assert credentials == Credentials(**CREDENTIALS)


def test_network_defaults_to_mainnet() -> None:
    """Credentials stored without a network read back as mainnet."""
    cipher = CredentialCipher([_key()])
    without_network = {name: CREDENTIALS[name] for name in ("key", "secret", "passphrase")}

    assert cipher.decrypt(cipher.encrypt(without_network)).network == "mainnet"


def test_token_hides_plaintext() -> None:
    """The stored token contains none of the plaintext values."""
    token = CredentialCipher([_key()]).encrypt(CREDENTIALS)

    for value in CREDENTIALS.values():
        assert value.encode() not in token


@pytest.mark.parametrize("missing", ["key", "secret", "passphrase"])
def test_encrypt_requires_fields(missing: str) -> None:
    """Encrypting credentials without a required field raises InvalidConfigError."""
    incomplete = {name: value for name, value in CREDENTIALS.items() if name != missing}

    with pytest.raises(InvalidConfigError, match=missing):
        CredentialCipher([_key()]).encrypt(incomplete)


def test_rotation() -> None:
    """An old token decrypts with [new, old]; rotate moves it to the new key only."""
    old_key, new_key = _key(), _key()
    old_token = CredentialCipher([old_key]).encrypt(CREDENTIALS)
    both = CredentialCipher([new_key, old_key])

    rotated = both.rotate(old_token)

    assert both.decrypt(old_token).secret == CREDENTIALS["secret"]
    assert CredentialCipher([new_key]).decrypt(rotated).secret == CREDENTIALS["secret"]
    with pytest.raises(InvalidConfigError, match="cannot decrypt stored credentials"):
        CredentialCipher([old_key]).decrypt(rotated)


def test_wrong_key_rejected() -> None:
    """A token from another key raises InvalidConfigError that reveals nothing."""
    token = CredentialCipher([_key()]).encrypt(CREDENTIALS)
    other_key = _key()

    with pytest.raises(InvalidConfigError) as caught:
        CredentialCipher([other_key]).decrypt(token)

    assert caught.value.field == "AXISOR_SECRET_KEY"
    assert caught.value.message.startswith("cannot decrypt stored credentials: ")
    assert other_key not in str(caught.value)
    assert CREDENTIALS["secret"] not in str(caught.value)


def test_tampered_token_rejected() -> None:
    """Changing one byte of a token makes it fail authentication."""
    cipher = CredentialCipher([_key()])
    token = bytearray(cipher.encrypt(CREDENTIALS))
    token[40] = ord("A") if token[40] != ord("A") else ord("B")

    with pytest.raises(InvalidConfigError, match="cannot decrypt"):
        cipher.decrypt(bytes(token))
    with pytest.raises(InvalidConfigError, match="cannot decrypt"):
        cipher.rotate(bytes(token))


@pytest.mark.parametrize("bad_key", ["", "short", "x" * 44, "not base64 !!"])
def test_invalid_key_rejected(bad_key: str) -> None:
    """A value that is not a Fernet key raises InvalidConfigError with the fix."""
    with pytest.raises(InvalidConfigError) as caught:
        CredentialCipher([bad_key])

    assert caught.value.field == "AXISOR_SECRET_KEY"
    assert "Fernet.generate_key()" in caught.value.message


def test_no_keys_rejected() -> None:
    """An empty key list raises InvalidConfigError."""
    with pytest.raises(InvalidConfigError, match="no key given"):
        CredentialCipher([])


def test_from_env_key_list() -> None:
    """AXISOR_SECRET_KEY takes comma-separated keys, the new key first."""
    old_key, new_key = _key(), _key()
    old_token = CredentialCipher([old_key]).encrypt(CREDENTIALS)

    cipher = CredentialCipher.from_env({"AXISOR_SECRET_KEY": f" {new_key} , {old_key} "})

    assert cipher.key_count == 2
    assert cipher.decrypt(old_token).key == CREDENTIALS["key"]
    assert (
        CredentialCipher([new_key]).decrypt(cipher.encrypt(CREDENTIALS)).key == "lnm-key-ABCDEFGH"
    )


def test_from_env_creates_key_file(tmp_path: Path) -> None:
    """Without the variable, data_dir/secret.key is created with mode 0600 and then reused."""
    data_dir = tmp_path / "data"

    token = CredentialCipher.from_env({}, data_dir=data_dir).encrypt(CREDENTIALS)
    again = CredentialCipher.from_env({}, data_dir=data_dir)

    key_file = data_dir / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert again.decrypt(token).secret == CREDENTIALS["secret"]
    assert list(data_dir.iterdir()) == [key_file]


def test_from_env_prefers_variable(tmp_path: Path) -> None:
    """AXISOR_SECRET_KEY wins over the key file and no file is created."""
    key = _key()

    cipher = CredentialCipher.from_env({"AXISOR_SECRET_KEY": key}, data_dir=tmp_path)

    assert CredentialCipher([key]).decrypt(cipher.encrypt(CREDENTIALS)).key == CREDENTIALS["key"]
    assert not (tmp_path / "secret.key").exists()


def test_from_env_missing_key() -> None:
    """No variable and no data directory raises InvalidConfigError with the command to run."""
    with pytest.raises(InvalidConfigError) as caught:
        CredentialCipher.from_env({"AXISOR_SECRET_KEY": "  "})

    assert caught.value.field == "AXISOR_SECRET_KEY"
    assert "Fernet.generate_key().decode()" in caught.value.message


def test_credentials_repr_masked() -> None:
    """str, repr and format show [secure] and a masked key, never the secrets."""
    credentials = Credentials(**CREDENTIALS)

    for text in (repr(credentials), str(credentials), f"{credentials}", f"{credentials:>200}"):
        assert CREDENTIALS["secret"] not in text
        assert CREDENTIALS["passphrase"] not in text
        assert CREDENTIALS["key"] not in text
        assert "lnm-…" in text
        assert text.count("[secure]") == 2


def test_cipher_repr_masked() -> None:
    """The cipher repr shows the key count only."""
    key = _key()

    assert key not in repr(CredentialCipher([key]))


def test_credentials_in_logs_masked(caplog: pytest.LogCaptureFixture) -> None:
    """Logged credentials appear masked through logging and structlog."""
    credentials = Credentials(**CREDENTIALS)

    with caplog.at_level(logging.INFO):
        logging.getLogger("axisor.test").info("loaded %s", credentials)
    with structlog.testing.capture_logs() as captured:
        structlog.get_logger().info("loaded", credentials=credentials)
    rendered = structlog.processors.JSONRenderer(default=repr)(None, "info", dict(captured[0]))
    console = structlog.dev.ConsoleRenderer(colors=False)(None, "info", dict(captured[0]))

    for text in (caplog.text, rendered, console):
        assert CREDENTIALS["secret"] not in text
        assert CREDENTIALS["passphrase"] not in text
        assert "[secure]" in text
