"""The context store: one database, one repository per kind of fact."""
from __future__ import annotations

from gateway.store.calls import Calls
from gateway.store.consent import Consents
from gateway.store.context import CallContexts
from gateway.store.conversations import Conversations
from gateway.store.database import Database
from gateway.store.outbox import Outbox
from gateway.store.queue import QueueRecords
from gateway.store.whatsapp import WhatsAppRecords


class Store:
    """Opens ``url`` (SQLite file by default, PostgreSQL by URL), creating the tables, or raises ``StoreError``.

    Every method is a coroutine; the work runs on the store's one writer thread::

        store = Store("sqlite:///var/puente.db")
        await store.calls.create(NewCall(...), "answered")
        record = await store.calls.get(call_id)
        store.close()
    """

    def __init__(self, url: str) -> None:
        self.database = Database(url)
        self.calls = Calls(self.database)
        self.consents = Consents(self.database)
        self.outbox = Outbox(self.database)
        self.whatsapp = WhatsAppRecords(self.database)
        self.conversations = Conversations(self.database)
        self.queue = QueueRecords(self.database)
        self.contexts = CallContexts(self.database)

    def close(self) -> None:
        self.database.close()
