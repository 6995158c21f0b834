"""``/webhooks/whatsapp``: Meta's verification handshake and the signed webhook, every field of it.

A POST is refused before anything is parsed unless its ``X-Hub-Signature-256`` is the
HMAC-SHA256 of the exact raw body under the app secret; a body over the size limit is
refused while it is being read. Accepted events are written durably (a few milliseconds)
and then answered 200 — nothing slow (no outbound call) happens before the answer, and
anything that reacts to a customer's message runs afterwards as its own task. ``messages``
brings statuses and customers' messages; every other field (template status and quality,
phone number, account updates, and fields Puente does not know) is recorded as received
and handed to the account's state (``AccountHealth``), so Meta never re-sends it.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import SecretStr, ValidationError

from gateway.numbers import whatsapp_number
from gateway.signing import signature_valid
from gateway.store import AccountEvent, InboundRecord, StatusUpdate, Store
from gateway.timing import Clock
from gateway.whatsapp import wire
from gateway.whatsapp.account import AccountHealth
from gateway.whatsapp.errors import FALLBACK_CODES

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"


@dataclass(frozen=True)
class InboundEvent:
    """A new customer message, handed to whoever continues the conversation."""

    call_id: str | None
    number: str
    wamid: str
    type: str
    text: str | None
    payload: str | None
    context_wamid: str | None
    # For image/document/audio/video/sticker messages: {"id", "mime_type", "sha256", "caption", "filename"}
    # (the media id is what the Cloud API's media endpoint downloads); ``None`` otherwise.
    media: dict[str, Any] | None = None


def _timestamp(value: str | int) -> datetime:
    return datetime.fromtimestamp(int(value), tz=timezone.utc)


def _inbound(message: wire.InboundMessage) -> InboundRecord:
    text = payload = None
    if message.text is not None:
        text = message.text.body
    elif message.button is not None:
        text, payload = message.button.text, message.button.payload
    elif message.interactive is not None:
        reply = message.interactive.button_reply or message.interactive.list_reply
        if reply is not None:
            text, payload = reply.title, reply.id
    elif message.media is not None:
        text = message.media.caption
    return InboundRecord(
        wamid=message.id, from_number=whatsapp_number(message.from_), type=message.type, timestamp=_timestamp(message.timestamp),
        text=text, payload=payload, context_wamid=message.context.id if message.context else None,
        message=message.model_dump(mode="json", by_alias=True, exclude_none=True),
    )


def _status(status: wire.Status) -> StatusUpdate:
    return StatusUpdate(
        wamid=status.id, status=status.status, timestamp=_timestamp(status.timestamp), recipient_id=status.recipient_id,
        callback_data=status.biz_opaque_callback_data,
        errors=tuple(e.model_dump(mode="json", exclude_none=True) for e in status.errors),
    )


_TRACKED_STATUSES = frozenset({"sent", "delivered", "read", "failed"})


def create_whatsapp_router(
    *,
    store: Store,
    app_secret: SecretStr,
    verify_token: SecretStr | None,
    phone_number_id: str,
    max_body_bytes: int,
    clock: Clock,
    account: AccountHealth,
    on_inbound: Callable[[InboundEvent], Awaitable[None]] | None = None,
) -> APIRouter:
    router = APIRouter()
    followups: set[asyncio.Task[None]] = set()

    @router.get("/webhooks/whatsapp", include_in_schema=False)
    async def verify(
        mode: str | None = Query(None, alias="hub.mode"),
        token: str | None = Query(None, alias="hub.verify_token"),
        challenge: str | None = Query(None, alias="hub.challenge", max_length=256),
    ) -> Response:
        ok = (
            verify_token is not None and mode == "subscribe" and token is not None and challenge
            and hmac.compare_digest(token.encode(), verify_token.get_secret_value().encode())
        )
        if not ok:
            return PlainTextResponse("verification refused", status_code=403)
        return PlainTextResponse(challenge)

    @router.post("/webhooks/whatsapp", include_in_schema=False)
    async def receive(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            return _refuse(413, "body too large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:  # a lying or absent Content-Length is cut off here
                return _refuse(413, "body too large")
        if not signature_valid(app_secret, bytes(body), request.headers.get(SIGNATURE_HEADER)):
            log.warning("whatsapp webhook: bad or missing signature from %s", request.client.host if request.client else "?")
            return _refuse(401, "invalid signature")
        now = clock.now()
        try:
            payload = wire.WebhookPayload.model_validate_json(bytes(body))
            statuses, inbound, events = _events(payload, phone_number_id, now)
        except (ValidationError, ValueError, OverflowError, OSError):
            return _refuse(400, "malformed payload")
        fresh = await store.whatsapp.ingest(statuses, inbound, now=now, fallback_codes=FALLBACK_CODES, events=events)
        for account_event in fresh.events:
            account.record(account_event)
        for event in (_inbound_event(record, call_id) for record, call_id in fresh.inbound):
            if on_inbound is not None:
                task = asyncio.get_running_loop().create_task(_follow_up(on_inbound, event))
                followups.add(task)
                task.add_done_callback(followups.discard)
        return JSONResponse({"received": len(statuses) + len(inbound) + len(events)})

    return router


def _events(
    payload: wire.WebhookPayload, phone_number_id: str, now: datetime,
) -> tuple[list[StatusUpdate], list[InboundRecord], list[AccountEvent]]:
    """Everything in the payload for our number and our account, converted before anything is written."""
    statuses: list[StatusUpdate] = []
    inbound: list[InboundRecord] = []
    events: list[AccountEvent] = []
    for entry in payload.entry:
        for change in entry.changes:
            if not isinstance(change, wire.MessagesChange):
                events.append(AccountEvent(
                    field=change.field, account_id=entry.id, value=change.received(),
                    occurred_at=None if entry.time is None else _timestamp(entry.time), received_at=now,
                ))
                continue
            if change.value.metadata.phone_number_id != phone_number_id:
                continue
            for error in change.value.errors:
                log.error("whatsapp webhook: platform error %s: %s", error.code, error.title or error.message)
            statuses += [_status(s) for s in change.value.statuses if s.status in _TRACKED_STATUSES]
            inbound += [_inbound(m) for m in change.value.messages]
    return statuses, inbound, events


def _inbound_event(record: InboundRecord, call_id: str | None) -> InboundEvent:
    return InboundEvent(
        call_id=call_id, number=record.from_number, wamid=record.wamid, type=record.type, text=record.text,
        payload=record.payload, context_wamid=record.context_wamid, media=_media_of(record),
    )


def _media_of(record: InboundRecord) -> dict[str, Any] | None:
    media = record.message.get(record.type) if record.type in wire.MEDIA_TYPES else None
    return dict(media) if isinstance(media, dict) else None


async def _follow_up(handler: Callable[[InboundEvent], Awaitable[None]], event: InboundEvent) -> None:
    try:
        await handler(event)
    except Exception:
        log.exception("whatsapp webhook: inbound handler failed for %s", event.wamid)


def _refuse(status_code: int, reason: str) -> Response:
    return JSONResponse({"error": reason}, status_code=status_code)
