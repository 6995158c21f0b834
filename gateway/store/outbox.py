"""The outbox: messages a call or a conversation promised, and the lease machine that delivers them.

``enqueue`` is the one way a message enters the outbox, inside the caller's transaction, so a
decision (or a call's end, or a conversation turn) and its message commit together. A message may
carry a not-before time (a recovery after an abandoned call waits a while): it is an ordinary row,
so it survives restarts, and is not claimed earlier. ``Outbox`` is the sender's side
(``gateway.whatsapp.outbox.OutboxWorker`` is its only user): claim with a lease, then record what
the Cloud API answered. See that module for the delivery guarantee.

Purposes: ``deflection`` (after a call moved to WhatsApp), ``recovery`` (after an abandoned call;
cancelled at claim time when the caller called back or was reached meanwhile) and ``flow``
(a conversation's messages).
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from gateway.numbers import whatsapp_key, whatsapp_suffix
from gateway.store.database import Database
from gateway.store.records import RECOVERY_PURPOSE, OutboundMessage, OutboxClaim
from gateway.store.rows import utc
from gateway.store.schema import (
    CallRow,
    EventRow,
    OutboxDeliveryRow,
    OutboxRow,
    WhatsAppInboundRow,
    WhatsAppStatusRow,
)

# Outbox message statuses. Progress only moves forward: pending < sending < accepted (the API
# returned a wamid) < sent < delivered < read. "failed" is terminal, except that a later
# "delivered"/"read" proves the message reached the phone and wins; "failed" never
# overrides "delivered"/"read" (several devices may disagree, the phone that got it counts).
# "cancelled" (a recovery that became pointless before it was sent) is terminal: nothing revives it.
OUTBOX_PROGRESS = ("pending", "sending", "accepted", "sent", "delivered", "read")


def merge_message_status(current: str, incoming: str) -> str:
    """The status a message has after ``incoming`` arrives while it is ``current`` (idempotent, order-free)."""
    rank = {name: i for i, name in enumerate(OUTBOX_PROGRESS)}
    if current == "cancelled":
        return current
    if incoming == "failed":
        return current if rank.get(current, -1) >= rank["delivered"] else "failed"
    if current == "failed":
        return incoming if rank[incoming] >= rank["delivered"] else "failed"
    return incoming if rank[incoming] > rank.get(current, -1) else current



def enqueue(s: Session, *, call_id: str, message: OutboundMessage, now: datetime, key: str | None = None) -> bool:
    """Add ``message`` to the outbox in the caller's transaction; a key already there is a no-op (a retried write,
    or the same message asked for twice): then False. A ``not_before`` time is the message's first due attempt."""
    key = key or message.idempotency_key(call_id)
    if s.scalar(select(OutboxRow.id).where(OutboxRow.idempotency_key == key)) is not None:
        return False
    row = OutboxRow(
        call_id=call_id, idempotency_key=key, channel=message.channel, purpose=message.purpose,
        to_number=message.to_number, payload=message.payload, status="pending", attempts=0,
        created_at=now, updated_at=now,
    )
    s.add(row)
    if message.not_before is not None:
        s.flush()  # the delivery row is keyed by the message's id
        s.add(OutboxDeliveryRow(outbox_id=row.id, next_attempt_at=message.not_before))
    return True


def recent_recovery(s: Session, number: str, *, since: datetime) -> OutboxRow | None:
    """The latest recovery to ``number`` (any form of it) created since ``since`` and not cancelled, if any."""
    rows = s.scalars(_recoveries_to(number).where(OutboxRow.status != "cancelled", OutboxRow.created_at >= since))
    same = _same_customer(number)
    return next((row for row in rows if same(row.to_number)), None)


def cancel_unsent_recoveries(s: Session, number: str, *, now: datetime, reason: str) -> None:
    """Cancel the recoveries to ``number`` that no attempt may have sent yet (the customer called again)."""
    same = _same_customer(number)
    for row in s.scalars(_recoveries_to(number).where(OutboxRow.status == "pending")).all():
        delivery = s.get(OutboxDeliveryRow, row.id)
        if same(row.to_number) and (delivery is None or delivery.in_doubt_since is None):
            _cancel(s, row, now, reason)


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
        """Reserve the oldest due WhatsApp message, first settling any earlier attempt still in doubt, and
        cancelling (not handing out) any due recovery whose caller called back or was reached since.

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
                if row.purpose == RECOVERY_PURPOSE and delivery.in_doubt_since is None and _cancel_if_reached(s, row, now):
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


def _cancel_if_reached(s: Session, row: OutboxRow, now: datetime) -> bool:
    """A recovery whose caller called back or was reached since is not sent: cancelled, with why.

    Only asked while no attempt is in doubt: once one may have reached WhatsApp, cancelling would lie."""
    reason = _reached_since(s, row)
    if reason is None:
        return False
    _cancel(s, row, now, reason)
    return True


def _cancel(s: Session, row: OutboxRow, now: datetime, reason: str) -> None:
    row.status, row.updated_at = "cancelled", now
    settle_delivery(s, row.id)
    _event(s, row, "recovery_cancelled", now, reason=reason)


def _reached_since(s: Session, row: OutboxRow) -> str | None:
    """How the recovery's customer was in touch after its call (a later call) or after it was written, if they were."""
    call = s.get(CallRow, row.call_id)
    if call is not None and call.caller_number and s.scalar(
        select(CallRow.id).where(CallRow.caller_number == call.caller_number, CallRow.started_at > call.started_at,
                                 CallRow.id != call.id).limit(1)
    ):
        return "called back"
    suffix, created, same = whatsapp_suffix(row.to_number), row.created_at, _same_customer(row.to_number)
    written = s.scalars(
        select(WhatsAppInboundRow.from_number).distinct()
        .where(WhatsAppInboundRow.received_at > created, WhatsAppInboundRow.from_number.endswith(suffix))
    )
    if any(map(same, written)):
        return "wrote on WhatsApp"
    # Sent (attempted, and accepted with a wamid) after the recovery was written.
    reached = s.scalars(
        select(OutboxRow.to_number).distinct()
        .join(OutboxDeliveryRow, OutboxDeliveryRow.outbox_id == OutboxRow.id)
        .where(OutboxRow.id != row.id, OutboxRow.wamid.is_not(None), OutboxDeliveryRow.last_attempt_at > created,
               OutboxRow.to_number.endswith(suffix))
    )
    if any(map(same, reached)):
        return "reached by another message"
    return None


def _recoveries_to(number: str) -> Any:
    """Recovery rows that may be to ``number`` (newest first); ``_same_customer`` tells those that are."""
    return (select(OutboxRow)
            .where(OutboxRow.purpose == RECOVERY_PURPOSE, OutboxRow.to_number.endswith(whatsapp_suffix(number)))
            .order_by(OutboxRow.id.desc()))


def _same_customer(number: str) -> Callable[[str], bool]:
    """Whether another number is the same WhatsApp customer as ``number`` (``521…``/``52…`` and the like)."""
    key = whatsapp_key(number)
    return lambda other: whatsapp_key(other) == key


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
