"""The action ledger: one row per intended exchange action, so that each takes effect once.

A worker records the action (``pending``) before it decides, claims it (``sent``) in its own
committed transaction before the exchange call, and records the outcome afterwards. The claim is
a compare-and-set on ``attempt``, so two workers holding the same job cannot both send. A row
left ``sent`` or ``unknown`` by a killed worker or a timeout is reconciled against the exchange
by the next attempt before anything is sent again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from axisor.db.models import LedgerEntry, LedgerState
from axisor.db.session import Database

FINAL_STATES = (LedgerState.CONFIRMED.value, LedgerState.FAILED.value)


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """A snapshot of one ledger row."""

    key: str
    state: LedgerState
    attempt: int
    action: str
    position_id: int | None
    amount_sats: int
    margin_before_sats: int | None
    margin_after_sats: int | None
    error: str | None

    @property
    def final(self) -> bool:
        return self.state.value in FINAL_STATES


def _record(row: LedgerEntry) -> LedgerRecord:
    return LedgerRecord(
        key=row.idempotency_key,
        state=LedgerState(row.state),
        attempt=row.attempt,
        action=row.action,
        position_id=row.position_id,
        amount_sats=row.amount_sats,
        margin_before_sats=row.margin_before_sats,
        margin_after_sats=row.margin_after_sats,
        error=row.error,
    )


def confirm_in_session(session: Session, key: str, details: dict[str, Any] | None = None) -> None:
    """Confirm the row inside the caller's transaction, so the outcome and its effects on the
    position commit together."""
    row = session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == key))
    row.state = LedgerState.CONFIRMED.value
    row.error = None
    if details:
        row.details = {**(row.details or {}), **details}


class ActionLedger:
    """Reads and moves ledger rows; every method commits before it returns."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def get(self, key: str) -> LedgerRecord | None:
        with self.database.session() as session:
            row = session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == key))
            return None if row is None else _record(row)

    def open(
        self,
        key: str,
        *,
        account_id: int,
        position_id: int | None,
        action: str,
        trigger_price: Decimal | None = None,
        tick_price: Decimal | None = None,
        tick_received_ns: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> LedgerRecord:
        """Record the intended action as ``pending``, or return the row an earlier attempt made."""
        row = LedgerEntry(
            idempotency_key=key,
            account_id=account_id,
            position_id=position_id,
            action=action,
            state=LedgerState.PENDING.value,
            trigger_price=trigger_price,
            tick_price=tick_price,
            tick_received_ns=tick_received_ns,
            details=dict(details or {}),
        )
        try:
            with self.database.session() as session:
                session.add(row)
                session.flush()
                return _record(row)
        except IntegrityError:
            existing = self.get(key)
            if existing is None:
                raise
            return existing

    def open_claimed(
        self, key: str, *, claim: dict[str, Any], **fields: Any
    ) -> LedgerRecord | None:
        """Record a new action directly as ``sent``, in one commit, for a first attempt.

        ``fields`` are those of ``open`` and ``claim`` those of ``claim``. Returns None when a
        row with the key already exists, so the caller lost the race to another attempt.
        """
        details = {**(fields.pop("details", None) or {}), **(claim.pop("details", None) or {})}
        row = LedgerEntry(
            idempotency_key=key,
            state=LedgerState.SENT.value,
            attempt=1,
            sent_at_ns=time.time_ns(),
            details=details,
            **fields,
            **claim,
        )
        try:
            with self.database.session() as session:
                session.add(row)
                session.flush()
                return _record(row)
        except IntegrityError:
            return None

    def claim(
        self,
        record: LedgerRecord,
        *,
        amount_sats: int,
        shortfall_sats: int = 0,
        margin_before_sats: int | None = None,
        margin_after_sats: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> LedgerRecord | None:
        """Move the row to ``sent`` unless another attempt moved it since ``record`` was read.

        Returns the new snapshot, or None when another attempt claimed it first.
        """
        values = {
            "state": LedgerState.SENT.value,
            "attempt": record.attempt + 1,
            "amount_sats": amount_sats,
            "shortfall_sats": shortfall_sats,
            "margin_before_sats": margin_before_sats,
            "margin_after_sats": margin_after_sats,
            "sent_at_ns": time.time_ns(),
        }
        statement = (
            update(LedgerEntry)
            .where(LedgerEntry.idempotency_key == record.key)
            .where(LedgerEntry.attempt == record.attempt)
            .where(LedgerEntry.state.not_in(FINAL_STATES))
            .values(**values)
        )
        with self.database.session() as session:
            if session.execute(statement).rowcount != 1:
                return None
        if details:
            self._set(record.key, details=details)
        return self.get(record.key)

    def confirm(self, key: str, details: dict[str, Any] | None = None) -> None:
        self._finish(key, LedgerState.CONFIRMED, None, details)

    def fail(
        self,
        key: str,
        error: str,
        details: dict[str, Any] | None = None,
        shortfall_sats: int | None = None,
    ) -> None:
        extra = {} if shortfall_sats is None else {"shortfall_sats": shortfall_sats}
        self._finish(key, LedgerState.FAILED, error, details, **extra)

    def mark_unknown(self, key: str, error: str) -> None:
        self._set(key, state=LedgerState.UNKNOWN.value, error=error)

    def release(self, key: str, error: str) -> None:
        """Return a ``sent`` row to ``pending``: the exchange is known not to have applied it."""
        self._set(key, state=LedgerState.PENDING.value, error=error)

    def _finish(
        self,
        key: str,
        state: LedgerState,
        error: str | None,
        details: dict[str, Any] | None,
        **extra: Any,
    ) -> None:
        values: dict[str, Any] = {"state": state.value, "error": error, **extra}
        if details is not None:
            values["details"] = details
        self._set(key, **values)

    def _set(self, key: str, **values: Any) -> None:
        """Update the row; ``details`` are merged into the stored ones, not replacing them."""
        with self.database.session() as session:
            row = session.scalar(select(LedgerEntry).where(LedgerEntry.idempotency_key == key))
            if "details" in values:
                values["details"] = {**(row.details or {}), **values["details"]}
            for name, value in values.items():
                setattr(row, name, value)

    def count_by_state(self) -> dict[str, int]:
        statement = select(LedgerEntry.state, func.count()).group_by(LedgerEntry.state)
        with self.database.session() as session:
            return {state: count for state, count in session.execute(statement)}
