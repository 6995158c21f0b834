"""Self-service conversations: a customer number + the call that opened it, turn by turn.

Every customer turn is committed in ONE transaction: the inbound message, the steps taken, the
conversation's new state and variables, the outbound messages (through the outbox, idempotency key
``conv:{id}:step:{n}``) and, on a handoff, the handoff record with its payload. A crash therefore
never leaves a state change without its message or the reverse.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.store.database import Database
from gateway.store.outbox import enqueue
from gateway.store.records import Conversation, OutboundMessage, Turn
from gateway.store.rows import columns, iso, utc
from gateway.store.schema import (
    CallRow,
    ConversationMediaRow,
    ConversationMessageRow,
    ConversationRow,
    ConversationStepRow,
    DecisionRow,
    HandoffRow,
    OutboxRow,
    UtteranceRow,
    WhatsAppInboundRow,
)

#: The outbox purpose of the messages a flow sends.
OUTBOX_PURPOSE = "flow"


class Conversations:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- one turn --------------------------------------------------------------------

    async def open(self, call_id: str, number: str, *, now: datetime, default_language: str = "es") -> Conversation | None:
        """The conversation of (call, number), created on first use from the context of the call's deflection
        or recovery message;
        ``None`` when the call is unknown."""
        def write(s: Session) -> Conversation | None:
            row = s.scalar(select(ConversationRow).where(ConversationRow.call_id == call_id, ConversationRow.number == number))
            created = row is None
            if row is None:
                call = s.get(CallRow, call_id)
                if call is None:
                    return None
                context = _call_context(s, call)
                language = str(context.get("language") or call.language or default_language).split("_")[0].lower()
                row = ConversationRow(
                    id=str(uuid.uuid4()), call_id=call_id, number=number, intent=context.get("intent"), language=language,
                    flow=context.get("flow"), status="new", step=None, variables={}, context=context, out_seq=0, step_seq=0,
                    invalid_count=0, created_at=now, updated_at=now,
                )
                s.add(row)
            return Conversation(
                id=row.id, call_id=row.call_id, number=row.number, intent=row.intent, language=row.language, flow=row.flow,
                status=row.status, step=row.step, variables=dict(row.variables or {}), context=dict(row.context or {}),
                out_seq=row.out_seq, step_seq=row.step_seq, invalid_count=row.invalid_count, resolution=row.resolution,
                handoff_reason=row.handoff_reason, csat=row.csat, created=created,
            )

        return await self._db.write(write)

    async def commit_turn(self, turn: Turn) -> int | None:
        """Write everything the turn did in one transaction; returns the new handoff's id, if any."""
        c, now = turn.conversation, turn.now

        def write(s: Session) -> int | None:
            row = s.get(ConversationRow, c.id)
            if turn.inbound is not None:
                s.add(ConversationMessageRow(conversation_id=c.id, direction="in", at=now, **turn.inbound))
            for step in turn.steps:
                s.add(ConversationStepRow(conversation_id=c.id, at=now, **step))
            for media in turn.media:
                if s.scalar(select(ConversationMediaRow.id).where(ConversationMediaRow.wamid == media["wamid"])) is None:
                    s.add(ConversationMediaRow(conversation_id=c.id, at=now, **media))
            for out in turn.outbound:
                key, payload = out["idempotency_key"], out["payload"]
                message = OutboundMessage(purpose=OUTBOX_PURPOSE, to_number=c.number, payload=payload)
                enqueue(s, call_id=c.call_id, message=message, now=now, key=key)
                s.add(ConversationMessageRow(
                    conversation_id=c.id, direction="out", type=payload["type"], text=out["text"], step=out["step"],
                    data={k: v for k, v in payload.items() if k not in ("type", "text")}, idempotency_key=key, at=now,
                ))
            row.flow, row.status, row.step, row.variables = c.flow, c.status, c.step, dict(c.variables)
            row.out_seq, row.step_seq, row.invalid_count, row.csat = c.out_seq, c.step_seq, c.invalid_count, c.csat
            row.resolution, row.handoff_reason, row.updated_at = c.resolution, c.handoff_reason, now
            if turn.resolved and row.resolved_at is None:
                row.resolved_at = now
            if turn.closed and row.closed_at is None:
                row.closed_at = now
            if turn.handoff_reason is None:
                return None
            row.handoff_at = now
            handoff = HandoffRow(conversation_id=c.id, reason=turn.handoff_reason, payload={}, status="pending",
                                 attempts=0, created_at=now)
            s.add(handoff)
            s.flush()  # the payload names the handoff's id
            handoff.payload = _handoff_payload(s, row, turn.handoff_reason, handoff.id)
            return handoff.id

        return await self._db.write(write)

    async def handled(self, wamid: str) -> bool:
        """Whether a turn already answered the customer message ``wamid``."""
        def read(s: Session) -> bool:
            return s.scalar(select(ConversationMessageRow.id).where(ConversationMessageRow.wamid == wamid)) is not None

        return await self._db.read(read)

    async def unhandled_inbound(self, *, since: datetime) -> list[dict[str, Any]]:
        """Customer messages of known calls received since ``since`` that no turn handled (a crash in between)."""
        def read(s: Session) -> list[dict[str, Any]]:
            handled = select(ConversationMessageRow.wamid).where(ConversationMessageRow.wamid.is_not(None))
            rows = s.scalars(
                select(WhatsAppInboundRow).where(WhatsAppInboundRow.call_id.is_not(None), WhatsAppInboundRow.received_at >= since,
                                                 WhatsAppInboundRow.wamid.not_in(handled)).order_by(WhatsAppInboundRow.id)
            ).all()
            return [columns(r) for r in rows]

        return await self._db.read(read)

    # --- handoff delivery bookkeeping --------------------------------------------------

    async def handoff(self, handoff_id: int) -> dict[str, Any] | None:
        def read(s: Session) -> dict[str, Any] | None:
            row = s.get(HandoffRow, handoff_id)
            return None if row is None else columns(row)

        return await self._db.read(read)

    async def handoff_attempted(
        self, handoff_id: int, *, now: datetime, ok: bool, error: str | None, response_status: int | None,
        status: str, next_attempt_at: datetime | None = None,
    ) -> None:
        def write(s: Session) -> None:
            row = s.get(HandoffRow, handoff_id)
            row.attempts += 1
            row.status, row.last_error, row.response_status, row.next_attempt_at = status, error, response_status, next_attempt_at
            if ok:
                row.delivered_at = now

        await self._db.write(write)

    async def handoff_not_configured(self, handoff_id: int) -> None:
        def write(s: Session) -> None:
            s.get(HandoffRow, handoff_id).status = "not_configured"

        await self._db.write(write)

    async def due_handoffs(self, *, now: datetime, max_attempts: int, include_pending: bool = False) -> list[int]:
        """Failed handoffs due for another attempt; ``include_pending`` (at start-up) adds those a crash left pending."""
        statuses = ("failed", "pending") if include_pending else ("failed",)

        def read(s: Session) -> list[int]:
            rows = s.scalars(select(HandoffRow).where(HandoffRow.status.in_(statuses), HandoffRow.attempts < max_attempts)
                             .order_by(HandoffRow.id)).all()
            return [r.id for r in rows if utc(r.next_attempt_at) <= now]

        return await self._db.read(read)

    # --- reads -----------------------------------------------------------------------

    async def get(self, conversation_id: str) -> dict[str, Any] | None:
        def read(s: Session) -> dict[str, Any] | None:
            row = s.get(ConversationRow, conversation_id)
            return None if row is None else _record(s, row, full=True)

        return await self._db.read(read)

    async def list(
        self, *, limit: int = 50, number: str | None = None, call_id: str | None = None, status: str | None = None,
    ) -> list[dict[str, Any]]:
        def read(s: Session) -> list[dict[str, Any]]:
            query = select(ConversationRow).order_by(ConversationRow.created_at.desc(), ConversationRow.id).limit(limit)
            if number is not None:
                query = query.where(ConversationRow.number == number)
            if call_id is not None:
                query = query.where(ConversationRow.call_id == call_id)
            if status is not None:
                query = query.where(ConversationRow.status == status)
            return [_record(s, row, full=False) for row in s.scalars(query)]

        return await self._db.read(read)



def _call_context(s: Session, call: CallRow) -> dict[str, Any]:
    """The context the call's latest message carried (a deflection's, a recovery's or a documents link's: each
    quotes it; a flow's messages carry none), the one the customer answers; the call's own rows fill what it lacks."""
    context: dict[str, Any] = {}
    for message in s.scalars(select(OutboxRow).where(OutboxRow.call_id == call.id).order_by(OutboxRow.id.desc())):
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
    started, ended = utc(call.started_at), (utc(call.ended_at) if call.ended_at else None)
    decisions = list(s.scalars(select(DecisionRow).where(DecisionRow.call_id == call.id).order_by(DecisionRow.seq)))
    utterances = list(s.scalars(select(UtteranceRow).where(UtteranceRow.call_id == call.id).order_by(UtteranceRow.seq)))
    last = decisions[-1] if decisions else None
    return {
        "started_at": iso(call.started_at),
        "ended_at": iso(call.ended_at),
        "duration_s": round((ended - started).total_seconds(), 3) if ended else None,
        "decided_at": iso(last.created_at) if last else None,
        "time_to_decision_s": round((utc(last.created_at) - started).total_seconds(), 3) if last else None,
        "outcome": call.outcome,
        "decisions": [{"seq": d.seq, "intent": d.intent, "confidence": d.confidence, "route": d.route, "reason": d.reason,
                       "timings": d.timings, "at": iso(d.created_at)} for d in decisions],
        "utterances": [{"seq": u.seq, "text": u.text, "start_ms": u.start_ms, "speech_end_ms": u.speech_end_ms, "timings": u.timings}
                       for u in utterances],
    }


def _chat(s: Session, conversation_id: str) -> list[dict[str, Any]]:
    rows = s.scalars(select(ConversationMessageRow).where(ConversationMessageRow.conversation_id == conversation_id)
                     .order_by(ConversationMessageRow.id))
    out = []
    for m in rows:
        item = {"direction": m.direction, "type": m.type, "text": m.text, "step": m.step, "at": iso(m.at)}
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
        "conversation": {"created_at": iso(row.created_at), "handoff_at": iso(row.handoff_at)},
        "chat": _chat(s, row.id),
        "media": [columns(m, exclude={"id", "conversation_id"}) for m in media],
    }


def _record(s: Session, row: ConversationRow, *, full: bool) -> dict[str, Any]:
    created = utc(row.created_at)
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
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "resolved_at": iso(row.resolved_at),
        "handoff_at": iso(row.handoff_at),
        "closed_at": iso(row.closed_at),
        "handle_time_s": round((utc(end) - created).total_seconds(), 3) if end else None,
    }
    if not full:
        return record
    record["context"] = row.context
    record["variables"] = row.variables
    record["steps"] = [columns(r, exclude={"id", "conversation_id"}) for r in s.scalars(
        select(ConversationStepRow).where(ConversationStepRow.conversation_id == row.id).order_by(ConversationStepRow.id))]
    messages = []
    for m in s.scalars(select(ConversationMessageRow).where(ConversationMessageRow.conversation_id == row.id).order_by(ConversationMessageRow.id)):
        item = columns(m, exclude={"id", "conversation_id"})
        if m.idempotency_key:
            outbox = s.scalar(select(OutboxRow).where(OutboxRow.idempotency_key == m.idempotency_key))
            if outbox is not None:
                item["status"], item["wamid"], item["last_error"] = outbox.status, outbox.wamid, outbox.last_error
        messages.append(item)
    record["messages"] = messages
    record["media"] = [columns(m, exclude={"id", "conversation_id"}) for m in s.scalars(
        select(ConversationMediaRow).where(ConversationMediaRow.conversation_id == row.id).order_by(ConversationMediaRow.id))]
    record["handoffs"] = [columns(h, exclude={"conversation_id"}) for h in s.scalars(
        select(HandoffRow).where(HandoffRow.conversation_id == row.id).order_by(HandoffRow.id))]
    call = s.get(CallRow, row.call_id)
    record["call"] = _call_timings(s, call) if call is not None else None
    return record
