"""``GET /v1/calls``, ``GET /v1/calls/{call_id}`` and its agent's ``/context``: the record of every call."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from gateway.http.found import found
from gateway.store import Store, utcnow


def create_calls_router(store: Store) -> APIRouter:
    router = APIRouter(prefix="/v1/calls", tags=["calls"])

    @router.get("")
    async def list_calls(limit: int = Query(50, ge=1, le=500), sip_call_id: str | None = None) -> list[dict[str, Any]]:
        """Newest first: call_id, state, outcome, language, transcript, intent, confidence, route, reason, …"""
        return await store.calls.list(limit=limit, sip_call_id=sip_call_id)

    @router.get("/{call_id}")
    async def get_call(call_id: str) -> dict[str, Any]:
        """The summary plus utterances (text, timings), decisions, events and messages."""
        return found(await store.calls.get(call_id), f"call {call_id}")

    @router.get("/{call_id}/context")
    async def get_context(call_id: str, history: int = Query(10, ge=0, le=100)) -> dict[str, Any]:
        """What the agent needs: reason, confidence, transcript, keys and answers, time in queue, language,
        priority, and the customer's last contacts by number across voice and WhatsApp, with outcomes."""
        return found(await store.contexts.get(call_id, now=utcnow(), history=history), f"call {call_id}")

    return router
