"""Helpers for tests of the WhatsApp channel: a controllable clock, a real HTTP server on a free
loopback port, a call with a deflection decision written the way a call session writes it, and the
webhooks Meta sends about the account (template status, quality…), shaped as its reference shows."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import uvicorn
from fastapi import APIRouter, FastAPI

from gateway.config import FlowSettings, Settings, load_settings
from gateway.flows import FlowEngine
from gateway.store import AccountEvent, DecisionRecord, NewCall, OutboundMessage, Store
from gateway.whatsapp import AccountHealth, TemplateRegistry, build_whatsapp

#: Settings that make retries, leases and pacing take milliseconds instead of seconds.
FAST_SETTINGS = {
    "whatsapp.backoff_base_s": 0.05,
    "whatsapp.backoff_cap_s": 0.2,
    "whatsapp.poll_interval_s": 0.05,
    "whatsapp.request_timeout_s": 1.0,
    "whatsapp.lease_s": 2.0,
    "whatsapp.in_doubt_grace_s": 1.0,
    "whatsapp.per_user_interval_s": 0.0,
}


class FakeClock:
    """Time moves only when someone sleeps on it (or ``advance`` is called)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._start = start or datetime(2025, 1, 6, 12, 0, tzinfo=timezone.utc)
        self.elapsed = 0.0

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return self.elapsed

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds

    async def sleep(self, seconds: float) -> None:
        self.elapsed += max(0.0, seconds)
        await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 and a free port; yields its base URL."""
    async with serve_on(app, free_socket()) as url:
        yield url


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve_on(app: FastAPI, sock: socket.socket) -> AsyncIterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  (older uvicorn)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    for _ in range(200):  # bounded: 10 s
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    if not server.started:
        task.cancel()
        raise RuntimeError("test HTTP server did not start")
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def add_deflection(
    store: Store, *, number: str = "+525555550123", language: str = "es", intent: str = "order_status",
    transcript: str = "Quiero saber dónde está mi pedido.", payload: dict | None = None, purpose: str = "deflection",
) -> str:
    """A call and its ``whatsapp`` decision with the outbound message, in one transaction as the session does."""
    call_id = str(uuid.uuid4())
    await store.calls.create(
        NewCall(call_id=call_id, sip_call_id=f"sip-{call_id}", from_uri=f"sip:{number}@127.0.0.1", to_uri="sip:es@127.0.0.1",
                line="es", caller_number=number, remote_address="127.0.0.1:5062", asr_model="test", nlu_version="test"),
        state="deciding",
    )
    await store.calls.record_decision(
        call_id,
        DecisionRecord(seq=1, utterance_seq=1, intent=intent, confidence=0.9, route="whatsapp", reason=f"{intent} routes to whatsapp",
                       ranking=[], nlu_version="test", timings={}),
        OutboundMessage(
            purpose=purpose, to_number=number,
            payload=payload or {"template": "call_followup", "language": language, "parameters": [intent, transcript],
                                "context": {"intent": intent, "transcript": transcript, "language": language}},
        ),
    )
    return call_id


def deflect(store: Store, **kwargs) -> str:
    """``add_deflection`` for synchronous tests (on an event loop of its own)."""
    return asyncio.run(add_deflection(store, **kwargs))


#: The webhook entries' time of the account events below (unix seconds): the FakeClock's start.
T0 = 1736164800
WABA = "102290129340398"


def template_status(event: str, *, name: str = "call_followup", language: str | None = "es", **more: Any) -> dict[str, Any]:
    """The value of a ``message_template_status_update`` (``language=None``: an event that names none)."""
    value: dict[str, Any] = {"event": event, "message_template_id": 1689556908129832, "message_template_name": name,
                             "reason": "NONE", **more}
    if language is not None:
        value["message_template_language"] = language
    return value


def account_envelope(field: str, value: Any, *, time: int = T0, account_id: str = WABA) -> dict[str, Any]:
    """A signed-webhook body carrying one management change, as Meta posts it (no metadata, an entry ``time``)."""
    return {"object": "whatsapp_business_account",
            "entry": [{"id": account_id, "time": time, "changes": [{"field": field, "value": value}]}]}


def account_event(field: str, value: Any, *, time: int = T0) -> AccountEvent:
    """The same change as the webhook records it."""
    at = datetime.fromtimestamp(time, tz=timezone.utc)
    return AccountEvent(field=field, account_id=WABA, value=value, occurred_at=at, received_at=at)


def fresh_account(**settings: Any) -> AccountHealth:
    """The account's state before Meta said anything, for ``settings`` (default: deflections use call_followup, es and en)."""
    wa = load_settings(environ={}, overrides=settings).whatsapp
    return AccountHealth(wa.template, TemplateRegistry(wa.templates))


@dataclass
class WhatsAppBench:
    settings: Settings
    store: Store
    channel: Any  # gateway.whatsapp.WhatsAppChannel
    engine: FlowEngine
    url: str
    http: httpx.AsyncClient


@contextlib.asynccontextmanager
async def whatsapp_bench(
    db_url: str, *, flows: FlowSettings | None = None, routers: Sequence[Callable[[Store], APIRouter]] = (),
) -> AsyncIterator[WhatsAppBench]:
    """Webhook router + sandbox + sender + flow engine (+ ``routers`` made from the store) on a real HTTP
    server and store, as ``puente serve`` wires them."""
    sock = free_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = load_settings(environ={}, overrides={"database.url": db_url, **FAST_SETTINGS})
    store = Store(db_url)
    try:
        engine = FlowEngine(store, flows or settings.flows)
        channel = build_whatsapp(settings, store, local_base_url=url, on_inbound=engine.handle_inbound)
        engine.wake = channel.worker.wake
        app = FastAPI()
        app.include_router(channel.router)
        for router in routers:
            app.include_router(router(store))
        app.mount("/sandbox", channel.sandbox.app)
        async with serve_on(app, sock):
            await channel.start()
            await engine.start()
            try:
                async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=10) as http:
                    yield WhatsAppBench(settings, store, channel, engine, url, http)
            finally:
                await engine.stop()
                await channel.stop(timeout_s=5)
    finally:
        store.close()


async def received(channel: Any, number: str, count: int, timeout_s: float = 15.0) -> list:
    """The business's messages to ``number`` in the sandbox, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout_s
    while len(channel.sandbox.outbound(number)) < count:
        assert time.monotonic() < deadline, f"timed out waiting for {count} messages to {number} in the sandbox"
        await asyncio.sleep(0.05)
    return channel.sandbox.outbound(number)
