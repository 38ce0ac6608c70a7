"""Duration parsing and secret masking used by the operator commands."""

from __future__ import annotations

import pytest

from axisor.errors import InvalidConfigError
from axisor.ops import MASK, mask_secrets
from axisor.ops.durations import format_duration_ms, parse_duration_ms


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("1d", 86_400_000),
        ("7d", 604_800_000),
        ("90m", 5_400_000),
        ("24h", 86_400_000),
        ("30s", 30_000),
        ("250ms", 250),
        ("2w", 1_209_600_000),
        ("1h30m", 5_400_000),
        ("45", 45_000),
        (" 1D ", 86_400_000),
        ("0s", 0),
    ],
)
def test_parse_duration(text, expected_ms):
    assert parse_duration_ms(text) == expected_ms


@pytest.mark.parametrize("text", ["", "d", "1x", "-1d", "1.5h", "1d 2h", "h1"])
def test_parse_duration_rejects(text):
    with pytest.raises(InvalidConfigError) as raised:
        parse_duration_ms(text, "--completed")
    assert raised.value.field == "--completed"


@pytest.mark.parametrize(
    ("duration_ms", "expected"),
    [(None, "-"), (500, "500ms"), (61_000, "1m 1s"), (90_061_000, "1d 1h"), (3_600_000, "1h")],
)
def test_format_duration(duration_ms, expected):
    assert format_duration_ms(duration_ms) == expected


def test_mask_secrets_nested():
    """Any key containing secret, passphrase, key, token or password is masked at any depth."""
    data = {
        "position_id": 7,
        "api_key": "abc",
        "credentials": {"Secret": "s", "passphrase": "p", "network": "mainnet"},
        "items": [{"access_token": "t"}, {"password": "x", "side": "b"}],
    }
    masked = mask_secrets(data)
    assert masked["position_id"] == 7
    assert masked["api_key"] == MASK
    assert masked["credentials"] == {"Secret": MASK, "passphrase": MASK, "network": "mainnet"}
    assert masked["items"] == [{"access_token": MASK}, {"password": MASK, "side": "b"}]
    assert data["api_key"] == "abc"
