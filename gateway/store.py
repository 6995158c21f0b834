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
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
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
    and_,
    or_,
    select,
    update,
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


class OutboxDeliveryRow(Base):
    """Delivery bookkeeping of one outbox message (a side table, so existing databases need no migration).

    ``in_doubt_since`` is written *before* each send attempt and cleared once the API answered;
    while it is set an earlier attempt may have reached the Cloud API, so the message is only
    re-sent after ``in_doubt_grace_s`` with no status webhook carrying its idempotency key.
    """

    __tablename__ = "outbox_delivery"

    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), primary_key=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    in_doubt_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_code: Mapped[int | None] = mapped_column(Integer)


class WhatsAppStatusRow(Base):
    """Every distinct status webhook (``wamid`` + ``status``), kept even before its message is known."""

    __tablename__ = "whatsapp_statuses"
    __table_args__ = (UniqueConstraint("wamid", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    wamid: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16))
    callback_data: Mapped[str | None] = mapped_column(String(512), index=True)
    recipient_id: Mapped[str | None] = mapped_column(String(32))
    timestamp: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    errors: Mapped[list[Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WhatsAppInboundRow(Base):
    """A message from a customer (deduplicated by its ``wamid``)."""

    __tablename__ = "whatsapp_inbound"
    __table_args__ = (UniqueConstraint("wamid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    wamid: Mapped[str] = mapped_column(String(128))
    from_number: Mapped[str] = mapped_column(String(32), index=True)
    type: Mapped[str] = mapped_column(String(32))
    text: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[str | None] = mapped_column(String(256))
    context_wamid: Mapped[str | None] = mapped_column(String(128))
    call_id: Mapped[str | None] = mapped_column(String(36), index=True)
    message: Mapped[dict[str, Any]] = mapped_column(JSON)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WhatsAppContactRow(Base):
    """Per customer number: when they last wrote to us (opens the 24-hour customer-service window)."""

    __tablename__ = "whatsapp_contacts"

    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_inbound_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsentRow(Base):
    """A customer's answer to "may we write to you on WhatsApp?"; the latest answer counts."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(32), index=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    method: Mapped[str] = mapped_column(String(16))  # dtmf | speech | policy
    call_id: Mapped[str | None] = mapped_column(ForeignKey("calls.id"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


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


# Outbox message statuses. Progress only moves forward: pending < sending < accepted (the API
# returned a wamid) < sent < delivered < read. "failed" is terminal, except that a later
# "delivered"/"read" proves the message reached the phone and wins; "failed" never
# overrides "delivered"/"read" (several devices may disagree, the phone that got it counts).
OUTBOX_PROGRESS = ("pending", "sending", "accepted", "sent", "delivered", "read")
WEBHOOK_STATUSES = ("sent", "delivered", "read", "failed")


def merge_message_status(current: str, incoming: str) -> str:
    """The status a message has after ``incoming`` arrives while it is ``current`` (idempotent, order-free)."""
    rank = {name: i for i, name in enumerate(OUTBOX_PROGRESS)}
    if incoming == "failed":
        return current if rank.get(current, -1) >= rank["delivered"] else "failed"
    if current == "failed":
        return incoming if rank[incoming] >= rank["delivered"] else "failed"
    return incoming if rank[incoming] > rank.get(current, -1) else current


@dataclass(frozen=True)
class OutboxClaim:
    """A message reserved for one sender until ``lease_until``."""

    id: int
    call_id: str
    idempotency_key: str
    purpose: str
    to_number: str
    payload: dict[str, Any]
    attempts: int
    lease_until: datetime


@dataclass(frozen=True)
class StatusUpdate:
    wamid: str
    status: str
    timestamp: datetime | None
    recipient_id: str | None = None
    callback_data: str | None = None
    errors: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class InboundRecord:
    wamid: str
    from_number: str
    type: str
    timestamp: datetime
    text: str | None
    payload: str | None
    context_wamid: str | None
    message: dict[str, Any]


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

    def consent(self, number: str) -> bool | None:
        """The number's latest consent answer, or None when it was never asked."""
        with self._sessions() as s:
            return s.scalar(
                select(ConsentRow.granted).where(ConsentRow.number == number).order_by(ConsentRow.id.desc()).limit(1)
            )

    def record_consent(self, number: str, *, granted: bool, method: str, call_id: str | None) -> None:
        now = utcnow()
        with self._tx() as s:
            s.add(ConsentRow(number=number, granted=granted, method=method, call_id=call_id, at=now))
            if call_id is not None:
                s.add(EventRow(call_id=call_id, type="consent", data={"granted": granted, "method": method}, at=now))

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

    # WhatsApp outbox delivery (gateway.whatsapp.outbox is the only caller)

    def claim_outbox_message(
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
        with self._tx() as s:
            rows = s.execute(
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
            ).all()
            for row, delivery in rows:
                if delivery is None:
                    delivery = OutboxDeliveryRow(outbox_id=row.id)
                    s.add(delivery)
                if row.status == "sending" and _aware(delivery.lease_until) > now:
                    continue  # another sender holds it
                if row.status == "pending" and delivery.next_attempt_at is not None and _aware(delivery.next_attempt_at) > now:
                    continue
                if delivery.in_doubt_since is not None:
                    if self._adopt_seen_attempt(s, row, delivery, now):
                        continue
                    since = max(_aware(delivery.in_doubt_since), listening_since or _aware(None))
                    settle_at = since + timedelta(seconds=in_doubt_grace_s)
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

    def _adopt_seen_attempt(self, s: Session, row: OutboxRow, delivery: OutboxDeliveryRow, now: datetime) -> bool:
        """An in-doubt attempt whose status webhook (carrying our key) arrived did reach WhatsApp: keep it."""
        seen = s.scalars(
            select(WhatsAppStatusRow).where(WhatsAppStatusRow.callback_data == row.idempotency_key).order_by(WhatsAppStatusRow.id)
        ).all()
        if not seen:
            return False
        row.wamid = row.wamid or seen[0].wamid
        row.status = merge_message_status("sending", "accepted")
        for status in seen:
            if status.wamid == row.wamid:
                row.status = merge_message_status(row.status, status.status)
        row.last_error = None if row.status != "failed" else row.last_error
        row.updated_at = now
        delivery.in_doubt_since = delivery.lease_until = delivery.next_attempt_at = None
        s.add(EventRow(call_id=row.call_id, type="whatsapp_reconciled", data={"wamid": row.wamid, "purpose": row.purpose}, at=now))
        return True

    def outbox_accepted(self, outbox_id: int, wamid: str, *, now: datetime) -> None:
        """The API returned ``wamid``; fold in status webhooks that may have arrived first."""
        with self._tx() as s:
            row, delivery = s.get(OutboxRow, outbox_id), s.get(OutboxDeliveryRow, outbox_id)
            if row.wamid is not None and row.wamid != wamid:
                # An earlier, in-doubt attempt was adopted meanwhile: this send was a duplicate.
                s.add(EventRow(call_id=row.call_id, type="whatsapp_duplicate_send", data={"kept": row.wamid, "extra": wamid}, at=now))
            else:
                row.wamid = wamid
            row.status = merge_message_status(row.status, "accepted") if row.status != "failed" else "accepted"
            for status in s.scalars(select(WhatsAppStatusRow).where(WhatsAppStatusRow.wamid == row.wamid).order_by(WhatsAppStatusRow.id)):
                row.status = merge_message_status(row.status, status.status)
            row.last_error, row.updated_at = None, now
            if delivery is not None:
                delivery.in_doubt_since = delivery.lease_until = delivery.next_attempt_at = None
                delivery.error_code = None
            s.add(EventRow(call_id=row.call_id, type="whatsapp_accepted", data={"wamid": row.wamid, "purpose": row.purpose}, at=now))

    def outbox_retry_later(
        self, outbox_id: int, *, now: datetime, next_attempt_at: datetime, error: str, error_code: int | None,
        in_doubt: bool, consume_attempt: bool = True,
    ) -> None:
        """Back to pending until ``next_attempt_at``; ``in_doubt`` keeps the attempt open for reconciliation."""
        with self._tx() as s:
            row, delivery = s.get(OutboxRow, outbox_id), s.get(OutboxDeliveryRow, outbox_id)
            if row.status != "sending":
                return  # settled meanwhile (e.g. adopted through a status webhook)
            row.status, row.last_error, row.updated_at = "pending", error, now
            if not consume_attempt:
                row.attempts = max(0, row.attempts - 1)
            delivery.lease_until, delivery.next_attempt_at, delivery.error_code = None, next_attempt_at, error_code
            if not in_doubt:
                delivery.in_doubt_since = None

    def outbox_failed(self, outbox_id: int, *, now: datetime, error: str, error_code: int | None, fallback: bool) -> None:
        """Terminal: no further attempt. ``fallback`` records an event for another channel to pick up."""
        with self._tx() as s:
            row, delivery = s.get(OutboxRow, outbox_id), s.get(OutboxDeliveryRow, outbox_id)
            if row.status != "sending":
                return
            row.status, row.last_error, row.updated_at = "failed", error, now
            if delivery is not None:
                delivery.lease_until = delivery.next_attempt_at = delivery.in_doubt_since = None
                delivery.error_code = error_code
            data = {"purpose": row.purpose, "error": error, "code": error_code, "fallback": fallback}
            s.add(EventRow(call_id=row.call_id, type="whatsapp_failed", data=data, at=now))

    def whatsapp_delivery(self, outbox_id: int) -> dict[str, Any] | None:
        with self._sessions() as s:
            delivery = s.get(OutboxDeliveryRow, outbox_id)
            return None if delivery is None else _columns(delivery)

    def record_whatsapp_status(self, update_: StatusUpdate, *, now: datetime) -> bool:
        """Apply a status webhook; ``False`` for a duplicate (same wamid and status), which changes nothing."""
        with self._tx() as s:
            if s.scalar(select(WhatsAppStatusRow.id).where(WhatsAppStatusRow.wamid == update_.wamid, WhatsAppStatusRow.status == update_.status)):
                return False
            s.add(
                WhatsAppStatusRow(
                    wamid=update_.wamid, status=update_.status, callback_data=update_.callback_data,
                    recipient_id=update_.recipient_id, timestamp=update_.timestamp, errors=list(update_.errors), received_at=now,
                )
            )
            row = s.scalar(select(OutboxRow).where(OutboxRow.wamid == update_.wamid))
            if row is None and update_.callback_data:
                # The send's HTTP answer is late or lost (timeout, crash): our key identifies the message.
                row = s.scalar(select(OutboxRow).where(OutboxRow.idempotency_key == update_.callback_data, OutboxRow.wamid.is_(None)))
                if row is not None:
                    row.wamid = update_.wamid
            if row is None:
                return True  # kept; applied when the send's answer records the wamid
            before = row.status
            base = "accepted" if before in ("pending", "sending") else before
            row.status = merge_message_status(base, update_.status)
            if before in ("pending", "sending"):
                delivery = s.get(OutboxDeliveryRow, row.id)
                if delivery is not None:
                    delivery.in_doubt_since = delivery.lease_until = delivery.next_attempt_at = None
            if update_.status == "failed" and row.status == "failed":
                err = update_.errors[0] if update_.errors else {}
                row.last_error = f"{err.get('code', '?')}: {err.get('title') or err.get('message') or 'failed'}"
                s.add(
                    EventRow(
                        call_id=row.call_id, type="whatsapp_failed",
                        data={"purpose": row.purpose, "error": row.last_error, "code": err.get("code"), "fallback": err.get("code") == 131026},
                        at=now,
                    )
                )
            elif row.status in ("delivered", "read"):
                row.last_error = None
            row.updated_at = now
            return True

    def record_whatsapp_inbound(self, inbound: InboundRecord, *, now: datetime) -> tuple[bool, str | None]:
        """Store a customer's message and open their window: (new?, the call it answers). Duplicates change nothing."""
        with self._tx() as s:
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
            s.add(WhatsAppInboundRow(call_id=call_id, received_at=now, **_fields(inbound)))
            contact = s.get(WhatsAppContactRow, inbound.from_number)
            if contact is None:
                s.add(WhatsAppContactRow(number=inbound.from_number, last_inbound_at=inbound.timestamp))
            elif _aware(contact.last_inbound_at) < inbound.timestamp:
                contact.last_inbound_at = inbound.timestamp
            if call_id is not None:
                data = {"wamid": inbound.wamid, "type": inbound.type, "text": inbound.text, "payload": inbound.payload}
                s.add(EventRow(call_id=call_id, type="whatsapp_reply", data=data, at=now))
            return True, call_id

    def whatsapp_last_inbound(self, number: str) -> datetime | None:
        """When the customer last wrote to us; a phone call does not count (it opens no window)."""
        with self._sessions() as s:
            contact = s.get(WhatsAppContactRow, number)
            return None if contact is None else _aware(contact.last_inbound_at)

    def whatsapp_inbound(self, number: str | None = None) -> list[dict[str, Any]]:
        with self._sessions() as s:
            query = select(WhatsAppInboundRow).order_by(WhatsAppInboundRow.id)
            if number is not None:
                query = query.where(WhatsAppInboundRow.from_number == number)
            return [_columns(r) for r in s.scalars(query)]

    def whatsapp_statuses(self, wamid: str | None = None) -> list[dict[str, Any]]:
        with self._sessions() as s:
            query = select(WhatsAppStatusRow).order_by(WhatsAppStatusRow.id)
            if wamid is not None:
                query = query.where(WhatsAppStatusRow.wamid == wamid)
            return [_columns(r) for r in s.scalars(query)]

    def outbox_messages(self) -> list[dict[str, Any]]:
        with self._sessions() as s:
            return [_columns(m) for m in s.scalars(select(OutboxRow).order_by(OutboxRow.id))]



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


def _aware(value: datetime | None) -> datetime:
    """SQLite hands datetimes back without their zone; everything we write is UTC."""
    if value is None:
        return datetime.min.replace(tzinfo=timezone.utc)
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


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
