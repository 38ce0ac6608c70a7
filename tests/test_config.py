"""Settings read from the environment: defaults, valid values and the error for each bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from axisor.config import Settings, mask_url_password
from axisor.errors import InvalidConfigError


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty environment gives the documented defaults."""
    monkeypatch.setenv("HOME", str(tmp_path))

    settings = Settings.from_env({})

    assert settings.data_dir == tmp_path / ".axisor"
    assert settings.database_url is None
    assert settings.effective_database_url == f"sqlite:///{tmp_path / '.axisor' / 'axisor.db'}"
    assert settings.redis_url is None
    assert settings.worker_concurrency == 5
    assert settings.worker_timeout_ms == 30_000
    assert settings.log_format == "console"
    assert settings.log_level == "INFO"
    assert settings.health_port == 3000


def test_values_read(tmp_path: Path) -> None:
    """Every variable is read and converted."""
    settings = Settings.from_env(
        {
            "AXISOR_DATA_DIR": str(tmp_path),
            "DATABASE_URL": "postgresql://axisor@db:5432/axisor",
            "REDIS_URL": "redis://cache:6379/2",
            "WORKER_CONCURRENCY": "1000",
            "WORKER_TIMEOUT": "1000",
            "LOG_FORMAT": "JSON",
            "LOG_LEVEL": "debug",
            "HEALTH_PORT": "8080",
        }
    )

    assert settings.data_dir == tmp_path
    assert settings.effective_database_url == "postgresql://axisor@db:5432/axisor"
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.worker_concurrency == 1000
    assert settings.worker_timeout_ms == 1000
    assert settings.log_format == "json"
    assert settings.log_level == "DEBUG"
    assert settings.health_port == 8080


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"AXISOR_ENV": "production"}, "json"),
        ({"AXISOR_ENV": "development"}, "console"),
        ({"AXISOR_ENV": "production", "LOG_FORMAT": "console"}, "console"),
    ],
)
def test_log_format_default(environ: dict[str, str], expected: str) -> None:
    """Production logs JSON unless LOG_FORMAT sets another format."""
    assert Settings.from_env(environ).log_format == expected


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("WORKER_CONCURRENCY", "0", "1..1000"),
        ("WORKER_CONCURRENCY", "1001", "1..1000"),
        ("WORKER_CONCURRENCY", "five", "1..1000"),
        ("WORKER_CONCURRENCY", "2.5", "1..1000"),
        ("WORKER_TIMEOUT", "999", "1000..3600000"),
        ("WORKER_TIMEOUT", "3600001", "1000..3600000"),
        ("WORKER_TIMEOUT", "30s", "1000..3600000"),
        ("HEALTH_PORT", "0", "1..65535"),
        ("HEALTH_PORT", "65536", "1..65535"),
        ("HEALTH_PORT", "http", "1..65535"),
        ("LOG_FORMAT", "xml", "console, json"),
        ("LOG_LEVEL", "verbose", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("REDIS_URL", "http://cache:6379", "redis://"),
        ("REDIS_URL", "cache:6379", "redis://"),
    ],
)
def test_bad_value_rejected(variable: str, value: str, accepted: str) -> None:
    """Each bad value raises InvalidConfigError naming the variable, the value and the range."""
    with pytest.raises(InvalidConfigError) as caught:
        Settings.from_env({variable: value})

    assert caught.value.field == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert accepted in caught.value.message
    assert value.split(":")[0] in caught.value.message


def test_data_dir_must_be_directory(tmp_path: Path) -> None:
    """AXISOR_DATA_DIR pointing at a file raises InvalidConfigError."""
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")

    with pytest.raises(InvalidConfigError) as caught:
        Settings.from_env({"AXISOR_DATA_DIR": str(not_a_dir)})

    assert caught.value.field == "AXISOR_DATA_DIR"
    assert str(not_a_dir) in caught.value.message


def test_bad_redis_url_masks_password() -> None:
    """The REDIS_URL error shows the URL with its password masked."""
    with pytest.raises(InvalidConfigError) as caught:
        Settings.from_env({"REDIS_URL": "http://:hunter2@cache:6379"})

    assert "hunter2" not in str(caught.value)
    assert ":***@cache" in caught.value.message


def test_repr_masks_passwords(tmp_path: Path) -> None:
    """repr and str show URLs with passwords replaced by ***."""
    settings = Settings.from_env(
        {
            "AXISOR_DATA_DIR": str(tmp_path),
            "DATABASE_URL": "postgresql://axisor:dbpass@db/axisor",
            "REDIS_URL": "redis://:redispass@cache:6379/0",
        }
    )

    for text in (repr(settings), str(settings), f"{settings}"):
        assert "dbpass" not in text
        assert "redispass" not in text
        assert "redis://:***@cache:6379/0" in text
        assert "postgresql://axisor:***@db/axisor" in text


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:pw@host/1", "redis://user:***@host/1"),
        ("postgresql://u:p@ss@host/db", "postgresql://u:***@host/db"),
        ("redis://host:6379", "redis://host:6379"),
        ("redis://user@host", "redis://user@host"),
    ],
)
def test_mask_url_password(url: str, masked: str) -> None:
    """Only the password part of the user info is replaced."""
    assert mask_url_password(url) == masked


def test_settings_frozen(tmp_path: Path) -> None:
    """Settings cannot be changed after they are read."""
    settings = Settings(data_dir=tmp_path)

    with pytest.raises(AttributeError):
        settings.worker_concurrency = 10  # type: ignore[misc]
