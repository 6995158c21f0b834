"""``GET /v1/conversations`` and ``GET /v1/conversations/{id}``: the WhatsApp conversations and their full record."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query

from gateway.http.found import found
from gateway.store import Store


def create_conversations_router(store: Store) -> APIRouter:
    router = APIRouter(prefix="/v1/conversations", tags=["conversations"])

    @router.get("")
    async def list_conversations(
        limit: int = Query(50, ge=1, le=500), number: str | None = None, call_id: str | None = None,
        status: Literal["new", "active", "awaiting_csat", "closed", "handoff"] | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first: id, call, number, intent, language, flow, status, step, resolution, csat, timings."""
        return await store.conversations.list(limit=limit, number=number, call_id=call_id, status=status)

    @router.get("/{conversation_id}")
    async def get_conversation(conversation_id: str) -> dict[str, Any]:
        """The summary plus context, variables, steps, messages (with delivery status), media, handoffs and call timings."""
        return found(await store.conversations.get(conversation_id), f"conversation {conversation_id}")

    return router
