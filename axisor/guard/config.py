"""Margin Guard configuration, validated field by field.

``margin_threshold`` is the fraction (0 < t < 1) of the distance from entry to liquidation that
the price may use up before the guard acts: entry 60,000, liquidation 54,545 and t = 0.8 act at
or below 55,636.

``scope`` is ``isolated`` (the default: the account's isolated trades) or ``cross`` (the account's
one cross margin position, whose trigger ``axisor.guard.cross`` computes).
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from axisor.errors import InvalidConfigError
from axisor.exchange.models import Capabilities


class GuardAction(enum.StrEnum):
    ADD_MARGIN = "add_margin"
    CLOSE_POSITION = "close_position"
    REDUCE_POSITION = "reduce_position"
    NOTIFY = "notify"


class AddMarginMode(enum.StrEnum):
    PERCENT = "percent"  # add add_margin_percent % of the current margin
    RESTORE = "restore"  # add enough that the price has used only restore_fraction of the distance


class GuardScope(enum.StrEnum):
    ISOLATED = "isolated"  # the account's isolated trades, each with its own margin
    CROSS = "cross"  # the account's one cross margin position, funded by the cross balance


class GuardConfig(BaseModel):
    """Settings of the guard for one position: when it acts and which action it takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    margin_threshold: Decimal = Field(gt=0, lt=1)
    action: GuardAction = GuardAction.ADD_MARGIN
    add_margin_mode: AddMarginMode = AddMarginMode.PERCENT
    add_margin_percent: Decimal = Field(default=Decimal(50), gt=0, le=1000)
    restore_fraction: Decimal = Field(default=Decimal("0.5"), gt=0, lt=1)
    reduce_percent: Decimal = Field(default=Decimal(50), gt=0, lt=100)
    # Most sats the guard may add to one position over its life; None leaves only the balance.
    budget_sats: int | None = Field(default=None, ge=0, strict=True)
    max_actions: int = Field(default=10, ge=1, le=100, strict=True)
    scope: GuardScope = GuardScope.ISOLATED

    @model_validator(mode="after")
    def _restore_below_threshold(self) -> GuardConfig:
        restoring = self.add_margin_mode is AddMarginMode.RESTORE
        if restoring and self.restore_fraction >= self.margin_threshold:
            raise ValueError(
                f"restore_fraction {self.restore_fraction} must be below margin_threshold "
                f"{self.margin_threshold}, or the guard would act again at once"
            )
        return self


_HINTS = {
    "margin_threshold": "use a fraction between 0 and 1 such as 0.8",
    "action": "use one of: add_margin, close_position, reduce_position, notify",
    "add_margin_mode": "use 'percent' or 'restore'",
    "add_margin_percent": "use a percentage above 0 and at most 1000, such as 50",
    "restore_fraction": "use a fraction between 0 and margin_threshold, such as 0.5",
    "reduce_percent": "use a percentage between 0 and 100, such as 50",
    "budget_sats": "use a whole number of sats, 0 or more, or leave it out",
    "max_actions": "use a whole number from 1 to 100",
    "scope": "use 'isolated' or 'cross'",
}


def parse_guard_config(raw: dict[str, Any]) -> GuardConfig:
    """Validate ``raw`` and return the configuration; errors name the first bad field."""
    if not isinstance(raw, dict):
        raise InvalidConfigError("config", f"expected an object of settings, got {raw!r}")
    try:
        return GuardConfig.model_validate(raw)
    except ValidationError as exc:
        raise _to_config_error(exc, raw) from exc


def _to_config_error(exc: ValidationError, raw: dict[str, Any]) -> InvalidConfigError:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"]) or "config"
    if error["type"] == "extra_forbidden":
        return InvalidConfigError(field, f"unknown setting; known settings: {', '.join(_HINTS)}")
    if not error["loc"]:
        return InvalidConfigError("restore_fraction", error["msg"].removeprefix("Value error, "))
    value = raw.get(field, "<missing>")
    hint = _HINTS.get(field, "check the value")
    return InvalidConfigError(field, f"invalid value {value!r} ({error['msg']}); {hint}")


def check_supported(config: GuardConfig, capabilities: Capabilities, cross: bool = False) -> None:
    """Raise InvalidConfigError when the venue cannot carry out the configured action.

    ``cross`` (or a config whose scope is cross) checks the setting for the account's cross
    margin position, on which the guard carries out reduce_position only.
    """
    if cross or config.scope is GuardScope.CROSS:
        _check_cross_supported(config, capabilities)
        return
    reducing = config.action is GuardAction.REDUCE_POSITION
    if reducing and not capabilities.partial_reduce_isolated:
        raise InvalidConfigError(
            "action",
            f"reduce_position is not supported for isolated trades on {capabilities.name}: "
            "the venue cannot partially reduce an isolated trade; use add_margin or "
            "close_position",
        )


def _check_cross_supported(config: GuardConfig, capabilities: Capabilities) -> None:
    if config.action is not GuardAction.REDUCE_POSITION:
        raise InvalidConfigError(
            "action",
            f"{config.action.value} is not available for a cross margin guard: the guard "
            "carries out only reduce_position on a cross margin position; use reduce_position",
        )
    if not (capabilities.cross and capabilities.partial_reduce_cross):
        raise InvalidConfigError(
            "action",
            f"reduce_position is not supported for cross margin positions on "
            f"{capabilities.name}: the venue cannot partially reduce its cross margin position",
        )


def check_reduce_supported(config: GuardConfig, capabilities: Capabilities, *, cross: bool) -> None:
    """Raise InvalidConfigError when the venue cannot carry out ``config`` on this position.

    An isolated trade (``cross`` False) follows ``check_supported``. A cross margin position
    accepts reduce_position when the venue declares ``cross`` and ``partial_reduce_cross``.
    """
    if not cross:
        check_supported(config, capabilities)
        return
    reducing = config.action is GuardAction.REDUCE_POSITION
    if reducing and not (capabilities.cross and capabilities.partial_reduce_cross):
        raise InvalidConfigError(
            "action",
            f"reduce_position is not supported for cross margin positions on "
            f"{capabilities.name}: the venue cannot partially reduce its cross margin position; "
            "use close_position or notify",
        )
