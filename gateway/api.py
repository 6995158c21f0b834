"""The HTTP API (FastAPI): health, call records, and the NLU in Rasa's response shape."""
from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from gateway.service import Gateway


class ParseRequest(BaseModel):
    text: str = Field(..., max_length=2000, description="What the caller said.")


def create_app(gateway: Gateway) -> FastAPI:
    """The API of a started gateway (``gateway.server`` owns its lifecycle)."""
    app = FastAPI(title="Puente", version="0.1.0")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return gateway.health()

    @app.get("/v1/calls")
    async def list_calls(
        limit: int = Query(50, ge=1, le=500), sip_call_id: str | None = None
    ) -> list[dict[str, Any]]:
        return await gateway.store.run(gateway.store.sync.list_calls, limit=limit, sip_call_id=sip_call_id)

    @app.get("/v1/calls/{call_id}")
    async def get_call(call_id: str) -> dict[str, Any]:
        record = await gateway.store.run(gateway.store.sync.get_call, call_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"no call {call_id}")
        return record

    @app.post("/v1/nlu/parse")
    async def nlu_parse(request: ParseRequest) -> dict[str, Any]:
        result, _elapsed = await gateway.speech.classify(request.text)
        return result.to_rasa()

    return app
