"""The handoff context: what travels with a call to WhatsApp or to an agent."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: SIP headers that carry the context to the agent's phone (on the REFER and in the Refer-To URI).
CALL_ID_HEADER = "X-Puente-Call-Id"
INTENT_HEADER = "X-Puente-Intent"
LANGUAGE_HEADER = "X-Puente-Language"
#: Where the agent's desktop reads the whole context (GET /v1/calls/{call_id}/context).
CONTEXT_URL_HEADER = "X-Puente-Context-Url"


@dataclass(frozen=True)
class HandoffContext:
    call_id: str
    sip_call_id: str
    line: str
    language: str | None
    intent: str | None
    confidence: float | None
    transcript: str  # every utterance heard, in order
    dtmf: str  # every key pressed, in order
    queue: str | None = None  # the voice queue the call was routed to (None without queues)
    priority: int | None = None  # its priority there
    waited_s: float | None = None  # time waited in the queue before leaving it for WhatsApp

    def as_dict(self) -> dict[str, Any]:
        """As it is stored with the outbound message and shown to the chat agent."""
        return asdict(self)

    def sip_headers(self) -> dict[str, str]:
        return {
            CALL_ID_HEADER: self.call_id,
            INTENT_HEADER: self.intent or "unknown",
            LANGUAGE_HEADER: self.language or "unknown",
        }
