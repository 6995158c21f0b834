"""Voice queues in the store: who waits where, how their wait ended, and each agent's state."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway.store.database import Database
from gateway.store.records import InterruptedWait, QueueJoin
from gateway.store.rows import columns, utc
from gateway.store.schema import AgentStateRow, EventRow, QueueWaitRow

#: How a wait ends.
WAIT_OUTCOMES = ("served", "abandoned", "deflected", "timeout", "interrupted")


class QueueRecords:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def join(self, entry: QueueJoin) -> None:
        def write(s: Session) -> None:
            s.add(QueueWaitRow(
                call_id=entry.call_id, queue=entry.queue, intent=entry.intent, language=entry.language,
                priority=entry.priority, caller_number=entry.caller_number, reason=entry.reason,
                transcript=entry.transcript, holdout=entry.holdout, state="waiting", offers=0, joined_at=entry.joined_at,
            ))
            s.add(EventRow(call_id=entry.call_id, type="queue_joined", at=entry.joined_at, data={
                "queue": entry.queue, "priority": entry.priority, "holdout": entry.holdout,
            }))

        await self._db.write(write)

    async def update(self, call_id: str, *, at: datetime, **changes: Any) -> None:
        """Set ``state``, ``offers``, ``agent_id`` or ``answered_at`` of a wait still open."""
        def write(s: Session) -> None:
            row = s.get(QueueWaitRow, call_id)
            if row is not None and row.left_at is None:
                for name, value in changes.items():
                    setattr(row, name, value)

        await self._db.write(write)

    async def leave(self, call_id: str, *, outcome: str, at: datetime) -> None:
        if outcome not in WAIT_OUTCOMES:
            raise ValueError(f"unknown wait outcome {outcome!r}")

        def write(s: Session) -> None:
            row = s.get(QueueWaitRow, call_id)
            if row is not None and row.left_at is None:
                row.left_at, row.outcome, row.state = at, outcome, outcome

        await self._db.write(write)

    async def close_interrupted(self, at: datetime) -> list[InterruptedWait]:
        """At start-up: waits a stop or crash left open end as ``interrupted``; returns those not yet served."""
        def write(s: Session) -> list[InterruptedWait]:
            cut: list[InterruptedWait] = []
            for row in s.scalars(select(QueueWaitRow).where(QueueWaitRow.left_at.is_(None))):
                served = row.answered_at is not None
                row.left_at, row.outcome, row.state = at, "interrupted", "interrupted"
                if not served:
                    # The call's last recorded event is the last sign of it alive: the downtime is no wait.
                    alive = s.scalar(select(func.max(EventRow.at)).where(EventRow.call_id == row.call_id))
                    cut.append(InterruptedWait(
                        call_id=row.call_id, queue=row.queue, intent=row.intent, language=row.language,
                        caller_number=row.caller_number, transcript=row.transcript, joined_at=utc(row.joined_at),
                        waited_s=max(0.0, (utc(alive or row.joined_at) - utc(row.joined_at)).total_seconds()),
                    ))
            return cut

        return await self._db.write(write)

    async def agent(self, agent_id: str, *, uri: str | None, state: str, call_id: str | None, reason: str | None,
                    at: datetime) -> None:
        def write(s: Session) -> None:
            row = s.get(AgentStateRow, agent_id)
            if row is None:
                row = AgentStateRow(agent_id=agent_id)
                s.add(row)
            row.uri, row.state, row.call_id, row.reason, row.since = uri, state, call_id, reason, at

        await self._db.write(write)

    async def waits(self, *, queue: str | None = None, open_only: bool = False, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first."""
        def read(s: Session) -> list[dict[str, Any]]:
            query = select(QueueWaitRow).order_by(QueueWaitRow.joined_at.desc()).limit(limit)
            if queue is not None:
                query = query.where(QueueWaitRow.queue == queue)
            if open_only:
                query = query.where(QueueWaitRow.left_at.is_(None))
            return [columns(row) for row in s.scalars(query)]

        return await self._db.read(read)

    async def agents(self) -> list[dict[str, Any]]:
        def read(s: Session) -> list[dict[str, Any]]:
            return [columns(row) for row in s.scalars(select(AgentStateRow).order_by(AgentStateRow.agent_id))]

        return await self._db.read(read)
