"""End to end over real HTTP: outbox rows in a SQLite file → sender → sandbox Cloud API → signed
status webhooks → webhook router → the call record. Faults and crashes still give one message."""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from gateway.config import Settings, load_settings
from gateway.store import Store
from gateway.timing import SystemClock
from gateway.whatsapp import FaultRequest, OutboxWorker, WhatsAppChannel, build_whatsapp
from gateway.whatsapp.client import CloudApiClient
from gateway.whatsapp.templates import MessageBuilder, TemplateRegistry
from tests.support.store import whatsapp_inbound, whatsapp_statuses
from tests.support.whatsapp import FAST_SETTINGS, add_deflection, free_socket, serve_on

pytestmark = pytest.mark.timeout(60)



@dataclass
class Env:
    settings: Settings
    store: Store
    channel: WhatsAppChannel
    url: str
    db_url: str

    @property
    def sandbox(self):
        return self.channel.sandbox


@contextlib.asynccontextmanager
async def gateway_like(tmp_path: Path, *, start_worker: bool = True, **overrides):
    """What ``puente serve`` will run: the webhook router and the sandbox on one uvicorn server."""
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    db_url = f"sqlite:///{tmp_path / 'puente.db'}"
    settings = load_settings(environ={}, overrides={"database.url": db_url, **FAST_SETTINGS, **overrides})
    store = Store(db_url)
    channel = build_whatsapp(settings, store, local_base_url=url)
    app = FastAPI()
    app.include_router(channel.router)
    app.mount("/sandbox", channel.sandbox.app)
    async with serve_on(app, sock):
        if start_worker:
            await channel.start()
        try:
            yield Env(settings, store, channel, url, db_url)
        finally:
            await channel.stop(timeout_s=5)
    store.close()


async def wait_for(predicate, timeout_s: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def message_of(env: Env, call_id: str) -> dict:
    record = await env.store.calls.get(call_id)
    assert len(record["messages"]) == 1
    return record["messages"][0]


def status_is(env: Env, call_id: str, *statuses: str):
    async def check():
        m = await message_of(env, call_id)
        return m if m["status"] in statuses else None
    return check


def test_deflection_is_delivered_and_read_with_signed_status_webhooks(tmp_path):
    async def scenario():
        async with gateway_like(tmp_path) as env:
            call_id = await add_deflection(env.store)
            m = await wait_for(status_is(env, call_id, "read"), what="read status")
            out = env.sandbox.outbound("+525555550123")
            assert len(out) == 1 and m["wamid"] == out[0].wamid and m["wamid"].startswith("wamid.")
            assert m["purpose"] == "deflection" and m["last_error"] is None
            # The customer sees the approved template with the reason in words and their own words.
            assert out[0].text == 'Hola, estábamos atendiendo tu llamada sobre el estado de tu pedido. Dijiste: "Quiero saber dónde está mi pedido.". ¿Seguimos por aquí?'
            assert [b["title"] for b in out[0].buttons] == ["Sí, sigamos", "Prefiero llamada"]
            # Every status webhook was signed and accepted by the router.
            assert [w["status_code"] for w in env.sandbox.webhooks] == [200, 200, 200]
            statuses = whatsapp_statuses(env.store, m["wamid"])
            assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
            events = [e["type"] for e in (await env.store.calls.get(call_id))["events"]]
            assert "whatsapp_accepted" in events

            # The customer taps a quick reply in the chat: it comes back as a signed webhook, linked to the call.
            async with httpx.AsyncClient(base_url=env.url, trust_env=False) as http:
                page = await http.get("/sandbox/chat/+525555550123")
                assert page.status_code == 200 and "<script>" in page.text and "http" not in page.text.split("<script>")[1]
                button = out[0].buttons[0]
                r = await http.post("/sandbox/customers/+525555550123/reply",
                                    json={"button": {"payload": button["payload"], "text": button["title"]}, "reply_to": m["wamid"]})
                assert r.status_code == 200 and r.json()["webhook"]["delivered"] is True
            inbound = whatsapp_inbound(env.store, "+525555550123")
            assert len(inbound) == 1 and inbound[0]["call_id"] == call_id and inbound[0]["payload"].startswith("continue|")
            assert await env.store.whatsapp.last_inbound("+525555550123") is not None
    asyncio.run(scenario())


def test_500s_429_burst_and_a_timeout_still_deliver_exactly_once(tmp_path):
    async def scenario():
        async with gateway_like(tmp_path, start_worker=False) as env:
            env.sandbox.inject(FaultRequest(mode="500", count=2))
            env.sandbox.inject(FaultRequest(mode="429", count=3))
            # Processed by the sandbox, but answered after the client gave up: the ambiguous case.
            env.sandbox.inject(FaultRequest(mode="timeout", count=1, delay_s=2.0))
            call_id = await add_deflection(env.store)
            await env.channel.start()
            m = await wait_for(status_is(env, call_id, "read"), what="read status")
            assert env.sandbox.requests == 6  # 2 × 500, 3 × 429, 1 timeout — and no re-send after it
            assert len(env.sandbox.outbound()) == 1 and env.sandbox.outbound()[0].wamid == m["wamid"]
            await asyncio.sleep(env.settings.whatsapp.in_doubt_grace_s + 0.5)  # nothing more happens later either
            assert len(env.sandbox.outbound()) == 1 and env.sandbox.requests == 6
            assert m["attempts"] == 6
    asyncio.run(scenario())


def test_sender_killed_mid_send_is_reconciled_not_resent_by_the_next_one(tmp_path):
    async def scenario():
        async with gateway_like(tmp_path, start_worker=False, **{"whatsapp.request_timeout_s": 10.0, "whatsapp.lease_s": 11.0}) as env:
            env.sandbox.inject(FaultRequest(mode="timeout", count=1, delay_s=3.0))
            call_id = await add_deflection(env.store)
            first = asyncio.get_running_loop().create_task(env.channel.worker.run())
            await wait_for(_async(lambda: env.sandbox.requests == 1), what="the first request")
            first.cancel()  # the "crash": the send is in flight, its answer never processed
            with contextlib.suppress(asyncio.CancelledError):
                await first
            # A fresh sender on a fresh connection to the same database file (a restarted gateway).
            restarted = Store(env.db_url)
            settings = env.settings.whatsapp.model_copy(update={"lease_s": 0.5, "request_timeout_s": 0.4})
            async with httpx.AsyncClient(trust_env=False) as http:
                worker = OutboxWorker(
                    restarted, CloudApiClient(http, base_url=env.url + "/sandbox", api_version="v21.0",
                                              phone_number_id=settings.phone_number_id,
                                              access_token=env.channel.client._token),
                    MessageBuilder(TemplateRegistry(settings.templates), settings.intent_labels, settings.reason_templates), settings,
                    clock=SystemClock(), rng=__import__("random").Random(1),
                )
                task = asyncio.get_running_loop().create_task(worker.run())
                try:
                    m = await wait_for(status_is(env, call_id, "read"), what="read status")
                    await asyncio.sleep(settings.in_doubt_grace_s + 0.5)
                finally:
                    worker.stop()
                    await asyncio.wait_for(task, 5)
            assert len(env.sandbox.outbound()) == 1 and env.sandbox.requests == 1
            assert m["wamid"] == env.sandbox.outbound()[0].wamid
            restarted.close()
    asyncio.run(scenario())


def test_sender_killed_after_claim_before_the_request_left_sends_once_after_the_grace(tmp_path):
    async def scenario():
        async with gateway_like(tmp_path, start_worker=False) as env:
            call_id = await add_deflection(env.store)
            s = env.settings.whatsapp
            # The old sender claimed the row (attempt recorded, in doubt) and died before sending.
            claim = await env.store.outbox.claim(now=SystemClock().now(), lease_s=0.3, in_doubt_grace_s=s.in_doubt_grace_s)
            assert claim is not None and claim.attempts == 1
            started = time.monotonic()
            await env.channel.start()
            m = await wait_for(status_is(env, call_id, "read"), what="read status")
            assert time.monotonic() - started >= s.in_doubt_grace_s * 0.8  # it waited for a webhook that never came
            assert len(env.sandbox.outbound()) == 1 and m["attempts"] == 2
    asyncio.run(scenario())


def test_gateway_killed_between_decision_and_send_sends_once_after_restart(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'puente.db'}"
    first = Store(db_url)
    call_id = asyncio.run(add_deflection(first))  # the decision committed; the process dies before any send
    first.close()

    async def scenario():
        async with gateway_like(tmp_path) as env:
            assert env.db_url == db_url
            await wait_for(status_is(env, call_id, "read"), what="read status")
            assert len(env.sandbox.outbound()) == 1
    asyncio.run(scenario())


def test_free_form_text_needs_the_customer_window_and_undeliverable_numbers_fail_for_fallback(tmp_path):
    async def scenario():
        async with gateway_like(tmp_path) as env:
            number = "+525555550199"
            text = {"type": "text", "text": "¿Te ayudo con algo más?"}
            before = await add_deflection(env.store, number=number, payload=text, purpose="followup")
            m = await wait_for(status_is(env, before, "failed"), what="failed")
            assert m["last_error"].startswith("131047") and env.sandbox.requests == 0
            async with httpx.AsyncClient(base_url=env.url, trust_env=False) as http:
                r = await http.post(f"/sandbox/customers/{number}/reply", json={"text": "hola"})
                assert r.json()["webhook"]["delivered"] is True
            after = await add_deflection(env.store, number=number, payload=text, purpose="followup")
            await wait_for(status_is(env, after, "read"), what="read")
            assert env.sandbox.outbound(number)[-1].text == "¿Te ayudo con algo más?"

            lost = "+525555550177"
            env.sandbox.inject(FaultRequest(undeliverable=[lost]))
            call_id = await add_deflection(env.store, number=lost)
            m = await wait_for(status_is(env, call_id, "failed"), what="failed")
            assert m["last_error"].startswith("131026")
            events = (await env.store.calls.get(call_id))["events"]
            failed = [e for e in events if e["type"] == "whatsapp_failed"]
            assert failed and failed[0]["data"]["fallback"] is True
    asyncio.run(scenario())


def _async(fn):
    async def check():
        return fn()
    return check
