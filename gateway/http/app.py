"""The HTTP API (FastAPI): health, call records and contexts, queues, conversations, the NLU, WhatsApp webhooks and sandbox."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from gateway.dev.demo_backend import create_demo_backend_router
from gateway.http.calls import create_calls_router
from gateway.http.conversations import create_conversations_router
from gateway.http.nlu import create_nlu_router
from gateway.http.queues import create_queues_router
from gateway.service import Gateway
from gateway.whatsapp import Sandbox


def create_app(gateway: Gateway) -> FastAPI:
    """The API of a started gateway (``gateway.http.server`` owns its lifecycle)."""
    app = FastAPI(title="Puente", version="0.1.0")
    app.include_router(create_calls_router(
        gateway.store, lambda call_id, by: gateway.request_documents(call_id, by=by)))  # /v1/calls
    app.include_router(create_conversations_router(gateway.store))  # /v1/conversations
    app.include_router(create_nlu_router(gateway))  # /v1/nlu
    app.include_router(create_queues_router(gateway.queues))  # /v1/queues
    if gateway.settings.flows.demo_backend:
        app.include_router(create_demo_backend_router())  # a stand-in for the customer's systems
    if gateway.whatsapp is not None:
        app.include_router(gateway.whatsapp.router)  # GET/POST /webhooks/whatsapp
        if gateway.whatsapp.sandbox is not None:
            app.mount(Sandbox.mount_path, gateway.whatsapp.sandbox.app)  # /sandbox/…

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return gateway.health()

    return app
