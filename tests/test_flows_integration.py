"""The full loop over real HTTP on a SQLite file: a deflected call's template reaches the sandbox with the
call's reason and words → the customer replies through the sandbox → signed webhook → the flow engine →
a stub backend (a real HTTP server) → outbox → sandbox → resolution → CSAT recorded; a failing backend
hands off to a (stub) agent webhook with the full context; send_documents stores an image reference."""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from gateway.config import FlowSettings, Settings
from gateway.flows import FlowEngine
from gateway.http.conversations import create_conversations_router
from gateway.store import Store
from gateway.whatsapp import WhatsAppChannel
from tests.support.whatsapp import add_deflection, serve, whatsapp_bench

pytestmark = pytest.mark.timeout(60)

NUMBER = "+525555550123"


@dataclass
class Stub:
    """The customer's systems and the agent platform, as one small real HTTP server."""

    url: str = ""
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    handoffs: list[dict[str, Any]] = field(default_factory=list)
    hook_failures: int = 0  # the agent webhook answers 500 this many times first
    hook_requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


def stub_app(stub: Stub) -> FastAPI:
    app = FastAPI()

    @app.get("/orders/{n}")
    async def order(n: str, request: Request):
        stub.requests.append(("GET", request.url.path, dict(request.query_params)))
        if n == "77777":
            return JSONResponse({"error": "database unavailable"}, status_code=503)
        if n == "88888":
            await asyncio.sleep(1.5)  # longer than the step's timeout
        return {"order_number": n, "status": "en camino", "eta": "2025-01-09"}

    @app.post("/documents/received")
    async def documents(request: Request):
        body = await request.json()
        stub.requests.append(("POST", request.url.path, body))
        return {"ticket": "DOC-000042", "count": len(body["documents"])}

    @app.post("/hook")
    async def hook(request: Request):
        if stub.hook_failures > 0:
            stub.hook_failures -= 1
            return JSONResponse({"error": "agent platform down"}, status_code=500)
        stub.handoffs.append(await request.json())
        stub.hook_requests.append((dict(request.headers), await request.body()))
        return {"ok": True}

    return app


@dataclass
class Env:
    settings: Settings
    store: Store
    channel: WhatsAppChannel
    engine: FlowEngine
    url: str
    stub: Stub
    http: httpx.AsyncClient

    async def reply(self, **body) -> dict:
        r = await self.http.post(f"/sandbox/customers/{NUMBER}/reply", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["webhook"]["delivered"] is True
        return r.json()

    async def outbound(self, count: int, timeout_s: float = 15.0):
        """Wait until the customer has received ``count`` messages; returns them."""
        await wait_for(lambda: len(self.channel.sandbox.outbound(NUMBER)) >= count, timeout_s, f"{count} messages in the sandbox")
        await asyncio.sleep(0.1)  # nothing extra arrives right behind
        return self.channel.sandbox.outbound(NUMBER)

    async def conversation(self, call_id: str) -> dict:
        listed = (await self.http.get("/v1/conversations", params={"call_id": call_id})).json()
        assert len(listed) == 1
        r = await self.http.get(f"/v1/conversations/{listed[0]['conversation_id']}")
        assert r.status_code == 200
        return r.json()


async def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def gateway_like(tmp_path: Path, *, hook_failures: int = 0, **flow_settings):
    """What ``puente serve`` runs once wired: webhook router + sandbox + conversations API + sender + flows,
    with a stub of the customer's backend and of the chat agents' handoff webhook."""
    stub = Stub(hook_failures=hook_failures)
    async with serve(stub_app(stub)) as stub_url:
        stub.url = stub_url
        flows = FlowSettings(**{"backend_url": stub_url, "handoff_webhook_url": stub_url + "/hook", "handoff_backoff_s": 0.05, **flow_settings})
        async with whatsapp_bench(f"sqlite:///{tmp_path / 'puente.db'}", flows=flows,
                                  routers=[create_conversations_router]) as bench:
            yield Env(bench.settings, bench.store, bench.channel, bench.engine, bench.url, stub, bench.http)


def test_order_status_from_deflection_to_resolution_and_csat(tmp_path):
    async def scenario():
        async with gateway_like(tmp_path) as env:
            call_id = await add_deflection(env.store, transcript="Hola, quiero saber dónde está mi pedido.")
            # 1. The deflection template arrives with the reason in words and the caller's own words.
            [template] = await env.outbound(1)
            assert template.type == "template"
            assert template.text == ('Hola, estábamos atendiendo tu llamada sobre el estado de tu pedido. '
                                     'Dijiste: "Hola, quiero saber dónde está mi pedido.". ¿Seguimos por aquí?')
            assert template.request["template"]["components"][0]["parameters"][1]["text"] == "Hola, quiero saber dónde está mi pedido."
            button = template.buttons[0]
            assert button["title"] == "Sí, sigamos"

            # 2. The customer taps "Sí, sigamos": the order_status flow starts and asks for the number.
            await env.reply(button={"payload": button["payload"], "text": button["title"]}, reply_to=template.wamid)
            out = await env.outbound(2)
            assert out[1].type == "text" and "número de pedido" in out[1].text

            # 3. The number comes back (with noise around it) → stub backend → the answer and the CSAT list, in one message.
            await env.reply(text="sí, es el 12345 gracias")
            out = await env.outbound(3)
            assert env.stub.requests == [("GET", "/orders/12345", {"lang": "es"})]
            answer = out[2]
            assert answer.type == "interactive"
            assert answer.text.startswith("Tu pedido 12345 está en camino. Fecha estimada de entrega: 2025-01-09.")
            assert "del 1 (mala) al 5 (excelente)" in answer.text
            assert [b["id"] for b in answer.buttons] == ["csat:1", "csat:2", "csat:3", "csat:4", "csat:5"]
            assert {b["kind"] for b in answer.buttons} == {"list_reply"}

            # 4. The customer rates 5 from the list.
            five = answer.buttons[4]
            await env.reply(interactive={"type": "list_reply", "id": five["id"], "title": five["title"]}, reply_to=answer.wamid)
            out = await env.outbound(4)
            assert "Gracias por tu calificación" in out[3].text

            record = await env.conversation(call_id)
            assert record["intent"] == "order_status" and record["flow"] == "order_status" and record["language"] == "es"
            assert record["status"] == "closed" and record["resolution"] == "resolved" and record["csat"] == 5
            assert record["variables"] == {"order_number": "12345", "status": "en camino", "eta": "2025-01-09"}
            assert record["context"]["transcript"] == "Hola, quiero saber dónde está mi pedido."
            assert record["resolved_at"] and record["closed_at"] and record["handle_time_s"] >= 0
            assert record["handoffs"] == []
            steps = [(s["step"], s["outcome"]) for s in record["steps"]]
            assert steps == [
                ("order_number", "started"), ("order_number", "asked"), ("order_number", "answered"), ("lookup", "ok"),
                ("answer", "said"), ("done", "resolved"), ("csat", "asked"), ("csat", "scored"),
            ]
            assert [s["seq"] for s in record["steps"]] == list(range(1, 9))
            # The chat: three customer messages and three business messages, each delivered through the outbox.
            assert [(m["direction"], m["type"]) for m in record["messages"]] == [
                ("in", "button"), ("out", "text"), ("in", "text"), ("out", "list"), ("in", "interactive"), ("out", "text"),
            ]
            sent = [m for m in record["messages"] if m["direction"] == "out"]
            conv = record["conversation_id"]
            assert [m["idempotency_key"] for m in sent] == [f"conv:{conv}:step:{n}" for n in (1, 2, 3)]
            await wait_for(lambda: _all_read(env, call_id), 10, "read statuses")
            assert [m.wamid for m in env.channel.sandbox.outbound(NUMBER)[1:]] == [
                m["wamid"] for m in (await env.conversation(call_id))["messages"] if m["direction"] == "out"
            ]
            # The call record shows the flow's messages next to the deflection.
            call = await env.store.calls.get(call_id)
            assert [m["purpose"] for m in call["messages"]] == ["deflection", "flow", "flow", "flow"]
    asyncio.run(scenario())


async def _all_read(env: Env, call_id: str) -> bool:
    call = await env.store.calls.get(call_id)
    return all(m["status"] == "read" for m in call["messages"])


def test_order_number_heard_on_the_call_is_not_asked_again(tmp_path):
    async def scenario():
        async with gateway_like(tmp_path) as env:
            call_id = await add_deflection(env.store, transcript="Quiero saber dónde está mi pedido 54 321.")
            [template] = await env.outbound(1)
            await env.reply(button={"payload": template.buttons[0]["payload"], "text": "Sí, sigamos"}, reply_to=template.wamid)
            out = await env.outbound(2)
            assert out[1].text.startswith("Tu pedido 54321 está en camino")
            await env.reply(text="4")
            await env.outbound(3)
            record = await env.conversation(call_id)
            assert record["csat"] == 4 and record["resolution"] == "resolved"
            assert record["steps"][1]["outcome"] == "reused" and record["steps"][1]["data"]["from"] == "transcript"
    asyncio.run(scenario())


@pytest.mark.parametrize("order, error", [("77777", "HTTP 503"), ("88888", "ReadTimeout")])
def test_failing_backend_hands_off_to_an_agent_with_the_full_context(tmp_path, order, error):
    async def scenario():
        async with gateway_like(tmp_path, hook_failures=1, handoff_secret="s3cret") as env:
            call_id = await add_deflection(env.store, transcript=f"Mi pedido {order} no ha llegado.")
            [template] = await env.outbound(1)
            sync = env.engine.library.flows["order_status"].steps["lookup"]
            sync.timeout_s = 0.5
            started = time.monotonic()
            await env.reply(text="Hola, sí")
            out = await env.outbound(2)
            assert time.monotonic() - started < 5  # never left hanging on the backend
            assert "Te comunico con una persona" in out[1].text
            await wait_for(lambda: env.stub.handoffs, 10, "the handoff webhook")
            [hook] = env.stub.handoffs
            [(headers, raw)] = env.stub.hook_requests
            assert headers["x-puente-signature-256"] == "sha256=" + hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
            assert headers["idempotency-key"].startswith("puente-handoff-")
            # The delivery is recorded once the receiver has answered, just after it got the hook.
            record = await wait_for(lambda: _handoff_status(env, call_id, "delivered"), 10, "the recorded delivery")
            assert hook["conversation_id"] == record["conversation_id"] and hook["call_id"] == call_id
            assert hook["intent"] == "order_status" and hook["language"] == "es" and hook["customer_number"] == NUMBER
            assert hook["transcript"] == f"Mi pedido {order} no ha llegado."
            assert hook["reason"] == "flow" and hook["step"] == "handoff"
            assert hook["variables"]["order_number"] == order and error in hook["variables"]["backend_error"]
            assert hook["call"]["started_at"] and hook["call"]["decided_at"] and hook["call"]["time_to_decision_s"] >= 0
            assert hook["call"]["decisions"][0]["route"] == "whatsapp"
            assert [(m["direction"], m["text"]) for m in hook["chat"]][0] == ("in", "Hola, sí")
            assert hook["chat"][-1]["direction"] == "out" and "Te comunico" in hook["chat"][-1]["text"]
            assert record["status"] == "handoff" and record["resolution"] == "handoff" and record["csat"] is None
            [handoff] = record["handoffs"]
            # The first webhook attempt failed (500) and is recorded; the retry delivered it.
            assert handoff["status"] == "delivered" and handoff["attempts"] == 2 and handoff["response_status"] == 200
            assert [s["outcome"] for s in record["steps"]][-2:] == ["error", "handoff"]
            # Later customer messages are kept for the agent, and the bot stays quiet.
            await env.reply(text="¿hola?")
            await asyncio.sleep(0.3)
            assert len(env.channel.sandbox.outbound(NUMBER)) == 2
            record = await env.conversation(call_id)
            assert record["messages"][-1]["text"] == "¿hola?" and record["status"] == "handoff"
    asyncio.run(scenario())


def test_a_handoff_webhook_that_keeps_failing_is_recorded_and_redelivered_later(tmp_path):
    async def scenario():
        async with gateway_like(tmp_path, hook_failures=100, handoff_attempts=2, handoff_retry_interval_s=0.2) as env:
            call_id = await add_deflection(env.store)
            [template] = await env.outbound(1)
            await env.reply(button={"payload": template.buttons[1]["payload"], "text": template.buttons[1]["title"]}, reply_to=template.wamid)
            await env.outbound(2)
            record = await wait_for(lambda: _handoff_status(env, call_id, "failed"), 10, "a failed handoff")
            [handoff] = record["handoffs"]
            assert handoff["attempts"] >= 2 and handoff["last_error"] == "HTTP 500" and handoff["payload"]["reason"] == "customer_requested_call"
            env.stub.hook_failures = 0  # the agent platform is back: the background pass delivers it
            record = await wait_for(lambda: _handoff_status(env, call_id, "delivered"), 10, "redelivery")
            assert len(env.stub.handoffs) == 1 and env.stub.handoffs[0]["conversation_id"] == record["conversation_id"]
    asyncio.run(scenario())


async def _handoff_status(env: Env, call_id: str, status: str):
    record = await env.conversation(call_id)
    return record if record["handoffs"] and record["handoffs"][0]["status"] == status else None


def test_send_documents_stores_the_image_reference(tmp_path):
    async def scenario():
        async with gateway_like(tmp_path) as env:
            call_id = await add_deflection(env.store, intent="send_documents", transcript="Quiero enviar mis documentos.")
            [template] = await env.outbound(1)
            assert "el envío de tus documentos" in template.text
            await env.reply(button={"payload": template.buttons[0]["payload"], "text": "Sí, sigamos"}, reply_to=template.wamid)
            out = await env.outbound(2)
            assert "como foto o PDF" in out[1].text and [b["title"] for b in out[1].buttons] == ["Listo"]
            await env.reply(image={"id": "1234567890123456", "mime_type": "image/jpeg", "caption": "INE frente"})
            out = await env.outbound(3)
            assert out[2].text.startswith("Recibido (1)")
            done = out[2].buttons[0]
            await env.reply(interactive={"type": "button_reply", "id": done["id"], "title": done["title"]}, reply_to=out[2].wamid)
            out = await env.outbound(4)
            assert out[3].text.startswith("Recibimos tus documentos (folio DOC-000042)")
            [(method, path, body)] = env.stub.requests
            assert (method, path) == ("POST", "/documents/received") and body["call_id"] == call_id
            assert body["documents"][0]["media_id"] == "1234567890123456" and body["documents"][0]["mime_type"] == "image/jpeg"
            five = out[3].buttons[4]
            await env.reply(interactive={"type": "list_reply", "id": five["id"], "title": five["title"]})
            await env.outbound(5)
            record = await env.conversation(call_id)
            assert record["csat"] == 5 and record["resolution"] == "resolved"
            [media] = record["media"]
            assert media["kind"] == "image" and media["media_id"] == "1234567890123456" and media["mime_type"] == "image/jpeg"
            assert media["caption"] == "INE frente" and media["sha256"]
            image_in = [m for m in record["messages"] if m["type"] == "image"][0]
            assert image_in["text"] == "INE frente" and image_in["data"]["media"]["id"] == "1234567890123456"
    asyncio.run(scenario())
