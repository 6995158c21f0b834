"""Every table of the context store, in one place, created by one ``create_all``.

Calls and what happened on them (utterances, decisions, events), WhatsApp consent, the outbox
and its delivery bookkeeping, WhatsApp statuses, inbound messages and contacts, the webhooks
about the WhatsApp account (template status and quality, phone number, account updates), and
the self-service conversations. SQLite by default, PostgreSQL through the same code by URL.
New columns go in side tables or as nullable columns, so existing databases need no migration.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class CallRow(Base):
    __tablename__ = "calls"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sip_call_id: Mapped[str] = mapped_column(String(255), index=True)
    from_uri: Mapped[str] = mapped_column(Text)
    to_uri: Mapped[str] = mapped_column(Text)
    line: Mapped[str] = mapped_column(String(64))
    caller_number: Mapped[str | None] = mapped_column(String(32))
    remote_address: Mapped[str] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(32))
    ended_by: Mapped[str | None] = mapped_column(String(16))
    end_reason: Mapped[str | None] = mapped_column(Text)
    asr_model: Mapped[str] = mapped_column(String(255))
    nlu_version: Mapped[str] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    utterances: Mapped[list[UtteranceRow]] = relationship(order_by="UtteranceRow.seq")
    decisions: Mapped[list[DecisionRow]] = relationship(order_by="DecisionRow.seq")
    events: Mapped[list[EventRow]] = relationship(order_by="EventRow.id")
    messages: Mapped[list[OutboxRow]] = relationship(order_by="OutboxRow.id")


class UtteranceRow(Base):
    __tablename__ = "utterances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    start_ms: Mapped[int] = mapped_column(Integer)
    speech_end_ms: Mapped[int] = mapped_column(Integer)
    end_reason: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(String(8))
    language_probability: Mapped[float | None] = mapped_column(Float)
    no_speech_prob: Mapped[float | None] = mapped_column(Float)
    avg_logprob: Mapped[float | None] = mapped_column(Float)
    dropped: Mapped[str | None] = mapped_column(Text)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DecisionRow(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    utterance_seq: Mapped[int | None] = mapped_column(Integer)
    intent: Mapped[str | None] = mapped_column(String(64))
    confidence: Mapped[float | None] = mapped_column(Float)
    route: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    ranking: Mapped[list[Any]] = mapped_column(JSON)
    nlu_version: Mapped[str] = mapped_column(String(255))
    timings: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxRow(Base):
    """A message waiting to be delivered; ``idempotency_key`` makes a retried write a no-op.

    ``purpose``: deflection | recovery | flow. ``status``: pending → sending → accepted → sent → delivered → read,
    or failed, or cancelled (a recovery whose caller was reached before it was sent); see ``outbox.py``."""

    __tablename__ = "outbox"
    __table_args__ = (UniqueConstraint("idempotency_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(32))
    to_number: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    wamid: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxDeliveryRow(Base):
    """Delivery bookkeeping of one outbox message (a side table, so existing databases need no migration).

    ``in_doubt_since`` is written *before* each send attempt and cleared once the API answered;
    while it is set an earlier attempt may have reached the Cloud API, so the message is only
    re-sent after ``in_doubt_grace_s`` with no status webhook carrying its idempotency key.
    """

    __tablename__ = "outbox_delivery"

    outbox_id: Mapped[int] = mapped_column(ForeignKey("outbox.id"), primary_key=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    in_doubt_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_code: Mapped[int | None] = mapped_column(Integer)


class WhatsAppStatusRow(Base):
    """Every distinct status webhook (``wamid`` + ``status``), kept even before its message is known."""

    __tablename__ = "whatsapp_statuses"
    __table_args__ = (UniqueConstraint("wamid", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    wamid: Mapped[str] = mapped_column(String(128), index=True)
    status: Mapped[str] = mapped_column(String(16))
    callback_data: Mapped[str | None] = mapped_column(String(512), index=True)
    recipient_id: Mapped[str | None] = mapped_column(String(32))
    timestamp: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    errors: Mapped[list[Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WhatsAppInboundRow(Base):
    """A message from a customer (deduplicated by its ``wamid``)."""

    __tablename__ = "whatsapp_inbound"
    __table_args__ = (UniqueConstraint("wamid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    wamid: Mapped[str] = mapped_column(String(128))
    from_number: Mapped[str] = mapped_column(String(32), index=True)
    type: Mapped[str] = mapped_column(String(32))
    text: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[str | None] = mapped_column(String(256))
    context_wamid: Mapped[str | None] = mapped_column(String(128))
    call_id: Mapped[str | None] = mapped_column(String(36), index=True)
    message: Mapped[dict[str, Any]] = mapped_column(JSON)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WhatsAppContactRow(Base):
    """Per customer number: when they last wrote to us (opens the 24-hour customer-service window)."""

    __tablename__ = "whatsapp_contacts"

    number: Mapped[str] = mapped_column(String(32), primary_key=True)
    last_inbound_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WhatsAppAccountEventRow(Base):
    """A webhook about the account, not a message (template status, quality, phone number…), kept as received;
    ``key`` (``AccountEvent.key``) makes a redelivery a no-op."""

    __tablename__ = "whatsapp_account_events"
    __table_args__ = (UniqueConstraint("key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64))
    field: Mapped[str] = mapped_column(String(128), index=True)
    account_id: Mapped[str] = mapped_column(String(64))
    value: Mapped[Any] = mapped_column(JSON)
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsentRow(Base):
    """A customer's answer to "may we write to you on WhatsApp?"; the latest answer counts."""

    __tablename__ = "consents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    number: Mapped[str] = mapped_column(String(32), index=True)
    granted: Mapped[bool] = mapped_column(Boolean)
    method: Mapped[str] = mapped_column(String(16))  # dtmf | speech | policy
    call_id: Mapped[str | None] = mapped_column(ForeignKey("calls.id"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# --- WhatsApp self-service conversations ---------------------------------------------


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
    context: Mapped[dict[str, Any]] = mapped_column(JSON)  # the call context of the deflection or recovery message
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


# --- voice queues ----------------------------------------------------------------------


class QueueWaitRow(Base):
    """A caller's time in a voice queue, from joining to being served or leaving.

    Written as it changes, so a restart knows who was waiting: rows with no ``left_at`` are closed
    as ``interrupted`` at start-up and handed to the recovery policy.
    """

    __tablename__ = "queue_waits"

    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id"), primary_key=True)
    queue: Mapped[str] = mapped_column(String(64), index=True)
    intent: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(8))
    priority: Mapped[int] = mapped_column(Integer)
    caller_number: Mapped[str | None] = mapped_column(String(32), index=True)
    reason: Mapped[str] = mapped_column(Text)
    transcript: Mapped[str] = mapped_column(Text)
    holdout: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[str] = mapped_column(String(16))  # waiting | ringing | connected, then the outcome
    offers: Mapped[int] = mapped_column(Integer, default=0)
    agent_id: Mapped[str | None] = mapped_column(String(64))
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    left_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # served | abandoned | deflected | timeout | interrupted
    outcome: Mapped[str | None] = mapped_column(String(16))


class AgentStateRow(Base):
    """Each agent's latest state (the history is in the calls' events)."""

    __tablename__ = "agent_states"

    agent_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    uri: Mapped[str | None] = mapped_column(Text)  # None: a registering phone not registered now
    state: Mapped[str] = mapped_column(String(16))
    call_id: Mapped[str | None] = mapped_column(String(36))
    reason: Mapped[str | None] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True))
