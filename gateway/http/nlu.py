"""``POST /v1/nlu/parse`` (Rasa's ``/model/parse`` answer shape) and ``POST /v1/nlu/reload``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from gateway.service import Gateway
from nlu import ModelLoadError


class ParseRequest(BaseModel):
    text: str = Field(..., max_length=2000, description="What the caller said.")


class ReloadRequest(BaseModel):
    model: Path | None = Field(None, description="Model directory; default: the configured nlu.model.")


def create_nlu_router(gateway: Gateway) -> APIRouter:
    router = APIRouter(prefix="/v1/nlu", tags=["nlu"])

    @router.post("/reload")
    async def reload(request: ReloadRequest | None = None) -> dict[str, Any]:
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

    @router.post("/parse")
    async def parse(request: ParseRequest) -> dict[str, Any]:
        result, _elapsed = await gateway.speech.classify(request.text)
        return result.to_rasa()

    return router
