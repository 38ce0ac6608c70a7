"""Job payloads, validated at both ends, and the options every job is added with."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from axisor.queue.names import MAX_PRIORITY

# Retries: 5 attempts with exponential backoff from 1 s (1, 2, 4, 8 s between them).
JOB_ATTEMPTS = 5
BACKOFF_DELAY_MS = 1_000
# Completed jobs are kept for an hour (at most 10,000), failed ones for a week (at most 50,000).
KEEP_COMPLETED = {"age": 3_600, "count": 10_000}
KEEP_FAILED = {"age": 7 * 24 * 3_600, "count": 50_000}


class GuardCheckJob(BaseModel):
    """Reconcile one account's running trades with the positions the platform tracks."""

    model_config = ConfigDict(extra="forbid")

    account_id: int = Field(ge=1)


class GuardActionJob(BaseModel):
    """Act on one position whose trigger the engine saw crossed."""

    model_config = ConfigDict(extra="forbid")

    position_id: int = Field(ge=1)
    account_id: int = Field(ge=1)
    version: int = Field(ge=1)
    action: str
    trigger_price: Decimal
    tick_price: Decimal
    tick_time_ms: int
    tick_received_ns: int  # wall clock, epoch ns, when the engine received the tick

    @property
    def job_id(self) -> str:
        return guard_action_job_id(self.position_id, self.version)

    @property
    def idempotency_key(self) -> str:
        return f"guard:{self.position_id}:{self.version}:{self.action}"


class GuardCrossJob(BaseModel):
    """Act on an account's cross margin position whose trigger the cross engine saw crossed.

    ``version`` is ``axisor.guard.cross.cross_version`` of the position and setting the engine
    read; ``position_id`` is the venue's id of the cross position.
    """

    model_config = ConfigDict(extra="forbid")

    account_id: int = Field(ge=1)
    position_id: str = Field(min_length=1, max_length=100)
    version: str = Field(pattern=r"^[0-9a-f]{16}$")
    trigger_price: Decimal
    tick_price: Decimal
    tick_time_ms: int
    tick_received_ns: int  # wall clock, epoch ns, when the engine received the tick

    @property
    def job_id(self) -> str:
        return guard_cross_job_id(self.account_id, self.version)

    @property
    def idempotency_key(self) -> str:
        return guard_cross_ledger_prefix(self.account_id, self.position_id) + self.version


class AutomationJob(BaseModel):
    """Carry out one arming of one automation: place its stop, close, cash in or open a trade.

    ``action`` is ``place_stoploss``, ``close``, ``cash_in`` or ``open``. A placement is queued
    when the stop is armed, without a tick, so its tick fields are None.
    """

    model_config = ConfigDict(extra="forbid")

    automation_id: int = Field(ge=1)
    account_id: int = Field(ge=1)
    version: int = Field(ge=1)
    action: str
    trigger_price: Decimal | None = None
    tick_price: Decimal | None = None
    tick_time_ms: int | None = None
    tick_received_ns: int | None = None  # wall clock, epoch ns, when the engine received the tick

    @property
    def job_id(self) -> str:
        return automation_job_id(self.automation_id, self.version)

    @property
    def idempotency_key(self) -> str:
        return f"auto:{self.automation_id}:{self.version}:{self.action}"


def automation_job_id(automation_id: int, version: int) -> str:
    """Return the job id of one arming of an automation: an arming fires at most one job."""
    return f"auto-{automation_id}-v{version}"


def guard_action_job_id(position_id: int, version: int) -> str:
    """Return the job id of a position's action at one trigger version: the same crossing twice
    gives the same id, so BullMQ keeps one job for it."""
    return f"guard-{position_id}-v{version}"


def guard_cross_job_id(account_id: int, version: str) -> str:
    """Return the job id of an account's cross guard action at one version of its position:
    the same crossing twice gives the same id, so BullMQ keeps one job for it."""
    return f"guard-cross-{account_id}-v{version}"


def guard_cross_ledger_prefix(account_id: int, position_id: str) -> str:
    """Return the start shared by the ledger keys of the guard's actions on one cross position."""
    return f"guard-cross:{account_id}:{position_id}:"


def guard_check_job_id(account_id: int, stamp: str) -> str:
    return f"check-{account_id}-{stamp}"


def priority_for_distance(distance_bps: int) -> int:
    """Return the BullMQ priority: the position nearest its liquidation runs first."""
    return max(1, min(MAX_PRIORITY, distance_bps + 1))


def job_options(job_id: str, priority: int | None = None) -> dict:
    options = {
        "jobId": job_id,
        "attempts": JOB_ATTEMPTS,
        "backoff": {"type": "exponential", "delay": BACKOFF_DELAY_MS},
        "removeOnComplete": KEEP_COMPLETED,
        "removeOnFail": KEEP_FAILED,
    }
    if priority is not None:
        options["priority"] = priority
    return options
