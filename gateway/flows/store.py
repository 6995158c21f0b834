"""Conversation tables and their transactions (same database as the context store; ``gateway.store.Base``).

A conversation is one customer number + the call that opened it. Every customer turn is
committed in ONE transaction: the inbound message, the steps taken, the conversation's new
state and variables, the outbound messages as ``outbox`` rows (idempotency key
``conv:{id}:step:{n}``) and, on a handoff, the handoff record with its payload. A crash
therefore never leaves a state change without its message or the reverse.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from gateway.store import (
    Base,
    CallRow,
    DecisionRow,
    OutboxRow,
    Store,
    UtteranceRow,
    WhatsAppInboundRow,
    _aware,
    _columns,
    _iso,
)

OUTBOX_PURPOSE = "flow"


class ConversationRow(Base):
    __tablename__ = "conversations"
    __table_args__ = (UniqueConstraint("call_id", "number"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id"), index=True)
    number: Mapped[str] = mapped_column(String(32), index=True)
    intent: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8))
    flow: Mapped[str | None] = mapped_column(String(64))
    # new → active → (awaiting_csat →) closed | handoff
    status: Mapped[str] = mapped_column(String(16))
    step: Mapped[str | None] = mapped_column(String(64))
    resolution: Mapped[str | None] = mapped_column(String(32))  # resolved | handoff
    handoff_reason: Mapped[str | None] = mapped_column(Text)
    csat: Mapped[int | None] = mapped_column(Integer)
    variables: Mapped[dict[str, Any]] = mapped_column(JSON)
    context: Mapped[dict[str, Any]] = mapped_column(JSON)  # the call context of the deflection message
    out_seq: Mapped[int] = mapped_column(Integer, default=0)
    step_seq: Mapped[int] = mapped_column(Integer, default=0)
    invalid_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    handoff_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ConversationMessageRow(Base):
    __tablename__ = "conversation_messages"
    __table_args__ = (UniqueConstraint("wamid"),)  # a customer message is handled once (NULL for ours)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    direction: Mapped[str] = mapped_column(String(4))  # in | out
    type: Mapped[str] = mapped_column(String(32))
    text: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)  # payload id, buttons, media…
    step: Mapped[str | None] = mapped_column(String(64))
    wamid: Mapped[str | None] = mapped_column(String(128))  # inbound
    idempotency_key: Mapped[str | None] = mapped_column(String(128))  # outbound: the outbox row
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConversationStepRow(Base):
    __tablename__ = "conversation_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    step: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConversationMediaRow(Base):
    """A reference to a file the customer sent (the media id the Cloud API downloads; not the bytes)."""

    __tablename__ = "conversation_media"
    __table_args__ = (UniqueConstraint("wamid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    wamid: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    media_id: Mapped[str] = mapped_column(String(128))
    mime_type: Mapped[str | None] = mapped_column(String(128))
    sha256: Mapped[str | None] = mapped_column(String(128))
    caption: Mapped[str | None] = mapped_column(Text)
    filename: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HandoffRow(Base):
    """A handoff to a human chat agent and the delivery of its webhook (recorded even when delivery fails)."""

    __tablename__ = "conversation_handoffs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    # pending → delivered | failed (retried in the background) | not_configured (no webhook URL)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    response_status: Mapped[int | None] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


TABLES = [t.__table__ for t in (ConversationRow, ConversationMessageRow, ConversationStepRow, ConversationMediaRow, HandoffRow)]


# --- what one turn changes -----------------------------------------------------------


@dataclass
class Conversation:
    """A conversation's state while a turn is computed (a plain copy of its row)."""

    id: str
    call_id: str
    number: str
    intent: str | None
    language: str
    flow: str | None
    status: str
    step: str | None
    variables: dict[str, Any]
    context: dict[str, Any]
    out_seq: int
    step_seq: int
    invalid_count: int
    resolution: str | None = None
    handoff_reason: str | None = None
    csat: int | None = None
    created: bool = False


@dataclass
class Turn:
    conversation: Conversation
    now: datetime
    inbound: dict[str, Any] | None = None
    outbound: list[dict[str, Any]] = field(default_factory=list)  # {"payload", "step", "text", "type"}
    steps: list[dict[str, Any]] = field(default_factory=list)
    media: list[dict[str, Any]] = field(default_factory=list)
    handoff_reason: str | None = None
    resolved: bool = False
    closed: bool = False


class ConversationStore:
    """Sync; run it on the ``AsyncStore`` thread (``await store.run(conversations.method, …)``)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        Base.metadata.create_all(store.engine, tables=TABLES)  # the tables exist whatever was imported first
        self._sessions = sessionmaker(store.engine, expire_on_commit=False)

    # --- turn ------------------------------------------------------------------------

    def open(self, call_id: str, number: str, *, now: datetime, default_language: str = "es") -> Conversation | None:
        """The conversation of (call, number), created from the call's deflection context on first use."""
        with self._sessions.begin() as s:
            row = s.scalar(select(ConversationRow).where(ConversationRow.call_id == call_id, ConversationRow.number == number))
            created = False
            if row is None:
                call = s.get(CallRow, call_id)
                if call is None:
                    return None
                context = _call_context(s, call)
                language = str(context.get("language") or call.language or default_language).split("_")[0].lower()
                row = ConversationRow(
                    id=str(uuid.uuid4()), call_id=call_id, number=number, intent=context.get("intent"), language=language,
                    flow=None, status="new", step=None, variables={}, context=context, out_seq=0, step_seq=0,
                    invalid_count=0, created_at=now, updated_at=now,
                )
                s.add(row)
                created = True
            return Conversation(
                id=row.id, call_id=row.call_id, number=row.number, intent=row.intent, language=row.language, flow=row.flow,
                status=row.status, step=row.step, variables=dict(row.variables or {}), context=dict(row.context or {}),
                out_seq=row.out_seq, step_seq=row.step_seq, invalid_count=row.invalid_count, resolution=row.resolution,
                handoff_reason=row.handoff_reason, csat=row.csat, created=created,
            )

    def commit_turn(self, turn: Turn) -> int | None:
        """Write everything the turn did in one transaction; returns the new handoff's id, if any."""
        c, now = turn.conversation, turn.now
        with self._sessions.begin() as s:
            row = s.get(ConversationRow, c.id)
            if turn.inbound is not None:
                s.add(ConversationMessageRow(conversation_id=c.id, direction="in", at=now, **turn.inbound))
            for step in turn.steps:
                s.add(ConversationStepRow(conversation_id=c.id, at=now, **step))
            for media in turn.media:
                if s.scalar(select(ConversationMediaRow.id).where(ConversationMediaRow.wamid == media["wamid"])) is None:
                    s.add(ConversationMediaRow(conversation_id=c.id, at=now, **media))
            for out in turn.outbound:
                key = out["idempotency_key"]
                if s.scalar(select(OutboxRow.id).where(OutboxRow.idempotency_key == key)) is None:
                    s.add(OutboxRow(
                        call_id=c.call_id, idempotency_key=key, channel="whatsapp", purpose=OUTBOX_PURPOSE, to_number=c.number,
                        payload=out["payload"], status="pending", attempts=0, created_at=now, updated_at=now,
                    ))
                s.add(ConversationMessageRow(
                    conversation_id=c.id, direction="out", type=out["payload"]["type"], text=out["text"], step=out["step"],
                    data={k: v for k, v in out["payload"].items() if k not in ("type", "text")}, idempotency_key=key, at=now,
                ))
            row.flow, row.status, row.step, row.variables = c.flow, c.status, c.step, dict(c.variables)
            row.out_seq, row.step_seq, row.invalid_count, row.csat = c.out_seq, c.step_seq, c.invalid_count, c.csat
            row.resolution, row.handoff_reason, row.updated_at = c.resolution, c.handoff_reason, now
            if turn.resolved and row.resolved_at is None:
                row.resolved_at = now
            if turn.closed and row.closed_at is None:
                row.closed_at = now
            handoff_id = None
            if turn.handoff_reason is not None:
                row.handoff_at = now
                s.flush()
                handoff = HandoffRow(conversation_id=c.id, reason=turn.handoff_reason, payload={}, status="pending",
                                     attempts=0, created_at=now)
                s.add(handoff)
                s.flush()
                handoff.payload = _handoff_payload(s, row, turn.handoff_reason, handoff.id)
                handoff_id = handoff.id
            return handoff_id

    def handled(self, wamid: str) -> bool:
        with self._sessions() as s:
            return s.scalar(select(ConversationMessageRow.id).where(ConversationMessageRow.wamid == wamid)) is not None

    def unhandled_inbound(self, *, since: datetime) -> list[dict[str, Any]]:
        """Customer messages of known calls received since ``since`` that no turn handled (a crash in between)."""
        with self._sessions() as s:
            handled = select(ConversationMessageRow.wamid).where(ConversationMessageRow.wamid.is_not(None))
            rows = s.scalars(
                select(WhatsAppInboundRow).where(WhatsAppInboundRow.call_id.is_not(None), WhatsAppInboundRow.received_at >= since,
                                                 WhatsAppInboundRow.wamid.not_in(handled)).order_by(WhatsAppInboundRow.id)
            ).all()
            return [_columns(r) for r in rows]

    # --- handoff delivery bookkeeping --------------------------------------------------

    def handoff(self, handoff_id: int) -> dict[str, Any] | None:
        with self._sessions() as s:
            row = s.get(HandoffRow, handoff_id)
            return None if row is None else _columns(row)

    def handoff_attempted(self, handoff_id: int, *, now: datetime, ok: bool, error: str | None, response_status: int | None,
                          status: str, next_attempt_at: datetime | None = None) -> None:
        with self._sessions.begin() as s:
            row = s.get(HandoffRow, handoff_id)
            row.attempts += 1
            row.status, row.last_error, row.response_status, row.next_attempt_at = status, error, response_status, next_attempt_at
            if ok:
                row.delivered_at = now

    def handoff_not_configured(self, handoff_id: int) -> None:
        with self._sessions.begin() as s:
            s.get(HandoffRow, handoff_id).status = "not_configured"

    def due_handoffs(self, *, now: datetime, max_attempts: int, include_pending: bool = False) -> list[int]:
        """Failed handoffs due for another attempt; ``include_pending`` (at start-up) adds those a crash left pending."""
        statuses = ("failed", "pending") if include_pending else ("failed",)
        with self._sessions() as s:
            rows = s.scalars(select(HandoffRow).where(HandoffRow.status.in_(statuses), HandoffRow.attempts < max_attempts)
                             .order_by(HandoffRow.id)).all()
            return [r.id for r in rows if r.next_attempt_at is None or _aware(r.next_attempt_at) <= now]

    # --- reads -----------------------------------------------------------------------

    def get(self, conversation_id: str) -> dict[str, Any] | None:
        with self._sessions() as s:
            row = s.get(ConversationRow, conversation_id)
            return None if row is None else _record(s, row, full=True)

    def list(self, *, limit: int = 50, number: str | None = None, call_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        with self._sessions() as s:
            query = select(ConversationRow).order_by(ConversationRow.created_at.desc(), ConversationRow.id).limit(limit)
            if number is not None:
                query = query.where(ConversationRow.number == number)
            if call_id is not None:
                query = query.where(ConversationRow.call_id == call_id)
            if status is not None:
                query = query.where(ConversationRow.status == status)
            return [_record(s, row, full=False) for row in s.scalars(query)]


# --- helpers (inside a session) ----------------------------------------------------------


def _call_context(s: Session, call: CallRow) -> dict[str, Any]:
    """The context the deflection message carried; the call's own rows fill what it lacks."""
    context: dict[str, Any] = {}
    for message in s.scalars(select(OutboxRow).where(OutboxRow.call_id == call.id).order_by(OutboxRow.id)):
        if isinstance(message.payload, dict) and isinstance(message.payload.get("context"), dict):
            context = dict(message.payload["context"])
            break
    last = call.decisions[-1] if call.decisions else None
    context.setdefault("call_id", call.id)
    context.setdefault("sip_call_id", call.sip_call_id)
    context.setdefault("line", call.line)
    if not context.get("language"):
        context["language"] = call.language
    if not context.get("intent") and last is not None:
        context["intent"] = last.intent
    if not context.get("transcript"):
        context["transcript"] = " ".join(u.text for u in call.utterances if u.text).strip()
    context.setdefault("dtmf", "")
    return context


def _call_timings(s: Session, call: CallRow) -> dict[str, Any]:
    started, ended = _aware(call.started_at), (_aware(call.ended_at) if call.ended_at else None)
    decisions = list(s.scalars(select(DecisionRow).where(DecisionRow.call_id == call.id).order_by(DecisionRow.seq)))
    utterances = list(s.scalars(select(UtteranceRow).where(UtteranceRow.call_id == call.id).order_by(UtteranceRow.seq)))
    last = decisions[-1] if decisions else None
    return {
        "started_at": _iso(call.started_at),
        "ended_at": _iso(call.ended_at),
        "duration_s": round((ended - started).total_seconds(), 3) if ended else None,
        "decided_at": _iso(last.created_at) if last else None,
        "time_to_decision_s": round((_aware(last.created_at) - started).total_seconds(), 3) if last else None,
        "outcome": call.outcome,
        "decisions": [{"seq": d.seq, "intent": d.intent, "confidence": d.confidence, "route": d.route, "reason": d.reason,
                       "timings": d.timings, "at": _iso(d.created_at)} for d in decisions],
        "utterances": [{"seq": u.seq, "text": u.text, "start_ms": u.start_ms, "speech_end_ms": u.speech_end_ms, "timings": u.timings}
                       for u in utterances],
    }


def _chat(s: Session, conversation_id: str) -> list[dict[str, Any]]:
    rows = s.scalars(select(ConversationMessageRow).where(ConversationMessageRow.conversation_id == conversation_id)
                     .order_by(ConversationMessageRow.id))
    out = []
    for m in rows:
        item = {"direction": m.direction, "type": m.type, "text": m.text, "step": m.step, "at": _iso(m.at)}
        if m.data:
            item["data"] = m.data
        if m.wamid:
            item["wamid"] = m.wamid
        out.append(item)
    return out


def _handoff_payload(s: Session, row: ConversationRow, reason: str, handoff_id: int) -> dict[str, Any]:
    call = s.get(CallRow, row.call_id)
    ctx = row.context or {}
    media = s.scalars(select(ConversationMediaRow).where(ConversationMediaRow.conversation_id == row.id).order_by(ConversationMediaRow.id))
    return {
        "event": "conversation.handoff",
        "handoff_id": handoff_id,
        "conversation_id": row.id,
        "call_id": row.call_id,
        "customer_number": row.number,
        "reason": reason,
        "intent": row.intent,
        "language": row.language,
        "transcript": ctx.get("transcript"),
        "dtmf": ctx.get("dtmf"),
        "line": ctx.get("line"),
        "confidence": ctx.get("confidence"),
        "flow": row.flow,
        "step": row.step,
        "variables": dict(row.variables or {}),
        "call": _call_timings(s, call) if call is not None else None,
        "conversation": {"created_at": _iso(row.created_at), "handoff_at": _iso(row.handoff_at)},
        "chat": _chat(s, row.id),
        "media": [_columns(m, exclude={"id", "conversation_id"}) for m in media],
    }


def _record(s: Session, row: ConversationRow, *, full: bool) -> dict[str, Any]:
    created = _aware(row.created_at)
    end = row.resolved_at or row.handoff_at
    record = {
        "conversation_id": row.id,
        "call_id": row.call_id,
        "number": row.number,
        "intent": row.intent,
        "language": row.language,
        "flow": row.flow,
        "status": row.status,
        "step": row.step,
        "resolution": row.resolution,
        "handoff_reason": row.handoff_reason,
        "csat": row.csat,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "resolved_at": _iso(row.resolved_at),
        "handoff_at": _iso(row.handoff_at),
        "closed_at": _iso(row.closed_at),
        "handle_time_s": round((_aware(end) - created).total_seconds(), 3) if end else None,
    }
    if not full:
        return record
    record["context"] = row.context
    record["variables"] = row.variables
    record["steps"] = [_columns(r, exclude={"id", "conversation_id"}) for r in s.scalars(
        select(ConversationStepRow).where(ConversationStepRow.conversation_id == row.id).order_by(ConversationStepRow.id))]
    messages = []
    for m in s.scalars(select(ConversationMessageRow).where(ConversationMessageRow.conversation_id == row.id).order_by(ConversationMessageRow.id)):
        item = _columns(m, exclude={"id", "conversation_id"})
        if m.idempotency_key:
            outbox = s.scalar(select(OutboxRow).where(OutboxRow.idempotency_key == m.idempotency_key))
            if outbox is not None:
                item["status"], item["wamid"], item["last_error"] = outbox.status, outbox.wamid, outbox.last_error
        messages.append(item)
    record["messages"] = messages
    record["media"] = [_columns(m, exclude={"id", "conversation_id"}) for m in s.scalars(
        select(ConversationMediaRow).where(ConversationMediaRow.conversation_id == row.id).order_by(ConversationMediaRow.id))]
    record["handoffs"] = [_columns(h, exclude={"conversation_id"}) for h in s.scalars(
        select(HandoffRow).where(HandoffRow.conversation_id == row.id).order_by(HandoffRow.id))]
    call = s.get(CallRow, row.call_id)
    record["call"] = _call_timings(s, call) if call is not None else None
    return record
