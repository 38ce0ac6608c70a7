"""Exchange credentials encrypted at rest with Fernet (AES-128-CBC and HMAC-SHA256).

AXISOR_SECRET_KEY contains one or more comma-separated Fernet keys. The first key encrypts and
every key decrypts, so a key is rotated by putting the new key first, re-encrypting the
stored tokens with ``CredentialCipher.rotate`` and then removing the old key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from axisor.errors import InvalidConfigError

SECRET_KEY_ENV = "AXISOR_SECRET_KEY"
SECRET_KEY_FILE = "secret.key"
GENERATE_HINT = (
    "generate one with: python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'"
)
_REQUIRED_FIELDS = ("key", "secret", "passphrase")


def mask_key(api_key: str) -> str:
    """Return the first 4 characters of an API key followed by an ellipsis."""
    return f"{api_key[:4]}…" if api_key else ""


@dataclass(frozen=True)
class Credentials:
    """API credentials of one exchange account; repr and str never show the secrets."""

    key: str
    secret: str
    passphrase: str
    network: str = "mainnet"

    def __repr__(self) -> str:
        return (
            f"Credentials(key={mask_key(self.key)!r}, secret=[secure], "
            f"passphrase=[secure], network={self.network!r})"
        )

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return format(repr(self), format_spec)


class CredentialCipher:
    """Encrypts credentials with the first key and decrypts with any of the keys."""

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if not keys:
            raise InvalidConfigError(SECRET_KEY_ENV, f"no key given; {GENERATE_HINT}")
        self._fernet = MultiFernet([_load_key(key, position) for position, key in enumerate(keys)])
        self.key_count = len(keys)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] = os.environ, data_dir: Path | None = None
    ) -> CredentialCipher:
        """Build the cipher from AXISOR_SECRET_KEY, or from ``data_dir/secret.key``.

        Without the variable, the key file is read, or created with mode 0600 when missing.
        Raises InvalidConfigError when neither the variable nor a data directory is given.
        """
        value = environ.get(SECRET_KEY_ENV, "").strip()
        if value:
            return cls([part.strip() for part in value.split(",") if part.strip()])
        if data_dir is None:
            raise InvalidConfigError(SECRET_KEY_ENV, f"the variable is not set; {GENERATE_HINT}")
        return cls([read_or_create_key_file(Path(data_dir) / SECRET_KEY_FILE)])

    def encrypt(self, credentials: Mapping[str, str]) -> bytes:
        """Return a Fernet token of the credentials as JSON.

        ``credentials`` needs "key", "secret" and "passphrase"; "network" defaults to mainnet.
        """
        missing = [name for name in _REQUIRED_FIELDS if not credentials.get(name)]
        if missing:
            raise InvalidConfigError("credentials", f"missing or empty: {', '.join(missing)}")
        payload = {name: str(credentials[name]) for name in _REQUIRED_FIELDS}
        payload["network"] = str(credentials.get("network") or "mainnet")
        return self._fernet.encrypt(json.dumps(payload).encode())

    def encrypt_text(self, text: str) -> bytes:
        """Return a Fernet token of one secret string, such as a webhook secret."""
        return self._fernet.encrypt(text.encode())

    def decrypt_text(self, token: bytes) -> str:
        """Decrypt a token made by ``encrypt_text`` with any of the keys."""
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken as exc:
            raise _cannot_decrypt() from exc

    def decrypt(self, token: bytes) -> Credentials:
        """Decrypt a token made by ``encrypt`` with any of the keys."""
        try:
            payload = json.loads(self._fernet.decrypt(token))
        except InvalidToken as exc:
            raise _cannot_decrypt() from exc
        return Credentials(
            key=payload["key"],
            secret=payload["secret"],
            passphrase=payload["passphrase"],
            network=payload.get("network", "mainnet"),
        )

    def rotate(self, token: bytes) -> bytes:
        """Re-encrypt a token under the first key; its content is unchanged."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken as exc:
            raise _cannot_decrypt() from exc

    def __repr__(self) -> str:
        return f"CredentialCipher(keys=[secure] x{self.key_count})"


def read_or_create_key_file(path: Path) -> str:
    """Return the key stored in ``path``, creating the file with a new key and mode 0600.

    The new file is written under a temporary name and linked into place, so a concurrent
    caller reads either no file or a complete one, and both end up with the same key.
    """
    if not path.exists():
        _create_key_file(path)
    return path.read_text().strip()


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as key_file:
        key_file.write(Fernet.generate_key().decode() + "\n")
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()


def _load_key(key: str | bytes, position: int) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError) as exc:
        raise InvalidConfigError(
            SECRET_KEY_ENV,
            f"key number {position + 1} is not a Fernet key "
            f"(32 bytes, url-safe base64); {GENERATE_HINT}",
        ) from exc


def _cannot_decrypt() -> InvalidConfigError:
    return InvalidConfigError(
        SECRET_KEY_ENV,
        "cannot decrypt stored credentials: the token was made with a key that is not in "
        "AXISOR_SECRET_KEY, or it was altered; restore the key that encrypted it",
    )
