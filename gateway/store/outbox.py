"""The outbox: messages a call or a conversation promised, and the lease machine that delivers them.

``enqueue`` is the one way a message enters the outbox, inside the caller's transaction, so a
decision (or a conversation turn) and its message commit together. ``Outbox`` is the sender's
side (``gateway.whatsapp.outbox.OutboxWorker`` is its only user): claim with a lease, then record
what the Cloud API answered. See that module for the delivery guarantee.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from gateway.store.database import Database
from gateway.store.records import OutboundMessage, OutboxClaim
from gateway.store.rows import utc
from gateway.store.schema import (
    EventRow,
    OutboxDeliveryRow,
    OutboxRow,
    WhatsAppStatusRow,
)

# Outbox message statuses. Progress only moves forward: pending < sending < accepted (the API
# returned a wamid) < sent < delivered < read. "failed" is terminal, except that a later
# "delivered"/"read" proves the message reached the phone and wins; "failed" never
# overrides "delivered"/"read" (several devices may disagree, the phone that got it counts).
OUTBOX_PROGRESS = ("pending", "sending", "accepted", "sent", "delivered", "read")


def merge_message_status(current: str, incoming: str) -> str:
    """The status a message has after ``incoming`` arrives while it is ``current`` (idempotent, order-free)."""
    rank = {name: i for i, name in enumerate(OUTBOX_PROGRESS)}
    if incoming == "failed":
        return current if rank.get(current, -1) >= rank["delivered"] else "failed"
    if current == "failed":
        return incoming if rank[incoming] >= rank["delivered"] else "failed"
    return incoming if rank[incoming] > rank.get(current, -1) else current



def enqueue(s: Session, *, call_id: str, message: OutboundMessage, now: datetime, key: str | None = None) -> None:
    """Add ``message`` to the outbox in the caller's transaction; a key already there is a no-op (a retried write)."""
    key = key or message.idempotency_key(call_id)
    if s.scalar(select(OutboxRow.id).where(OutboxRow.idempotency_key == key)) is not None:
        return
    s.add(
        OutboxRow(
            call_id=call_id, idempotency_key=key, channel=message.channel, purpose=message.purpose,
            to_number=message.to_number, payload=message.payload, status="pending", attempts=0,
            created_at=now, updated_at=now,
        )
    )


def settle_delivery(s: Session, outbox_id: int) -> None:
    """No attempt is open or due any more: the message's fate is known."""
    delivery = s.get(OutboxDeliveryRow, outbox_id)
    if delivery is not None:
        delivery.in_doubt_since = delivery.lease_until = delivery.next_attempt_at = None


class Outbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(
        self, *, now: datetime, lease_s: float, in_doubt_grace_s: float, listening_since: datetime | None = None,
    ) -> OutboxClaim | None:
        """Reserve the oldest due WhatsApp message, first settling any earlier attempt still in doubt.

        The grace for an in-doubt attempt runs from the attempt or from ``listening_since`` (when
        this process began receiving webhooks), whichever is later: webhooks Meta retried while
        we were down get their chance to arrive before anything is re-sent.

        Compare-and-set on ``attempts`` makes a claim exclusive across workers and processes.
        The attempt is counted and marked in doubt here, in the claim's transaction, *before*
        anything is sent: a crash after this point can never go unnoticed.
        """
        def write(s: Session) -> OutboxClaim | None:
            for row, delivery in s.execute(_due(now)).all():
                if delivery is None:
                    delivery = OutboxDeliveryRow(outbox_id=row.id)
                    s.add(delivery)
                if row.status == "sending" and utc(delivery.lease_until) > now:
                    continue  # another sender holds it
                if row.status == "pending" and utc(delivery.next_attempt_at) > now:
                    continue
                if delivery.in_doubt_since is not None:
                    if _adopt_seen_attempt(s, row, now):
                        continue
                    settle_at = max(utc(delivery.in_doubt_since), utc(listening_since)) + timedelta(seconds=in_doubt_grace_s)
                    if settle_at > now:
                        # Still waiting for the earlier attempt's status webhook.
                        row.status, row.updated_at, delivery.lease_until = "pending", now, None
                        delivery.next_attempt_at = settle_at
                        continue
                claimed = s.execute(
                    update(OutboxRow)
                    .where(OutboxRow.id == row.id, OutboxRow.attempts == row.attempts, OutboxRow.status == row.status)
                    .values(status="sending", attempts=row.attempts + 1, updated_at=now)
                    .execution_options(synchronize_session=False)
                ).rowcount
                if claimed != 1:
                    continue  # lost the race to another sender
                lease_until = now + timedelta(seconds=lease_s)
                delivery.lease_until, delivery.next_attempt_at = lease_until, None
                delivery.in_doubt_since, delivery.last_attempt_at = now, now
                return OutboxClaim(
                    id=row.id, call_id=row.call_id, idempotency_key=row.idempotency_key, purpose=row.purpose,
                    to_number=row.to_number, payload=row.payload, attempts=row.attempts + 1, lease_until=lease_until,
                )
            return None

        return await self._db.write(write)

    async def accepted(self, outbox_id: int, wamid: str, *, now: datetime) -> None:
        """The API returned ``wamid``; fold in status webhooks that may have arrived first."""
        def write(s: Session) -> None:
            row = s.get(OutboxRow, outbox_id)
            if row.wamid is not None and row.wamid != wamid:
                # An earlier, in-doubt attempt was adopted meanwhile: this send was a duplicate.
                _event(s, row, "whatsapp_duplicate_send", now, kept=row.wamid, extra=wamid)
            else:
                row.wamid = wamid
            row.status = merge_message_status(row.status, "accepted") if row.status != "failed" else "accepted"
            _fold_statuses(s, row, select(WhatsAppStatusRow).where(WhatsAppStatusRow.wamid == row.wamid))
            row.last_error, row.updated_at = None, now
            settle_delivery(s, outbox_id)
            delivery = s.get(OutboxDeliveryRow, outbox_id)
            if delivery is not None:
                delivery.error_code = None
            _event(s, row, "whatsapp_accepted", now, wamid=row.wamid, purpose=row.purpose)

        await self._db.write(write)

    async def retry_later(
        self, outbox_id: int, *, now: datetime, next_attempt_at: datetime, error: str, error_code: int | None,
        in_doubt: bool, consume_attempt: bool = True,
    ) -> None:
        """Back to pending until ``next_attempt_at``; ``in_doubt`` keeps the attempt open for reconciliation."""
        def write(s: Session) -> None:
            row, delivery = s.get(OutboxRow, outbox_id), s.get(OutboxDeliveryRow, outbox_id)
            if row.status != "sending":
                return  # settled meanwhile (e.g. adopted through a status webhook)
            row.status, row.last_error, row.updated_at = "pending", error, now
            if not consume_attempt:
                row.attempts = max(0, row.attempts - 1)
            delivery.lease_until, delivery.next_attempt_at, delivery.error_code = None, next_attempt_at, error_code
            if not in_doubt:
                delivery.in_doubt_since = None

        await self._db.write(write)

    async def failed(self, outbox_id: int, *, now: datetime, error: str, error_code: int | None, fallback: bool) -> None:
        """Terminal: no further attempt. ``fallback`` records that another channel should pick the message up."""
        def write(s: Session) -> None:
            row = s.get(OutboxRow, outbox_id)
            if row.status != "sending":
                return
            row.status, row.last_error, row.updated_at = "failed", error, now
            settle_delivery(s, outbox_id)
            delivery = s.get(OutboxDeliveryRow, outbox_id)
            if delivery is not None:
                delivery.error_code = error_code
            record_failure(s, row, now, error=error, code=error_code, fallback=fallback)

        await self._db.write(write)


def record_failure(s: Session, row: OutboxRow, now: datetime, *, error: str, code: int | None, fallback: bool) -> None:
    """The ``whatsapp_failed`` event on the message's call, for the operator and for a fallback channel."""
    _event(s, row, "whatsapp_failed", now, purpose=row.purpose, error=error, code=code, fallback=fallback)


def _due(now: datetime) -> Any:
    """Pending messages whose next attempt is due, and sending ones whose lease ran out (oldest first)."""
    return (
        select(OutboxRow, OutboxDeliveryRow)
        .outerjoin(OutboxDeliveryRow, OutboxDeliveryRow.outbox_id == OutboxRow.id)
        .where(
            OutboxRow.channel == "whatsapp",
            or_(
                and_(OutboxRow.status == "pending",
                     or_(OutboxDeliveryRow.next_attempt_at.is_(None), OutboxDeliveryRow.next_attempt_at <= now)),
                and_(OutboxRow.status == "sending",
                     or_(OutboxDeliveryRow.lease_until.is_(None), OutboxDeliveryRow.lease_until <= now)),
            ),
        )
        .order_by(OutboxRow.id)
        .limit(20)
    )


def _adopt_seen_attempt(s: Session, row: OutboxRow, now: datetime) -> bool:
    """An in-doubt attempt whose status webhook (carrying our key) arrived did reach WhatsApp: keep it."""
    seen = s.scalars(
        select(WhatsAppStatusRow).where(WhatsAppStatusRow.callback_data == row.idempotency_key).order_by(WhatsAppStatusRow.id)
    ).all()
    if not seen:
        return False
    row.wamid = row.wamid or seen[0].wamid
    row.status = merge_message_status("sending", "accepted")
    _fold_statuses(s, row, select(WhatsAppStatusRow).where(WhatsAppStatusRow.wamid == row.wamid))
    row.last_error = None if row.status != "failed" else row.last_error
    row.updated_at = now
    settle_delivery(s, row.id)
    _event(s, row, "whatsapp_reconciled", now, wamid=row.wamid, purpose=row.purpose)
    return True


def _fold_statuses(s: Session, row: OutboxRow, statuses: Any) -> None:
    for status in s.scalars(statuses.order_by(WhatsAppStatusRow.id)):
        row.status = merge_message_status(row.status, status.status)


def _event(s: Session, row: OutboxRow, type_: str, now: datetime, **data: Any) -> None:
    s.add(EventRow(call_id=row.call_id, type=type_, data=data, at=now))
