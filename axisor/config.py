"""Settings read from environment variables, checked once at start-up.

AXISOR_DATA_DIR     directory for the SQLite file, the embedded Redis and secret.key
                    (default ~/.axisor)
DATABASE_URL        sqlite:///path or postgresql://user:password@host:port/database
                    (default: SQLite file AXISOR_DATA_DIR/axisor.db)
REDIS_URL           redis://[:password@]host:port/db (default: a private redis-server)
WORKER_CONCURRENCY  jobs each worker runs at once, 1..1000 (default 5)
WORKER_TIMEOUT      maximum run time of one job in milliseconds, 1000..3600000
                    (default 30000)
LOG_FORMAT          "console" or "json" (default json when AXISOR_ENV=production)
LOG_LEVEL           DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)
HEALTH_PORT         TCP port of the health endpoint, 1..65535 (default 3000)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from axisor.errors import InvalidConfigError

LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
REDIS_SCHEMES = ("redis", "rediss", "unix")


def mask_url_password(url: str) -> str:
    """Return ``url`` with the password of its user info replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True)
class Settings:
    """Process settings; ``Settings.from_env()`` reads and validates them."""

    data_dir: Path
    database_url: str | None = None
    redis_url: str | None = None
    worker_concurrency: int = 5
    worker_timeout_ms: int = 30_000
    log_format: str = "console"
    log_level: str = "INFO"
    health_port: int = 3000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Read the settings; raise InvalidConfigError naming the first invalid variable."""
        production = environ.get("AXISOR_ENV", "").strip().lower() == "production"
        return cls(
            data_dir=_data_dir(environ),
            database_url=_optional(environ, "DATABASE_URL"),
            redis_url=_redis_url(environ),
            worker_concurrency=_int_in_range(environ, "WORKER_CONCURRENCY", 5, 1, 1000),
            worker_timeout_ms=_int_in_range(environ, "WORKER_TIMEOUT", 30_000, 1000, 3_600_000),
            log_format=_choice(
                environ, "LOG_FORMAT", "json" if production else "console", LOG_FORMATS
            ),
            log_level=_choice(environ, "LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
            health_port=_int_in_range(environ, "HEALTH_PORT", 3000, 1, 65_535),
        )

    @property
    def effective_database_url(self) -> str:
        """DATABASE_URL, or the SQLite file ``data_dir/axisor.db`` when it is unset."""
        return self.database_url or f"sqlite:///{self.data_dir / 'axisor.db'}"

    def __repr__(self) -> str:
        database_url = mask_url_password(self.database_url) if self.database_url else None
        redis_url = mask_url_password(self.redis_url) if self.redis_url else None
        return (
            f"Settings(data_dir={str(self.data_dir)!r}, database_url={database_url!r}, "
            f"redis_url={redis_url!r}, worker_concurrency={self.worker_concurrency}, "
            f"worker_timeout_ms={self.worker_timeout_ms}, log_format={self.log_format!r}, "
            f"log_level={self.log_level!r}, health_port={self.health_port})"
        )

    __str__ = __repr__


def _optional(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _data_dir(environ: Mapping[str, str]) -> Path:
    value = _optional(environ, "AXISOR_DATA_DIR")
    if value is None:
        return Path("~/.axisor").expanduser()
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidConfigError(
            "AXISOR_DATA_DIR", f"{value!r} exists and is not a directory; give a directory path"
        )
    return path


def _redis_url(environ: Mapping[str, str]) -> str | None:
    value = _optional(environ, "REDIS_URL")
    if value is None:
        return None
    scheme = urlsplit(value).scheme
    if scheme not in REDIS_SCHEMES:
        raise InvalidConfigError(
            "REDIS_URL",
            f"{mask_url_password(value)!r} has scheme {scheme!r}; expected "
            "redis://[:password@]host:port/db, rediss://... or unix:///path/redis.sock",
        )
    return value


def _int_in_range(
    environ: Mapping[str, str], name: str, default: int, minimum: int, maximum: int
) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidConfigError(
            name, f"{raw!r} is not an integer; expected {minimum}..{maximum}"
        ) from None
    if not minimum <= value <= maximum:
        raise InvalidConfigError(name, f"{value} is out of range; expected {minimum}..{maximum}")
    return value


def _choice(
    environ: Mapping[str, str],
    name: str,
    default: str,
    choices: tuple[str, ...],
    *,
    upper: bool = False,
) -> str:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    value = raw.upper() if upper else raw.lower()
    if value not in choices:
        raise InvalidConfigError(name, f"{raw!r} is not one of {', '.join(choices)}")
    return value
