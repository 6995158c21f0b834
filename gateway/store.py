"""The context store: every call, utterance, decision, event and outbound message.

SQLAlchemy 2.0 on SQLite by default (WAL, so the HTTP API reads while calls write);
PostgreSQL through the same code by URL. All writes for one fact happen in one
transaction, and a routing decision and its outbound message are written together,
so a crash can never leave a decision without its message or the reverse.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class StoreError(Exception):
    """The database could not be opened or written; the message says why."""


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class CallRow(Base):
    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sip_call_id: Mapped[str] = mapped_column(String(255), index=True)
    from_uri: Mapped[str] = mapped_column(Text)
    to_uri: Mapped[str] = mapped_column(Text)
    line: Mapped[str] = mapped_column(String(64))
    caller_number: Mapped[str | None] = mapped_column(String(32))
    remote_address: Mapped[str] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(32))
    ended_by: Mapped[str | None] = mapped_column(String(16))
    end_reason: Mapped[str | None] = mapped_column(Text)
    asr_model: Mapped[str] = mapped_column(String(255))
    nlu_version: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    utterances: Mapped[list[UtteranceRow]] = relationship(order_by="UtteranceRow.seq")
    decisions: Mapped[list[DecisionRow]] = relationship(order_by="DecisionRow.seq")
    events: Mapped[list[EventRow]] = relationship(order_by="EventRow.id")
    messages: Mapped[list[OutboxRow]] = relationship(order_by="OutboxRow.id")


class UtteranceRow(Base):
    __tablename__ = "utterances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    start_ms: Mapped[int] = mapped_column(Integer)
    speech_end_ms: Mapped[int] = mapped_column(Integer)
    end_reason: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(8))
    language_probability: Mapped[float | None] = mapped_column(Float)
    no_speech_prob: Mapped[float | None] = mapped_column(Float)
    avg_logprob: Mapped[float | None] = mapped_column(Float)
    dropped: Mapped[str | None] = mapped_column(Text)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DecisionRow(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    utterance_seq: Mapped[int | None] = mapped_column(Integer)
    intent: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    route: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    ranking: Mapped[list[Any]] = mapped_column(JSON)
    nlu_version: Mapped[str] = mapped_column(String(255))
    timings: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxRow(Base):
    """A message waiting to be delivered; ``idempotency_key`` makes a retried write a no-op."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(32))
    to_number: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    wamid: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- values handed to the store ------------------------------------------------------


@dataclass(frozen=True)
class NewCall:
    call_id: str
    sip_call_id: str
    from_uri: str
    to_uri: str
    line: str
    caller_number: str | None
    remote_address: str
    asr_model: str
    nlu_version: str


@dataclass(frozen=True)
class UtteranceRecord:
    seq: int
    start_ms: int
    speech_end_ms: int
    end_reason: str
    text: str
    language: str | None
    language_probability: float | None
    no_speech_prob: float | None
    avg_logprob: float | None
    dropped: str | None
    timings: dict[str, float]


@dataclass(frozen=True)
class DecisionRecord:
    seq: int
    utterance_seq: int | None
    intent: str | None
    confidence: float | None
    route: str
    reason: str
    ranking: list[dict[str, Any]]
    nlu_version: str
    timings: dict[str, float]


@dataclass(frozen=True)
class OutboundMessage:
    purpose: str
    to_number: str
    payload: dict[str, Any]
    channel: str = "whatsapp"

    def idempotency_key(self, call_id: str) -> str:
        return f"{call_id}:{self.purpose}"


# --- the store -----------------------------------------------------------------------


class Store:
    """Synchronous repository; the gateway calls it from one worker thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = _make_engine(url)
            Base.metadata.create_all(self.engine)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot open database {make_url(url).render_as_string(hide_password=True)}: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # writes

    def create_call(self, call: NewCall, state: str) -> None:
        now = utcnow()
        with self._tx() as s:
            s.add(
                CallRow(
                    id=call.call_id, sip_call_id=call.sip_call_id, from_uri=call.from_uri,
                    to_uri=call.to_uri, line=call.line, caller_number=call.caller_number,
                    remote_address=call.remote_address, state=state, asr_model=call.asr_model,
                    nlu_version=call.nlu_version, started_at=now,
                )
            )
            s.add(EventRow(call_id=call.call_id, type="call_started", data={"state": state}, at=now))

    def record_event(self, call_id: str, type_: str, data: dict[str, Any] | None = None, **call_fields: Any) -> None:
        """Append an event and update call columns (``state=…``, ``language=…``) in one transaction."""
        now = utcnow()
        with self._tx() as s:
            s.add(EventRow(call_id=call_id, type=type_, data=data or {}, at=now))
            if call_fields:
                row = s.get(CallRow, call_id)
                if row is None:
                    raise StoreError(f"unknown call {call_id}")
                for name, value in call_fields.items():
                    setattr(row, name, value)

    def record_utterance(self, call_id: str, utt: UtteranceRecord, **call_fields: Any) -> None:
        with self._tx() as s:
            s.add(UtteranceRow(call_id=call_id, created_at=utcnow(), **_fields(utt)))
            s.add(EventRow(call_id=call_id, type="utterance", data={"seq": utt.seq, "text": utt.text}, at=utcnow()))
            if call_fields:
                row = s.get(CallRow, call_id)
                for name, value in call_fields.items():
                    setattr(row, name, value)

    def record_decision(self, call_id: str, decision: DecisionRecord, message: OutboundMessage | None = None) -> None:
        """The decision and its outbound message commit together, or not at all."""
        now = utcnow()
        with self._tx() as s:
            s.add(DecisionRow(call_id=call_id, created_at=now, **_fields(decision)))
            s.add(
                EventRow(
                    call_id=call_id, type="decision",
                    data={"route": decision.route, "intent": decision.intent, "reason": decision.reason}, at=now,
                )
            )
            if message is not None:
                key = message.idempotency_key(call_id)
                exists = s.scalar(select(OutboxRow.id).where(OutboxRow.idempotency_key == key))
                if exists is None:
                    s.add(
                        OutboxRow(
                            call_id=call_id, idempotency_key=key, channel=message.channel,
                            purpose=message.purpose, to_number=message.to_number, payload=message.payload,
                            status="pending", attempts=0, created_at=now, updated_at=now,
                        )
                    )

    def end_call(self, call_id: str, *, outcome: str, ended_by: str, reason: str) -> None:
        now = utcnow()
        with self._tx() as s:
            row = s.get(CallRow, call_id)
            if row is None or row.ended_at is not None:
                return
            row.state, row.outcome, row.ended_by, row.end_reason, row.ended_at = "ended", outcome, ended_by, reason, now
            s.add(EventRow(call_id=call_id, type="call_ended", data={"outcome": outcome, "by": ended_by, "reason": reason}, at=now))

    def close_interrupted_calls(self, reason: str) -> int:
        """At start-up: calls left open by a crash are ended as ``interrupted`` (their data stays)."""
        now = utcnow()
        with self._tx() as s:
            rows = s.scalars(select(CallRow).where(CallRow.ended_at.is_(None))).all()
            for row in rows:
                outcome = "interrupted" if not row.decisions else _outcome_of_route(row.decisions[-1].route)
                row.state, row.outcome, row.ended_by, row.end_reason, row.ended_at = "ended", outcome, "gateway", reason, now
                s.add(EventRow(call_id=row.id, type="call_ended", data={"outcome": outcome, "by": "gateway", "reason": reason}, at=now))
            return len(rows)

    # reads

    def list_calls(self, *, limit: int = 50, sip_call_id: str | None = None) -> list[dict[str, Any]]:
        with self._sessions() as s:
            query = select(CallRow).order_by(CallRow.started_at.desc()).limit(limit)
            if sip_call_id is not None:
                query = query.where(CallRow.sip_call_id == sip_call_id)
            return [_call_summary(row) for row in s.scalars(query)]

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        with self._sessions() as s:
            row = s.get(CallRow, call_id)
            if row is None:
                return None
            record = _call_summary(row)
            record["utterances"] = [_columns(u, exclude={"id", "call_id"}) for u in row.utterances]
            record["decisions"] = [_columns(d, exclude={"id", "call_id"}) for d in row.decisions]
            record["events"] = [_columns(e, exclude={"id", "call_id"}) for e in row.events]
            record["messages"] = [_columns(m, exclude={"call_id"}) for m in row.messages]
            return record

    def pending_messages(self) -> list[dict[str, Any]]:
        with self._sessions() as s:
            rows = s.scalars(select(OutboxRow).where(OutboxRow.status == "pending").order_by(OutboxRow.id))
            return [_columns(m) for m in rows]


def _outcome_of_route(route: str) -> str:
    return {"whatsapp": "deflected", "voice": "voice"}.get(route, "interrupted")


def _call_summary(row: CallRow) -> dict[str, Any]:
    last = row.decisions[-1] if row.decisions else None
    return {
        "call_id": row.id,
        "sip_call_id": row.sip_call_id,
        "from_uri": row.from_uri,
        "to_uri": row.to_uri,
        "line": row.line,
        "caller_number": row.caller_number,
        "remote_address": row.remote_address,
        "state": row.state,
        "outcome": row.outcome,
        "language": row.language,
        "transcript": " ".join(u.text for u in row.utterances if u.text).strip(),
        "intent": last.intent if last else None,
        "confidence": last.confidence if last else None,
        "route": last.route if last else None,
        "reason": last.reason if last else None,
        "asr_model": row.asr_model,
        "nlu_version": row.nlu_version,
        "ended_by": row.ended_by,
        "end_reason": row.end_reason,
        "started_at": _iso(row.started_at),
        "ended_at": _iso(row.ended_at),
    }


def _columns(row: Base, exclude: set[str] = frozenset()) -> dict[str, Any]:
    out = {}
    for column in row.__table__.columns:
        if column.key in exclude:
            continue
        value = getattr(row, column.key)
        out[column.key] = _iso(value) if isinstance(value, datetime) else value
    return out


def _fields(record: Any) -> dict[str, Any]:
    return dict(record.__dict__)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite drops the zone; everything we write is UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat()


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine
