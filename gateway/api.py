"""The HTTP API (FastAPI): health, call records, and the NLU in Rasa's response shape."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from gateway.flows import create_conversations_router, create_demo_backend_router
from gateway.service import Gateway
from gateway.whatsapp import Sandbox
from nlu.model import ModelLoadError


class ParseRequest(BaseModel):
    text: str = Field(..., max_length=2000, description="What the caller said.")


class ReloadRequest(BaseModel):
    model: Path | None = Field(None, description="Model directory; default: the configured nlu.model.")


def create_app(gateway: Gateway) -> FastAPI:
    """The API of a started gateway (``gateway.server`` owns its lifecycle)."""
    app = FastAPI(title="Puente", version="0.1.0")
    app.include_router(create_conversations_router(gateway.store))  # /v1/conversations
    if gateway.settings.flows.demo_backend:
        app.include_router(create_demo_backend_router())  # a stand-in for the customer's systems
    if gateway.whatsapp is not None:
        app.include_router(gateway.whatsapp.router)  # GET/POST /webhooks/whatsapp
        if gateway.whatsapp.sandbox is not None:
            app.mount(Sandbox.mount_path, gateway.whatsapp.sandbox.app)  # /sandbox/…

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

    @app.post("/v1/nlu/reload")
    async def nlu_reload(request: ReloadRequest | None = None) -> dict[str, Any]:
        """Switch the intent model without a restart; a model that does not load is refused (422)
        and the running one keeps serving."""
        directory = (request.model if request else None) or gateway.settings.nlu.model
        if directory is None:
            raise HTTPException(status_code=400, detail="no model directory given and none configured (nlu.model)")
        try:
            previous, current = await gateway.reload_nlu(directory)
        except ModelLoadError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        return {"previous_version": previous, "version": current, "model": str(directory)}

    @app.post("/v1/nlu/parse")
    async def nlu_parse(request: ParseRequest) -> dict[str, Any]:
        result, _elapsed = await gateway.speech.classify(request.text)
        return result.to_rasa()

    return app
