"""``GET /v1/queues``: the voice queues now; ``POST /v1/queues/agents/{agent_id}``: log an agent in or out."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from gateway.queue.dispatcher import Dispatcher


class AgentPresence(BaseModel):
    online: bool


def create_queues_router(queues: Dispatcher | None) -> APIRouter:
    router = APIRouter(prefix="/v1/queues", tags=["queues"])

    @router.get("")
    async def list_queues() -> list[dict[str, Any]]:
        """Per queue: waiting callers with their wait and position, agents by state, the estimated wait
        for a new caller, the SLA and whether WhatsApp offers are on now. Empty without queues."""
        return [] if queues is None else queues.snapshot()

    @router.post("/agents/{agent_id}")
    async def set_presence(agent_id: str, presence: AgentPresence) -> dict[str, Any]:
        """Log an agent in (``{"online": true}``) or out; an agent on a call stays on it."""
        if queues is None or agent_id not in queues.agents:
            raise HTTPException(404, f"agent {agent_id} not found")
        return queues.set_online(agent_id, presence.online).as_dict(queues.now())

    return router
