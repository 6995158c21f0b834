"""WhatsApp consent: each customer's answers to "may we write to you on WhatsApp?"; the latest counts."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.store.database import Database
from gateway.store.rows import utcnow
from gateway.store.schema import ConsentRow, EventRow


class Consents:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def latest(self, number: str) -> bool | None:
        """The number's latest answer, or None when it was never asked."""
        def read(s: Session) -> bool | None:
            query = select(ConsentRow.granted).where(ConsentRow.number == number).order_by(ConsentRow.id.desc()).limit(1)
            return s.scalar(query)

        return await self._db.read(read)

    async def record(self, number: str, *, granted: bool, method: str, call_id: str | None) -> None:
        """``method``: how it was given (dtmf, speech); the call's events record it too."""
        def write(s: Session) -> None:
            now = utcnow()
            s.add(ConsentRow(number=number, granted=granted, method=method, call_id=call_id, at=now))
            if call_id is not None:
                s.add(EventRow(call_id=call_id, type="consent", data={"granted": granted, "method": method}, at=now))

        await self._db.write(write)
