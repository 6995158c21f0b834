"""A DEMO backend under ``/demo-backend`` — a stand-in for the customer's own systems (orders, documents,
payments, appointments, policies, customer records), so the default flows complete offline.

It invents deterministic answers from the numbers it is given; it stores nothing and must not
be used in production: point ``flows.backend_url`` (or each flow's ``url``) at the real systems.
Order numbers ending in 0 do not exist (404), to show the "not found" path.
"""
from __future__ import annotations

import hashlib
from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

PREFIX = "/demo-backend"

_ORDER_STATUS = {
    "es": ["en preparación en nuestro almacén", "en camino con la paquetería", "entregado"],
    "en": ["being prepared at our warehouse", "on its way with the courier", "delivered"],
}
_DOCUMENTS = {
    "es": {"invoice": "factura", "receipt": "recibo", "statement": "estado de cuenta"},
    "en": {"invoice": "invoice", "receipt": "receipt", "statement": "statement"},
}


def _seed(*parts: str) -> int:
    return int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:8], 16)


def _lang(lang: str | None) -> str:
    return "en" if (lang or "").lower().startswith("en") else "es"


def create_demo_backend_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["demo backend (stand-in for the customer's systems)"])

    @router.get("/orders/{order_number}")
    async def order(order_number: str, lang: str | None = None) -> JSONResponse:
        if not order_number.isdigit() or order_number.endswith("0"):
            return JSONResponse({"error": "order not found", "order_number": order_number}, status_code=404)
        n = int(order_number)
        eta = date.today() + timedelta(days=1 + n % 4)
        return JSONResponse({"order_number": order_number, "status": _ORDER_STATUS[_lang(lang)][n % 3], "eta": eta.isoformat()})

    @router.get("/documents")
    async def document(request: Request, type: str = Query("invoice"), month: str = Query(...), number: str = "", lang: str | None = None) -> dict[str, Any]:
        label = _DOCUMENTS[_lang(lang)].get(type, type)
        ref = f"{type}-{_seed(number, type, month):08x}"
        return {"url": f"{str(request.base_url).rstrip('/')}{PREFIX}/files/{ref}.pdf", "label": label, "month": month}

    @router.get("/files/{name}")
    async def file(name: str) -> PlainTextResponse:
        return PlainTextResponse(f"Puente demo document {name} (stand-in for the customer's document system)\n")

    @router.post("/payments")
    async def payment(request: Request, data: dict[str, Any] = Body(default_factory=dict)) -> dict[str, Any]:
        number = str(data.get("number", ""))
        amount = 100 + _seed(number, "amount") % 900
        ref = f"PAY-{_seed(number, 'pay'):08X}"
        return {"url": f"{str(request.base_url).rstrip('/')}{PREFIX}/pay/{ref}", "amount": f"{amount}.00", "currency": "MXN", "reference": ref}

    @router.get("/pay/{ref}")
    async def pay_page(ref: str) -> PlainTextResponse:
        return PlainTextResponse(f"Puente demo payment page {ref} (stand-in for the customer's payment provider)\n")

    @router.get("/appointments")
    async def appointment(number: str = "", lang: str | None = None) -> dict[str, Any]:
        day = date.today() + timedelta(days=2 + _seed(number) % 5)
        return {"date": day.isoformat(), "time": f"{9 + _seed(number, 'h') % 8}:30",
                "place": "Sucursal Centro" if _lang(lang) == "es" else "Downtown branch"}

    @router.post("/appointments")
    async def appointment_change(data: dict[str, Any] = Body(default_factory=dict)) -> dict[str, Any]:
        return {"ok": True, "action": data.get("action"), "slot": data.get("slot"), "confirmation": f"APT-{_seed(str(data)):06X}"[:10]}

    @router.get("/policies")
    async def policy(number: str = "", lang: str | None = None) -> dict[str, Any]:
        renewal = date.today() + timedelta(days=30 + _seed(number) % 300)
        coverage = "cobertura amplia, deducible 5%" if _lang(lang) == "es" else "comprehensive cover, 5% deductible"
        return {"policy": f"AUTO-{_seed(number, 'p') % 100000:05d}", "coverage": coverage, "renewal": renewal.isoformat()}

    @router.post("/documents/received")
    async def documents_received(data: dict[str, Any] = Body(default_factory=dict)) -> dict[str, Any]:
        documents = data.get("documents") or []
        return {"ticket": f"DOC-{_seed(str(documents)) % 1000000:06d}", "count": len(documents)}

    @router.post("/customers/{number}")
    async def update_customer(number: str, data: dict[str, Any] = Body(default_factory=dict)) -> dict[str, Any]:
        return {"ok": True, "number": number, "updated": sorted(k for k in data if k != "number")}

    return router
