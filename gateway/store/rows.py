"""Turning rows into the plain dicts the API and the handoff payloads carry (one set, used by every module)."""
from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from gateway.store.schema import Base

#: What ``utc(None)`` gives: earlier than any time the store wrote.
NEVER = datetime.min.replace(tzinfo=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def utc(value: datetime | None) -> datetime:
    """SQLite hands datetimes back without their zone; everything we write is UTC. ``None`` → ``NEVER``."""
    if value is None:
        return NEVER
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    return None if value is None else utc(value).isoformat()


def columns(row: Base, exclude: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """Every column of ``row`` by name, datetimes as ISO 8601 strings."""
    out = {}
    for column in row.__table__.columns:
        if column.key in exclude:
            continue
        value = getattr(row, column.key)
        out[column.key] = iso(value) if isinstance(value, datetime) else value
    return out


def values(record: Any) -> dict[str, Any]:
    """The fields of a record dataclass, as keyword arguments for its row."""
    return asdict(record)
