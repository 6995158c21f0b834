"""What an agent sees when a call reaches them: the call's reason and words, its wait, and the customer's history."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.numbers import whatsapp_number
from gateway.store.database import Database
from gateway.store.rows import iso, utc
from gateway.store.schema import CallRow, ConversationMediaRow, ConversationRow, QueueWaitRow

#: Events that are the caller's own choices on the call (keys, answers to questions).
_CHOICES = ("dtmf", "consent", "consent_answer", "offer_made", "offer_answer", "offer_accepted", "offer_declined",
            "offer_ignored")


class CallContexts:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, call_id: str, *, now: datetime, history: int = 10) -> dict[str, Any] | None:
        """The agent's view of ``call_id``, or None for an unknown call; ``history`` contacts at most."""
        def read(s: Session) -> dict[str, Any] | None:
            call = s.get(CallRow, call_id)
            if call is None:
                return None
            last = call.decisions[-1] if call.decisions else None
            understood = next((d for d in reversed(call.decisions) if d.intent), None)
            wait = s.get(QueueWaitRow, call_id)
            return {
                "call_id": call.id, "caller_number": call.caller_number, "language": call.language,
                "state": call.state, "outcome": call.outcome, "started_at": iso(call.started_at),
                "intent": understood.intent if understood else None,
                "confidence": understood.confidence if understood else None,
                "reason": last.reason if last else None,
                "transcript": [{"seq": u.seq, "text": u.text, "language": u.language} for u in call.utterances if u.text],
                "dtmf": "".join(e.data.get("digit", "") for e in call.events if e.type == "dtmf"),
                "choices": [{"type": e.type, **e.data, "at": iso(e.at)} for e in call.events if e.type in _CHOICES],
                "queue": None if wait is None else _wait(wait, now),
                "documents": _documents(s, call),
                "history": _history(s, call, history),
            }

        return await self._db.read(read)


def _wait(row: QueueWaitRow, now: datetime) -> dict[str, Any]:
    until = row.answered_at or row.left_at
    return {
        "queue": row.queue, "priority": row.priority, "state": row.state, "agent_id": row.agent_id, "offers": row.offers,
        "holdout": row.holdout, "joined_at": iso(row.joined_at),
        "waited_s": round(((utc(until) if until else now) - utc(row.joined_at)).total_seconds(), 1),
    }


def _documents(s: Session, call: CallRow) -> list[dict[str, Any]]:
    """What the customer sent on WhatsApp in this call's conversations (the documents link, a deflection's chat)."""
    rows = s.scalars(
        select(ConversationMediaRow).join(ConversationRow, ConversationRow.id == ConversationMediaRow.conversation_id)
        .where(ConversationRow.call_id == call.id).order_by(ConversationMediaRow.id)
    )
    return [{"kind": m.kind, "media_id": m.media_id, "mime_type": m.mime_type, "caption": m.caption,
             "filename": m.filename, "at": iso(m.at)} for m in rows]


def _history(s: Session, call: CallRow, limit: int) -> list[dict[str, Any]]:
    """The customer's last contacts before this call, newest first, voice and WhatsApp together."""
    if not call.caller_number:
        return []
    calls = s.scalars(
        select(CallRow).where(CallRow.caller_number == call.caller_number, CallRow.id != call.id)
        .order_by(CallRow.started_at.desc()).limit(limit)
    ).all()
    numbers = {call.caller_number, call.caller_number.lstrip("+"), whatsapp_number(call.caller_number)}
    chats = s.scalars(
        select(ConversationRow).where(ConversationRow.number.in_(numbers)).order_by(ConversationRow.created_at.desc()).limit(limit)
    ).all()
    contacts = [
        {"channel": "voice", "call_id": c.id, "at": iso(c.started_at), "intent": next((d.intent for d in reversed(c.decisions) if d.intent), None),
         "route": c.decisions[-1].route if c.decisions else None, "outcome": c.outcome}
        for c in calls
    ] + [
        {"channel": "whatsapp", "conversation_id": c.id, "call_id": c.call_id, "at": iso(c.created_at), "intent": c.intent,
         "status": c.status, "outcome": c.resolution, "csat": c.csat}
        for c in chats
    ]
    return sorted(contacts, key=lambda c: c["at"] or "", reverse=True)[:limit]
