"""The context store: every call, what was heard and decided on it, consent, the outbox,
WhatsApp statuses and messages, the events about the WhatsApp account, and the self-service
conversations.

SQLAlchemy 2.0 on SQLite by default (WAL, so the HTTP API reads while calls write);
PostgreSQL through the same code by URL. All writes for one fact happen in one transaction,
and a routing decision and its outbound message are written together (as are an abandoned call's
end and its recovery message), so a crash can never leave a decision without its message or the
reverse. Errors surface as ``StoreError``.

    schema.py         every table (one ``create_all``)
    database.py       engine, the writer thread, transactions, ``StoreError``
    records.py        the values handed in and out (frozen dataclasses)
    rows.py           rows → plain dicts (one set of serialisers)
    calls.py          calls, utterances, decisions, events, ends (and the recoveries they schedule)
    consent.py        WhatsApp consent answers
    outbox.py         ``enqueue`` (the one way in, with an optional not-before time) and the sender's
                      lease machine (which cancels a recovery whose caller was reached meanwhile)
    whatsapp.py       status webhooks, customers' messages, their windows, account events
    conversations.py  self-service conversations, turns and handoffs
    queue.py          voice-queue waits and agent states
    context.py        a call as its agent sees it, with the customer's history
"""
from gateway.store.database import StoreError
from gateway.store.outbox import merge_message_status
from gateway.store.records import (
    RECOVERY_PURPOSE,
    AccountEvent,
    Conversation,
    DecisionRecord,
    InboundRecord,
    Ingested,
    InterruptedWait,
    NewCall,
    OutboundMessage,
    OutboxClaim,
    QueueJoin,
    Recovery,
    StatusUpdate,
    Turn,
    UtteranceRecord,
)
from gateway.store.rows import utcnow
from gateway.store.store import Store

__all__ = [
    "RECOVERY_PURPOSE", "AccountEvent", "Conversation", "DecisionRecord", "InboundRecord", "Ingested", "InterruptedWait",
    "NewCall", "OutboundMessage", "OutboxClaim", "QueueJoin", "Recovery", "StatusUpdate", "Store", "StoreError", "Turn",
    "UtteranceRecord", "merge_message_status", "utcnow",
]
