"""Test-only reads of the context store: rows the store keeps but does not hand out.

Plain synchronous functions on ``store.database.engine``, so sync tests call them directly and
async tests call them without awaiting (SQLite in WAL mode lets this reader run beside the
store's writer thread). Rows come back as ``gateway.store.rows.columns`` dicts.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.store import Store
from gateway.store.rows import columns
from gateway.store.schema import (
    Base,
    OutboxDeliveryRow,
    OutboxRow,
    WhatsAppInboundRow,
    WhatsAppStatusRow,
)


def outbox_messages(store: Store) -> list[dict[str, Any]]:
    """Every outbox row, oldest first."""
    return _rows(store, OutboxRow)


def whatsapp_delivery(store: Store, outbox_id: int) -> dict[str, Any] | None:
    """The delivery bookkeeping of one outbox message (``None`` before its first claim)."""
    with Session(store.database.engine) as s:
        row = s.get(OutboxDeliveryRow, outbox_id)
        return None if row is None else columns(row)


def whatsapp_inbound(store: Store, number: str | None = None) -> list[dict[str, Any]]:
    """Customers' messages, oldest first; only ``number``'s when given."""
    return _rows(store, WhatsAppInboundRow, None if number is None else WhatsAppInboundRow.from_number == number)


def whatsapp_statuses(store: Store, wamid: str | None = None) -> list[dict[str, Any]]:
    """Status webhooks as recorded, oldest first; only ``wamid``'s when given."""
    return _rows(store, WhatsAppStatusRow, None if wamid is None else WhatsAppStatusRow.wamid == wamid)


def _rows(store: Store, table: type[Base], where: Any = None) -> list[dict[str, Any]]:
    query = select(table).order_by(table.id)
    if where is not None:
        query = query.where(where)
    with Session(store.database.engine) as s:
        return [columns(row) for row in s.scalars(query)]
