"""``GET /v1/calls``, ``GET /v1/calls/{call_id}``, its agent's ``/context`` and the agent's ``/documents`` button."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from gateway.http.found import found
from gateway.store import Store, utcnow


class DocumentsRequest(BaseModel):
    by: str = Field("agent", max_length=64, description="Who asked (the agent's id), for the call's record.")


def create_calls_router(store: Store, documents: Callable[[str, str], str | None]) -> APIRouter:
    """``documents(call_id, by)``: ask a live call's session for the documents link; why not, or None."""
    router = APIRouter(prefix="/v1/calls", tags=["calls"])

    @router.get("")
    async def list_calls(limit: int = Query(50, ge=1, le=500), sip_call_id: str | None = None) -> list[dict[str, Any]]:
        """Newest first: call_id, state, outcome, language, transcript, intent, confidence, route, reason, …"""
        return await store.calls.list(limit=limit, sip_call_id=sip_call_id)

    @router.get("/{call_id}")
    async def get_call(call_id: str) -> dict[str, Any]:
        """The summary plus utterances (text, timings), decisions, events and messages."""
        return found(await store.calls.get(call_id), f"call {call_id}")

    @router.post("/{call_id}/documents", status_code=202)
    async def send_documents(call_id: str, request: DocumentsRequest | None = None) -> dict[str, Any]:
        """The agent's button: send the caller the WhatsApp link for documents and photos while the call goes on.
        ``404`` when the call is not up, ``409`` when it is not in voice; the outcome is in the call's events
        (``documents_link_sent`` or ``documents_link_skipped`` with why)."""
        if await store.calls.get(call_id) is None:
            raise HTTPException(404, f"call {call_id} not found")
        problem = documents(call_id, (request or DocumentsRequest()).by)
        if problem is not None:
            raise HTTPException(409, problem)
        return {"call_id": call_id, "requested": True}

    @router.get("/{call_id}/context")
    async def get_context(call_id: str, history: int = Query(10, ge=0, le=100)) -> dict[str, Any]:
        """What the agent needs: reason, confidence, transcript, keys and answers, time in queue, language,
        priority, and the customer's last contacts by number across voice and WhatsApp, with outcomes."""
        return found(await store.contexts.get(call_id, now=utcnow(), history=history), f"call {call_id}")

    return router
