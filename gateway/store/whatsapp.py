"""WhatsApp webhooks as facts: message statuses, customers' messages, each customer's window, and the
events about the account (template status and quality, phone number, account updates)."""
from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.store.database import Database
from gateway.store.outbox import merge_message_status, record_failure, settle_delivery
from gateway.store.records import AccountEvent, InboundRecord, Ingested, StatusUpdate
from gateway.store.rows import utc, values
from gateway.store.schema import (
    EventRow,
    OutboxRow,
    WhatsAppAccountEventRow,
    WhatsAppContactRow,
    WhatsAppInboundRow,
    WhatsAppStatusRow,
)


class WhatsAppRecords:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def ingest(
        self, statuses: Sequence[StatusUpdate], inbound: Sequence[InboundRecord], *, now: datetime,
        fallback_codes: Collection[int] = (), events: Sequence[AccountEvent] = (),
    ) -> Ingested:
        """Apply one webhook body in one transaction; returns the customer messages (each with the call it
        answers) and the account events not seen before. Duplicates (a redelivered webhook) change nothing.
        A failed status whose error code is in ``fallback_codes`` is recorded as needing another channel."""
        def write(s: Session) -> Ingested:
            for status in statuses:
                _apply_status(s, status, now, fallback_codes)
            fresh = []
            for message in inbound:
                new, call_id = _apply_inbound(s, message, now)
                if new:
                    fresh.append((message, call_id))
            return Ingested(inbound=fresh, events=[e for e in events if _add_account_event(s, e)])

        return await self._db.write(write)

    async def last_inbound(self, number: str) -> datetime | None:
        """When the customer last wrote to us; a phone call does not count (it opens no window)."""
        def read(s: Session) -> datetime | None:
            contact = s.get(WhatsAppContactRow, number)
            return None if contact is None else utc(contact.last_inbound_at)

        return await self._db.read(read)

    async def account_events(self) -> list[AccountEvent]:
        """Every account event recorded, in the order received (what the account's state is rebuilt from at start)."""
        def read(s: Session) -> list[AccountEvent]:
            rows = s.scalars(select(WhatsAppAccountEventRow).order_by(WhatsAppAccountEventRow.id))
            return [
                AccountEvent(
                    field=row.field, account_id=row.account_id, value=row.value,
                    occurred_at=None if row.occurred_at is None else utc(row.occurred_at), received_at=utc(row.received_at),
                )
                for row in rows
            ]

        return await self._db.read(read)


def _add_account_event(s: Session, event: AccountEvent) -> bool:
    """Record ``event`` unless a delivery of it already was (earlier in this body too); returns whether it is new."""
    key = event.key
    if s.scalar(select(WhatsAppAccountEventRow.id).where(WhatsAppAccountEventRow.key == key)):
        return False
    s.add(WhatsAppAccountEventRow(
        key=key, field=event.field, account_id=event.account_id, value=event.value,
        occurred_at=event.occurred_at, received_at=event.received_at,
    ))
    return True


def _apply_status(s: Session, update: StatusUpdate, now: datetime, fallback_codes: Collection[int]) -> None:
    if s.scalar(select(WhatsAppStatusRow.id).where(WhatsAppStatusRow.wamid == update.wamid, WhatsAppStatusRow.status == update.status)):
        return  # a duplicate: same wamid and status
    s.add(
        WhatsAppStatusRow(
            wamid=update.wamid, status=update.status, callback_data=update.callback_data, recipient_id=update.recipient_id,
            timestamp=update.timestamp, errors=list(update.errors), received_at=now,
        )
    )
    row = s.scalar(select(OutboxRow).where(OutboxRow.wamid == update.wamid))
    if row is None and update.callback_data:
        # The send's HTTP answer is late or lost (timeout, crash): our key identifies the message.
        row = s.scalar(select(OutboxRow).where(OutboxRow.idempotency_key == update.callback_data, OutboxRow.wamid.is_(None)))
        if row is not None:
            row.wamid = update.wamid
    if row is None:
        return  # kept; applied when the send's answer records the wamid
    before = row.status
    row.status = merge_message_status("accepted" if before in ("pending", "sending") else before, update.status)
    if before in ("pending", "sending"):
        settle_delivery(s, row.id)
    if update.status == "failed" and row.status == "failed":
        err = update.errors[0] if update.errors else {}
        row.last_error = f"{err.get('code', '?')}: {err.get('title') or err.get('message') or 'failed'}"
        code = err.get("code")
        record_failure(s, row, now, error=row.last_error, code=code, fallback=code in fallback_codes)
    elif row.status in ("delivered", "read"):
        row.last_error = None
    row.updated_at = now


def _apply_inbound(s: Session, inbound: InboundRecord, now: datetime) -> tuple[bool, str | None]:
    """Store a customer's message and open their window: (new?, the call it answers)."""
    if s.scalar(select(WhatsAppInboundRow.id).where(WhatsAppInboundRow.wamid == inbound.wamid)):
        return False, None
    call_id = None
    if inbound.context_wamid:
        call_id = s.scalar(select(OutboxRow.call_id).where(OutboxRow.wamid == inbound.context_wamid))
    if call_id is None:  # a plain message: the latest conversation we started with this number
        call_id = s.scalar(
            select(OutboxRow.call_id).where(OutboxRow.to_number == inbound.from_number, OutboxRow.wamid.is_not(None))
            .order_by(OutboxRow.id.desc()).limit(1)
        )
    s.add(WhatsAppInboundRow(call_id=call_id, received_at=now, **values(inbound)))
    contact = s.get(WhatsAppContactRow, inbound.from_number)
    if contact is None:
        s.add(WhatsAppContactRow(number=inbound.from_number, last_inbound_at=inbound.timestamp))
    elif utc(contact.last_inbound_at) < inbound.timestamp:
        contact.last_inbound_at = inbound.timestamp
    if call_id is not None:
        data = {"wamid": inbound.wamid, "type": inbound.type, "text": inbound.text, "payload": inbound.payload}
        s.add(EventRow(call_id=call_id, type="whatsapp_reply", data=data, at=now))
    return True, call_id
