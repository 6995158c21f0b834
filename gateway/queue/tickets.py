"""A caller waiting in a queue: what they bring, and the order in which callers are served."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class TicketState(str, Enum):
    WAITING = "waiting"
    RINGING = "ringing"  # an agent's phone rings for this caller; they keep their place if it fails
    CONNECTED = "connected"


@dataclass
class Ticket:
    """One caller in a queue. ``joined`` is monotonic seconds, ``joined_at`` the wall clock (ISO, UTC)."""

    call_id: str
    queue: str
    intent: str | None
    language: str
    priority: int
    joined: float
    joined_at: str
    caller_number: str | None
    reason: str  # why the call went to voice, as the routing decision put it
    transcript: str
    holdout: bool = False  # drawn into the share never offered WhatsApp
    state: TicketState = TicketState.WAITING
    offers: int = 0
    last_offer: float | None = None  # monotonic seconds of the latest offer
    declined: bool = False  # said no to the offer: not asked again (ignoring it is not declining)
    agent_id: str | None = None
    skipped_by: set[str] = field(default_factory=set)  # agents who missed this caller: others are rung first

    def order_key(self) -> tuple[int, float]:
        """Highest priority first, then the longest waiting."""
        return (-self.priority, self.joined)

    def waited(self, now: float) -> float:
        return max(0.0, now - self.joined)

    def as_dict(self, now: float, position: int | None) -> dict[str, object]:
        return {
            "call_id": self.call_id, "intent": self.intent, "language": self.language, "priority": self.priority,
            "state": self.state.value, "waited_s": round(self.waited(now), 1), "position": position,
            "offers": self.offers, "holdout": self.holdout, "agent_id": self.agent_id, "joined_at": self.joined_at,
        }
