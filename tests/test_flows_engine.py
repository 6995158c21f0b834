"""The flow engine driven message by message (no sender, no sandbox): every default flow completes against
the demo backend, and the edges — invalid answers, asking for a person, no flow, closed conversations,
English, concurrency — behave. Outbound messages are read from the outbox, where the engine writes them."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from gateway.config import FlowSettings
from gateway.dev.demo_backend import create_demo_backend_router
from gateway.flows import FlowEngine
from gateway.store import InboundRecord, Store, utcnow
from gateway.whatsapp.templates import MessageBuilder, TemplateRegistry
from gateway.whatsapp.webhooks import InboundEvent
from tests.support.store import outbox_messages
from tests.support.whatsapp import add_deflection, serve

pytestmark = pytest.mark.timeout(60)

NUMBER = "+525555550123"
_ids = itertools.count(1)


@dataclass
class Chat:
    engine: FlowEngine
    store: Store
    call_id: str
    seen: int = 0

    async def send(self, text: str | None = None, *, payload: str | None = None, type: str | None = None,
                   media: dict | None = None) -> list[dict[str, Any]]:
        """The customer writes; returns the payloads of what the engine queued in answer."""
        kind = type or ("interactive" if payload else "text")
        await self.engine.handle_inbound(InboundEvent(
            call_id=self.call_id, number=NUMBER, wamid=f"wamid.test{next(_ids)}", type=kind, text=text, payload=payload,
            context_wamid=None, media=media,
        ))
        return self.new()

    def new(self) -> list[dict[str, Any]]:
        rows = [m for m in outbox_messages(self.store) if m["purpose"] == "flow" and m["call_id"] == self.call_id]
        fresh, self.seen = rows[self.seen:], len(rows)
        return [m["payload"] for m in fresh]

    async def record(self) -> dict[str, Any]:
        [summary] = await self.store.conversations.list(call_id=self.call_id)
        return await self.store.conversations.get(summary["conversation_id"])


@contextlib.asynccontextmanager
async def harness(tmp_path: Path, **settings):
    app = FastAPI()
    app.include_router(create_demo_backend_router())
    async with serve(app) as url:
        store = Store(f"sqlite:///{tmp_path / 'puente.db'}")
        engine = FlowEngine(store, FlowSettings(**settings), backend_url=url + "/demo-backend")
        try:
            yield engine, store, url
        finally:
            await engine.stop()
            store.close()


async def open_chat(engine: FlowEngine, store: Store, **deflection) -> Chat:
    call_id = await add_deflection(store, **deflection)
    return Chat(engine, store, call_id)


def continue_button(chat: Chat) -> str:
    return f"continue|{chat.call_id}:deflection"


def ids(payload: dict[str, Any]) -> list[str]:
    return [b["id"] for b in payload.get("buttons") or payload.get("rows") or []]


def test_every_default_flow_completes_against_the_demo_backend(tmp_path):
    async def scenario():
        async with harness(tmp_path) as (engine, store, url):
            assert sorted(engine.library.flows) == sorted([
                "order_status", "appointment", "duplicate_document", "opening_hours", "policy_info", "payment",
                "send_documents", "update_details"])
            results = {}

            chat = await open_chat(engine, store, intent="order_status", transcript="¿Dónde está mi pedido?")
            [ask] = await chat.send("Sí, sigamos", payload=continue_button(chat), type="button")
            assert ask["type"] == "text" and "número de pedido" in ask["text"]
            [wrong] = await chat.send("12340")  # ends in 0: the demo backend has no such order (404)
            assert wrong["text"].startswith("No encontramos el pedido 12340")
            [answer] = await chat.send("12345")
            assert answer["text"].startswith("Tu pedido 12345 está en preparación en nuestro almacén.") and answer["type"] == "list"
            results["order_status"] = chat

            chat = await open_chat(engine, store, intent="appointment", transcript="Quiero cambiar mi cita.")
            [choose] = await chat.send("Sí, sigamos", payload=continue_button(chat), type="button")
            assert choose["type"] == "buttons" and ids(choose) == ["confirm", "reschedule", "agent"] and "Sucursal Centro" in choose["text"]
            [slot] = await chat.send("Cambiar fecha", payload="reschedule")
            assert ids(slot) == ["tomorrow_am", "tomorrow_pm", "next_week"]
            [done] = await chat.send("2")  # typed the option's position instead of tapping
            assert done["text"].startswith("Tu cita quedó reprogramada (folio APT-")
            assert (await chat.record())["variables"]["slot"] == "tomorrow_pm"
            results["appointment"] = chat

            chat = await open_chat(engine, store, intent="duplicate_document", transcript="Necesito un duplicado de mi factura de marzo.")
            [which] = await chat.send("Sí, sigamos", payload=continue_button(chat), type="button")
            assert ids(which) == ["invoice", "receipt", "statement"]
            [link] = await chat.send("Factura")  # the title, typed
            assert link["text"].startswith(f"Aquí tienes tu factura de marzo: {url}/demo-backend/files/invoice-")
            results["duplicate_document"] = chat

            chat = await open_chat(engine, store, intent="opening_hours", transcript="¿A qué hora abren?")
            [hours] = await chat.send("hola")
            assert hours["text"].startswith("Nuestro horario: lunes a viernes") and "del 1 (mala) al 5" in hours["text"]
            results["opening_hours"] = chat

            chat = await open_chat(engine, store, intent="policy_info", transcript="¿Qué cubre mi póliza?")
            [policy] = await chat.send("Sí, sigamos", payload=continue_button(chat), type="button")
            assert policy["text"].startswith("Tu póliza AUTO-") and "cobertura amplia" in policy["text"]
            results["policy_info"] = chat

            chat = await open_chat(engine, store, intent="payment", transcript="Quiero pagar mi recibo.")
            [pay] = await chat.send("Sí, sigamos", payload=continue_button(chat), type="button")
            assert "Tu saldo pendiente es de" in pay["text"] and f"{url}/demo-backend/pay/PAY-" in pay["text"]
            results["payment"] = chat

            chat = await open_chat(engine, store, intent="send_documents", transcript="Les mando mis documentos.")
            [prompt] = await chat.send("Sí, sigamos", payload=continue_button(chat), type="button")
            assert ids(prompt) == ["media_done"]
            [nothing_yet] = await chat.send("listo")  # nothing sent yet: asked again
            assert "No te entendí" in nothing_yet["text"]
            [ack1] = await chat.send(None, type="image", media={"id": "111", "mime_type": "image/png", "sha256": "x"})
            [ack2] = await chat.send("contrato", type="document", media={"id": "222", "mime_type": "application/pdf", "filename": "contrato.pdf"})
            assert ack1["text"].startswith("Recibido (1)") and ack2["text"].startswith("Recibido (2)")
            [registered] = await chat.send("Listo")
            assert registered["text"].startswith("Recibimos tus documentos (folio DOC-")
            assert [m["media_id"] for m in (await chat.record())["media"]] == ["111", "222"]
            results["send_documents"] = chat

            chat = await open_chat(engine, store, intent="update_details", transcript="Quiero actualizar mi correo.")
            [which] = await chat.send("Sí, sigamos", payload=continue_button(chat), type="button")
            assert ids(which) == ["email", "address", "phone"]
            [ask_email] = await chat.send("Correo", payload="email")
            [again] = await chat.send("mi correo es ana arroba example")
            assert "No te entendí" in again["text"] and "correo electrónico" in again["text"]
            [updated] = await chat.send("ana.perez@example.com")
            assert updated["text"].startswith("Listo, actualizamos tu dato.")
            assert (await chat.record())["variables"]["value"] == "ana.perez@example.com"
            results["update_details"] = chat

            for score, (intent, chat) in enumerate(results.items()):
                [thanks] = await chat.send(str(score % 5 + 1))
                assert "Gracias por tu calificación" in thanks["text"]
                record = await chat.record()
                assert (record["flow"], record["status"], record["resolution"], record["csat"]) == (intent, "closed", "resolved", score % 5 + 1)
                assert not record["handoffs"]
    asyncio.run(scenario())


def test_english_call_gets_english_texts(tmp_path):
    async def scenario():
        async with harness(tmp_path) as (engine, store, _):
            chat = await open_chat(engine, store, intent="order_status", language="en", transcript="Where is my order 24682?")
            [answer] = await chat.send("Yes, let's go on", payload=continue_button(chat), type="button")
            assert answer["text"].startswith("Your order 24682 is on its way with the courier.") and "from 1 (poor) to 5" in answer["text"]
            assert answer["button"] == "Rate"
            [thanks] = await chat.send(None, payload="csat:3")
            assert thanks["text"].startswith("Thanks for your rating") and (await chat.record())["csat"] == 3
    asyncio.run(scenario())


def test_repeated_invalid_answers_hand_off(tmp_path):
    async def scenario():
        async with harness(tmp_path, max_invalid=2) as (engine, store, _):
            chat = await open_chat(engine, store, intent="order_status", transcript="mi pedido")
            await chat.send("sí")
            [retry] = await chat.send("no me lo sé")
            assert retry["text"].startswith("No encontré un número de pedido")
            [handoff] = await chat.send("tampoco")
            assert "Te comunico con una persona" in handoff["text"]
            await engine.wait_idle()
            record = await chat.record()
            assert record["status"] == "handoff" and record["handoff_reason"] == "too_many_invalid_answers"
            # No webhook configured: recorded, visible in the API, marked so.
            assert record["handoffs"][0]["status"] == "not_configured"
            assert record["handoffs"][0]["payload"]["chat"][-1]["text"] == handoff["text"]
    asyncio.run(scenario())


def test_asking_for_a_person_at_any_step_hands_off(tmp_path):
    async def scenario():
        async with harness(tmp_path) as (engine, store, _):
            chat = await open_chat(engine, store, intent="duplicate_document", transcript="un duplicado")
            await chat.send("Sí, sigamos", payload=continue_button(chat), type="button")
            [handoff] = await chat.send("prefiero hablar con un Agente por favor")
            assert "Te comunico con una persona" in handoff["text"]
            record = await chat.record()
            assert record["handoff_reason"] == "customer_request" and record["step"] == "document"
            assert await chat.send("hola?") == []  # the agent has it now
            # The template's "Prefiero llamada" button hands off straight away, too.
            other = await open_chat(engine, store, number="+525555550124", intent="payment")
            await other.engine.handle_inbound(InboundEvent(other.call_id, "+525555550124", "wamid.callme", "button", "Prefiero llamada",
                                                           f"call_me|{other.call_id}:deflection", None))
            [summary] = await store.conversations.list(number="+525555550124")
            assert summary["status"] == "handoff" and summary["handoff_reason"] == "customer_requested_call"
    asyncio.run(scenario())


def test_an_intent_without_a_flow_hands_off_and_a_closed_conversation_says_so(tmp_path):
    async def scenario():
        async with harness(tmp_path) as (engine, store, _):
            chat = await open_chat(engine, store, intent="complaint", transcript="Quiero poner una queja.")
            [handoff] = await chat.send("hola")
            assert "Te comunico" in handoff["text"] and (await chat.record())["handoff_reason"] == "no_flow_for_intent:complaint"

            chat = await open_chat(engine, store, number="+525555550125", intent="opening_hours")
            await chat.engine.handle_inbound(InboundEvent(chat.call_id, "+525555550125", "wamid.h1", "text", "hola", None, None))
            await chat.engine.handle_inbound(InboundEvent(chat.call_id, "+525555550125", "wamid.h2", "text", "5", None, None))
            await chat.engine.handle_inbound(InboundEvent(chat.call_id, "+525555550125", "wamid.h3", "text", "gracias!", None, None))
            [summary] = await store.conversations.list(number="+525555550125")
            record = await store.conversations.get(summary["conversation_id"])
            assert record["csat"] == 5 and record["status"] == "closed"
            assert record["messages"][-1]["text"].startswith("Esta conversación ya terminó")
    asyncio.run(scenario())


def test_messages_of_one_customer_are_handled_one_at_a_time_with_unique_keys(tmp_path):
    async def scenario():
        async with harness(tmp_path) as (engine, store, _):
            chat = await open_chat(engine, store, intent="send_documents")
            await chat.send("hola")
            events = [InboundEvent(chat.call_id, NUMBER, f"wamid.img{i}", "image", None, None, None, {"id": f"m{i}", "mime_type": "image/jpeg"})
                      for i in range(4)]
            await asyncio.gather(*(engine.handle_inbound(e) for e in events))
            acks = chat.new()
            assert [a["text"][:12] for a in acks] == [f"Recibido ({n})" for n in range(1, 5)]
            record = await chat.record()
            keys = [m["idempotency_key"] for m in record["messages"] if m["direction"] == "out"]
            assert keys == [f"conv:{record['conversation_id']}:step:{n}" for n in range(1, 6)]
            assert len(record["media"]) == 4
    asyncio.run(scenario())


def test_the_flow_messages_build_into_valid_cloud_api_messages(tmp_path):
    async def scenario():
        async with harness(tmp_path) as (engine, store, _):
            chat = await open_chat(engine, store, intent="appointment")
            [choose] = await chat.send("hola")
            [slot] = await chat.send(None, payload="reschedule")
            [done] = await chat.send(None, payload="next_week")
            builder = MessageBuilder(TemplateRegistry([]), {}, ())
            for payload in (choose, slot, done):
                message = builder.build(payload, to=NUMBER, callback_data="k").model_dump(mode="json", exclude_none=True)
                assert message["type"] == "interactive"
            assert message["interactive"]["type"] == "list" and len(message["interactive"]["action"]["sections"][0]["rows"]) == 5
    asyncio.run(scenario())


def test_a_message_a_crash_left_unanswered_is_handled_at_start_once(tmp_path):
    async def scenario():
        async with harness(tmp_path) as (engine, store, _):
            chat = await open_chat(engine, store, intent="opening_hours")
            [deflection] = outbox_messages(store)
            await store.outbox.accepted(deflection["id"], "wamid.deflection", now=utcnow())
            # The webhook recorded the customer's message, then the process died before the flow ran.
            ingested = await store.whatsapp.ingest([], [InboundRecord(
                wamid="wamid.lost", from_number=NUMBER, type="text", timestamp=utcnow(), text="hola", payload=None,
                context_wamid=None, message={"type": "text", "text": {"body": "hola"}})], now=utcnow())
            new, call_id = bool(ingested.inbound), (ingested.inbound[0][1] if ingested.inbound else None)
            assert new and call_id == chat.call_id
            await engine.start()  # recovery runs first
            [answer] = chat.new()
            assert answer["text"].startswith("Nuestro horario")
            assert await engine.recover() == 0
            await engine.handle_inbound(InboundEvent(chat.call_id, NUMBER, "wamid.lost", "text", "hola", None, None))
            assert chat.new() == []  # the same message is never answered twice
    asyncio.run(scenario())
