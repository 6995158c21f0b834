"""Call records: a call, what was heard and decided on it, its events, and its end (with the recovery
message an abandoned call may schedule)."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.store.database import Database, StoreError
from gateway.store.outbox import cancel_unsent_recoveries, enqueue, recent_recovery
from gateway.store.records import (
    DecisionRecord,
    NewCall,
    OutboundMessage,
    Recovery,
    UtteranceRecord,
)
from gateway.store.rows import columns, iso, utcnow, values
from gateway.store.schema import CallRow, DecisionRow, EventRow, QueueWaitRow, UtteranceRow

#: What a call left open by a crash became, by the route of its last decision.
_OUTCOME_OF_ROUTE = {"whatsapp": "deflected", "voice": "voice"}


class Calls:
    def __init__(self, db: Database) -> None:
        self._db = db

    # --- writes --------------------------------------------------------------------------

    async def create(self, call: NewCall, state: str) -> None:
        def write(s: Session) -> None:
            now = utcnow()
            s.add(CallRow(id=call.call_id, state=state, started_at=now, **_call_columns(call)))
            s.add(EventRow(call_id=call.call_id, type="call_started", data={"state": state}, at=now))

        await self._db.write(write)

    async def record_event(
        self, call_id: str, type_: str, data: dict[str, Any] | None = None, *,
        state: str | None = None, language: str | None = None,
    ) -> None:
        """Append an event; ``state``/``language`` also update the call, in the same transaction."""
        def write(s: Session) -> None:
            s.add(EventRow(call_id=call_id, type=type_, data=data or {}, at=utcnow()))
            _update_call(s, call_id, state=state, language=language)

        await self._db.write(write)

    async def record_utterance(self, call_id: str, utterance: UtteranceRecord, *, language: str | None = None) -> None:
        def write(s: Session) -> None:
            now = utcnow()
            s.add(UtteranceRow(call_id=call_id, created_at=now, **values(utterance)))
            s.add(EventRow(call_id=call_id, type="utterance", data={"seq": utterance.seq, "text": utterance.text}, at=now))
            _update_call(s, call_id, language=language)

        await self._db.write(write)

    async def record_decision(self, call_id: str, decision: DecisionRecord, message: OutboundMessage | None = None) -> None:
        """The decision and its outbound message commit together, or not at all."""
        def write(s: Session) -> None:
            now = utcnow()
            s.add(DecisionRow(call_id=call_id, created_at=now, **values(decision)))
            data = {"route": decision.route, "intent": decision.intent, "reason": decision.reason}
            s.add(EventRow(call_id=call_id, type="decision", data=data, at=now))
            if message is not None:
                enqueue(s, call_id=call_id, message=message, now=now)

        await self._db.write(write)

    async def record_message(self, call_id: str, message: OutboundMessage, *, event: str, data: dict[str, Any]) -> bool:
        """Queue ``message`` for a live call with its event, in one transaction; False (and no event) when the
        call already has a message of that purpose."""
        def write(s: Session) -> bool:
            now = utcnow()
            if not enqueue(s, call_id=call_id, message=message, now=now):
                return False
            s.add(EventRow(call_id=call_id, type=event, data=data, at=now))
            return True

        return await self._db.write(write)

    async def end(self, call_id: str, *, outcome: str, ended_by: str, reason: str, recovery: Recovery | None = None) -> None:
        """End the call; ``recovery`` (an abandoned call) is scheduled in the same transaction (event
        ``recovery_scheduled``), unless a recovery to the number that may have been sent was written within
        its window (event ``recovery_skipped``). One still waiting is cancelled: this call was a call back."""
        def write(s: Session) -> None:
            row = s.get(CallRow, call_id)
            if row is not None and row.ended_at is None:
                now = _close(s, row, outcome=outcome, ended_by=ended_by, reason=reason)
                if recovery is not None:
                    _schedule_recovery(s, call_id, recovery, now)

        await self._db.write(write)

    async def recover(self, call_id: str, recovery: Recovery) -> None:
        """Schedule ``recovery`` for a call that has already ended (a wait a restart cut short), by the
        same window and call-back rules as :meth:`end`."""
        def write(s: Session) -> None:
            _schedule_recovery(s, call_id, recovery, utcnow())

        await self._db.write(write)

    async def close_interrupted(self, reason: str) -> int:
        """At start-up: calls left open by a crash are ended (their data stays); returns how many."""
        def write(s: Session) -> int:
            rows = s.scalars(select(CallRow).where(CallRow.ended_at.is_(None))).all()
            for row in rows:
                route = row.decisions[-1].route if row.decisions else None
                wait = s.get(QueueWaitRow, row.id)
                if wait is not None and wait.left_at is None:
                    route = None  # cut off while waiting in a queue, or talking to its agent
                _close(s, row, outcome=_OUTCOME_OF_ROUTE.get(route, "interrupted"), ended_by="gateway", reason=reason)
            return len(rows)

        return await self._db.write(write)

    # --- reads ---------------------------------------------------------------------------

    async def list(self, *, limit: int = 50, sip_call_id: str | None = None) -> list[dict[str, Any]]:
        """Newest first, as summaries."""
        def read(s: Session) -> list[dict[str, Any]]:
            query = select(CallRow).order_by(CallRow.started_at.desc()).limit(limit)
            if sip_call_id is not None:
                query = query.where(CallRow.sip_call_id == sip_call_id)
            return [call_summary(row) for row in s.scalars(query)]

        return await self._db.read(read)

    async def get(self, call_id: str) -> dict[str, Any] | None:
        """The summary plus utterances, decisions, events and messages; ``None`` for an unknown call."""
        def read(s: Session) -> dict[str, Any] | None:
            row = s.get(CallRow, call_id)
            if row is None:
                return None
            record = call_summary(row)
            record["utterances"] = [columns(u, exclude={"id", "call_id"}) for u in row.utterances]
            record["decisions"] = [columns(d, exclude={"id", "call_id"}) for d in row.decisions]
            record["events"] = [columns(e, exclude={"id", "call_id"}) for e in row.events]
            record["messages"] = [columns(m, exclude={"call_id"}) for m in row.messages]
            return record

        return await self._db.read(read)


def call_summary(row: CallRow) -> dict[str, Any]:
    """A call as the API lists it: who, where, how it ended, the joined transcript and its last decision."""
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
        "started_at": iso(row.started_at),
        "ended_at": iso(row.ended_at),
    }


def _call_columns(call: NewCall) -> dict[str, Any]:
    fields = values(call)
    del fields["call_id"]
    return fields


def _update_call(s: Session, call_id: str, *, state: str | None = None, language: str | None = None) -> None:
    if state is None and language is None:
        return
    row = s.get(CallRow, call_id)
    if row is None:
        raise StoreError(f"unknown call {call_id}")
    if state is not None:
        row.state = state
    if language is not None:
        row.language = language


def _close(s: Session, row: CallRow, *, outcome: str, ended_by: str, reason: str) -> datetime:
    """End the call now; returns when."""
    now = utcnow()
    row.state, row.outcome, row.ended_by, row.end_reason, row.ended_at = "ended", outcome, ended_by, reason, now
    s.add(EventRow(call_id=row.id, type="call_ended", data={"outcome": outcome, "by": ended_by, "reason": reason}, at=now))
    return now


def _schedule_recovery(s: Session, call_id: str, recovery: Recovery, now: datetime) -> None:
    message = recovery.message
    # This call is a call back for a recovery still waiting: that one goes, so it cannot hold this one off
    # (else a caller who abandons twice would get neither). The window counts recoveries that may have been sent.
    cancel_unsent_recoveries(s, message.to_number, now=now, reason="called back")
    earlier = recent_recovery(s, message.to_number, since=now - timedelta(seconds=recovery.window_s))
    if earlier is not None:
        reason = f"a recovery to this number was written {iso(earlier.created_at)} (window {recovery.window_s:g} s)"
        s.add(EventRow(call_id=call_id, type="recovery_skipped", data={"reason": reason, "call_id": earlier.call_id}, at=now))
        return
    enqueue(s, call_id=call_id, message=message, now=now)
    data = {"not_before": iso(message.not_before), "to": message.to_number}
    s.add(EventRow(call_id=call_id, type="recovery_scheduled", data=data, at=now))
