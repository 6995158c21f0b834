"""The values handed to and returned by the store: plain frozen dataclasses, no SQLAlchemy."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: The outbox purpose of the message after an abandoned call.
RECOVERY_PURPOSE = "recovery"


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
class QueueJoin:
    call_id: str
    queue: str
    intent: str | None
    language: str
    priority: int
    caller_number: str | None
    reason: str
    transcript: str
    holdout: bool
    joined_at: datetime


@dataclass(frozen=True)
class InterruptedWait:
    """A wait a restart cut short: enough of it to offer the caller a recovery."""

    call_id: str
    queue: str
    intent: str | None
    language: str
    caller_number: str | None
    transcript: str
    joined_at: datetime
    waited_s: float


@dataclass(frozen=True)
class OutboundMessage:
    purpose: str  # "deflection", "recovery" (after an abandoned call), "flow" (a conversation's step)
    to_number: str
    payload: dict[str, Any]
    channel: str = "whatsapp"
    not_before: datetime | None = None  # aware UTC; the sender does not claim the message earlier

    def idempotency_key(self, call_id: str) -> str:
        return f"{call_id}:{self.purpose}"


@dataclass(frozen=True)
class Recovery:
    """The WhatsApp message promised to a caller who hung up before being served (``Calls.end`` schedules it).

    ``message.purpose`` is ``"recovery"`` and ``message.not_before`` is set; no second recovery goes to the
    same number within ``window_s`` of a scheduled one, and a caller who called back or was reached
    meanwhile is not messaged (``Outbox.claim`` cancels it).
    """

    message: OutboundMessage
    window_s: float

    def __post_init__(self) -> None:
        if self.message.purpose != RECOVERY_PURPOSE or self.message.not_before is None:
            raise ValueError(f"a recovery is a {RECOVERY_PURPOSE!r} message with a not_before time")


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


@dataclass(frozen=True)
class AccountEvent:
    """A webhook about the WhatsApp Business Account, not about a message (a template's status, quality or
    category, the phone number's quality, an account update, or a field Puente does not know), as received."""

    field: str
    account_id: str  # the webhook entry's id: the WhatsApp Business Account
    value: Any  # the change's value, JSON as received
    occurred_at: datetime | None  # the entry's time, when Meta gives one
    received_at: datetime

    @property
    def at(self) -> datetime:
        """When it happened, as far as we know."""
        return self.occurred_at or self.received_at

    @property
    def key(self) -> str:
        """The same for every delivery of one event (Meta retries; these webhooks carry no id of their own)."""
        when = None if self.occurred_at is None else self.occurred_at.timestamp()
        canonical = json.dumps([self.account_id, self.field, when, self.value], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Ingested:
    """What one webhook body brought that the store had not seen before."""

    inbound: list[tuple[InboundRecord, str | None]]  # customers' messages, each with the call it answers
    events: list[AccountEvent]


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
