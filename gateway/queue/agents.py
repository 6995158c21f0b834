"""Agents: one phone each, one call at a time, and the states an ACD tracks for them.

    offline ⇄ available → ringing → on_call → wrap_up → available
                  ▲          │ no answer, busy, refused
                  └─ wrap_up ◀┘  (a short pause, so one agent is not rung again and again)
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class AgentState(str, Enum):
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    OFFLINE = "offline"


A = AgentState
AGENT_TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    A.AVAILABLE: frozenset({A.RINGING, A.OFFLINE}),
    A.RINGING: frozenset({A.ON_CALL, A.WRAP_UP, A.AVAILABLE, A.OFFLINE}),
    A.ON_CALL: frozenset({A.WRAP_UP, A.OFFLINE}),
    A.WRAP_UP: frozenset({A.AVAILABLE, A.OFFLINE}),
    A.OFFLINE: frozenset({A.AVAILABLE}),
}

#: After this many calls in a row not answered, an agent is taken offline (and the log says why).
MAX_MISSED_IN_A_ROW = 3


@dataclass
class Agent:
    """An agent and what they are doing; ``since`` is monotonic seconds of the last change."""

    id: str
    uri: str | None  # None: the agent's phone is not registered (an agent who registers)
    queues: tuple[str, ...]
    state: AgentState = AgentState.AVAILABLE
    since: float = 0.0
    call_id: str | None = None  # the caller being rung or served
    leg_id: str | None = None  # our SIP leg to the agent's phone
    missed_in_a_row: int = 0
    answered: int = 0
    missed: int = 0
    last_outcome: str | None = None
    idle_since: float = 0.0  # when the agent last became available: the longest idle is rung first
    reason: str | None = None  # why the agent is offline
    registers: bool = False  # the phone registers (its uri follows the registration)

    def move(self, state: AgentState, now: float) -> None:
        if state not in AGENT_TRANSITIONS[self.state]:
            raise RuntimeError(f"agent {self.id}: illegal transition {self.state.value} → {state.value}")
        self.state, self.since = state, now
        if state is AgentState.AVAILABLE:
            self.idle_since, self.call_id, self.leg_id = now, None, None

    def serves(self, queue: str) -> bool:
        return queue in self.queues

    def as_dict(self, now: float) -> dict[str, object]:
        return {
            "id": self.id, "uri": self.uri, "queues": list(self.queues), "state": self.state.value,
            "for_s": round(max(0.0, now - self.since), 1), "call_id": self.call_id, "answered": self.answered,
            "missed": self.missed, "last_outcome": self.last_outcome, "reason": self.reason,
        }
