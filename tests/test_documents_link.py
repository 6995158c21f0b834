"""Hybrid voice → chat: the WhatsApp link for documents and photos sent while a call goes on.

What the customer sends there belongs to the same call: its conversation runs the documents flow,
and the files are listed in the call's agent context. Real SQLite store, sandbox, sender and flows.
"""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from gateway.store import NewCall, OutboundMessage, Store, utcnow
from gateway.whatsapp.templates import documents_payload
from tests.support.whatsapp import received, whatsapp_bench

pytestmark = pytest.mark.timeout(60)
NUMBER = "+525555550123"
CONTEXT = {"intent": "update_details", "transcript": "Quiero actualizar mis datos", "language": "es", "line": "es", "dtmf": ""}


async def call_with_link(store: Store) -> str:
    call_id = str(uuid.uuid4())
    await store.calls.create(
        NewCall(call_id=call_id, sip_call_id=f"sip-{call_id}", from_uri=f"sip:{NUMBER}@127.0.0.1", to_uri="sip:es@127.0.0.1",
                line="es", caller_number=NUMBER, remote_address="127.0.0.1:5062", asr_model="test", nlu_version="test"),
        state="connected",
    )
    payload = documents_payload("call_documents", "es", {**CONTEXT, "call_id": call_id}, "send_documents")
    assert await store.calls.record_message(call_id, OutboundMessage("documents", NUMBER, payload),
                                            event="documents_link_sent", data={"by": "ana"})
    return call_id


def test_a_photo_sent_to_the_documents_link_belongs_to_the_call_and_its_agent_sees_it(tmp_path: Path):
    async def go():
        async with whatsapp_bench(f"sqlite:///{tmp_path / 'puente.db'}") as bench:
            store, channel, http = bench.store, bench.channel, bench.http
            call_id = await call_with_link(store)
            [link] = await received(channel, NUMBER, 1)
            assert link.text == ("Hola, para tu llamada sobre la actualización de tus datos: envíanos por aquí fotos o "
                                 "documentos. Seguimos contigo en la línea.")
            photo = {"image": {"mime_type": "image/jpeg", "caption": "mi identificación"}, "reply_to": link.wamid}
            assert (await http.post(f"/sandbox/customers/{NUMBER}/reply", json=photo)).status_code == 200
            messages = await received(channel, NUMBER, 3)  # the flow's request, then its receipt of the photo
            assert messages[-1].text == "Recibido (1). Envía más o pulsa «Listo»."
            [listed] = await store.conversations.list(call_id=call_id)
            conversation = await store.conversations.get(listed["conversation_id"])
            assert conversation["flow"] == "send_documents" and conversation["intent"] == "update_details"
            context = await store.contexts.get(call_id, now=utcnow())
            assert [(d["kind"], d["caption"]) for d in context["documents"]] == [("image", "mi identificación")]

    asyncio.run(go())


def test_the_link_goes_once_per_call(tmp_path: Path):
    async def go():
        store = Store(f"sqlite:///{tmp_path / 'puente.db'}")
        try:
            call_id = await call_with_link(store)
            payload = documents_payload("call_documents", "es", {**CONTEXT, "call_id": call_id}, "send_documents")
            again = await store.calls.record_message(call_id, OutboundMessage("documents", NUMBER, payload),
                                                     event="documents_link_sent", data={"by": "ana"})
            record = await store.calls.get(call_id)
            assert again is False and len(record["messages"]) == 1
            assert [e["type"] for e in record["events"]].count("documents_link_sent") == 1
        finally:
            store.close()

    asyncio.run(go())
