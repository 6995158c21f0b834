"""A local WhatsApp Cloud API emulator, so the whole flow runs offline.

It answers ``POST /{version}/{phone_number_id}/messages`` like the real API — the same
request validation (approved templates and their parameter counts, E.164 numbers, text
and interactive limits, the 24-hour customer-service window → 131047, throughput →
130429), the same success and Graph error bodies — and then posts signed ``statuses``
webhooks (sent → delivered → read) to the gateway. A tester plays the customer through
``POST /customers/{number}/reply`` or the web chat at ``GET /chat/{number}``;
``POST /faults`` makes the next requests fail (5xx, timeouts, 429 bursts) for tests.

Mount it under ``/sandbox`` (``Sandbox.mount_path``); all its own pages use relative URLs.

One deliberate difference from Meta: with ``dedupe_callback_data`` a repeated request
carrying the same ``biz_opaque_callback_data`` returns the first message's wamid instead of
sending again (an idempotency key the real API does not have). It is off by default so the
sandbox exercises the sender's own reconciliation, which is what protects real traffic.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import httpx
import phonenumbers
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
)

from gateway.signing import sign
from gateway.timing import Clock
from gateway.whatsapp import wire
from gateway.whatsapp.templates import TemplateRegistry, parameter_problem
from gateway.whatsapp.webhooks import SIGNATURE_HEADER

log = logging.getLogger(__name__)

_OUTBOUND = TypeAdapter(wire.OutboundMessage)


@dataclass
class ChatMessage:
    """One bubble of a conversation, as the sandbox shows it."""

    wamid: str
    direction: Literal["out", "in"]
    customer: str  # digits, no '+'
    type: str
    text: str
    buttons: list[dict[str, str]]  # {"id"/"payload", "title"} the customer may tap
    status: str
    timestamp: int
    callback_data: str | None = None
    request: dict[str, Any] = field(default_factory=dict)


class FaultRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["500", "timeout", "429"] | None = None
    count: int = Field(1, ge=1, le=1000)
    delay_s: float = Field(15.0, ge=0, le=120, description="timeout: how long the answer is held back.")
    undeliverable: list[str] | None = Field(None, description="Numbers whose messages fail with 131026.")


class ReplyButton(BaseModel):
    payload: str | None = Field(None, max_length=256)
    text: str = Field(..., min_length=1, max_length=256)


class ReplyInteractive(BaseModel):
    type: Literal["button_reply", "list_reply"]
    id: str = Field(..., min_length=1, max_length=256)
    title: str = Field(..., min_length=1, max_length=256)


class ReplyMedia(BaseModel):
    """An attachment the customer sends; the sandbox invents a media id when none is given."""

    id: str | None = Field(None, max_length=128)
    mime_type: str = Field("image/jpeg", max_length=128)
    caption: str | None = Field(None, max_length=1024)
    filename: str | None = Field(None, max_length=256)
    sha256: str | None = Field(None, max_length=128)


class ReplyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, min_length=1, max_length=4096)
    button: ReplyButton | None = None
    interactive: ReplyInteractive | None = None
    image: ReplyMedia | None = None
    document: ReplyMedia | None = None
    reply_to: str | None = Field(None, description="wamid of the business message being answered.")
    name: str = Field("Sandbox customer", max_length=64)


class Sandbox:
    mount_path = "/sandbox"

    def __init__(
        self,
        *,
        registry: TemplateRegistry,
        phone_number_id: str,
        display_phone_number: str,
        business_account_id: str,
        app_secret: SecretStr,
        webhook_url: str | None,
        http: httpx.AsyncClient | None,
        clock: Clock,
        rng: random.Random,
        access_token: SecretStr | None = None,
        messages_per_second: float = 80.0,
        pair_interval_s: float = 0.0,
        status_delays_s: tuple[float, float, float] = (0.05, 0.1, 0.2),
        auto_read: bool = True,
        dedupe_callback_data: bool = False,
        window_hours: float = 24.0,
        webhook_attempts: int = 3,
    ) -> None:
        self.registry = registry
        self.phone_number_id = phone_number_id
        self.display_phone_number = display_phone_number
        self.business_account_id = business_account_id
        self._secret = app_secret
        self.webhook_url = webhook_url
        self._http = http
        self._clock = clock
        self._rng = rng
        self._token = access_token
        self._mps = messages_per_second
        self._pair_interval = pair_interval_s
        self.status_delays_s = status_delays_s
        self.auto_read = auto_read
        self.dedupe_callback_data = dedupe_callback_data
        self._window_s = window_hours * 3600
        self._webhook_attempts = webhook_attempts
        self.messages: list[ChatMessage] = []
        self.requests = 0  # POST /messages received, faults included
        self.webhooks: list[dict[str, Any]] = []  # what was posted and how it was answered
        self._faults: deque[FaultRequest] = deque()
        self._fault_delay = 0.0
        self._undeliverable: set[str] = set()
        self._last_inbound: dict[str, float] = {}
        self._last_outbound: dict[str, float] = {}
        self._by_callback: dict[str, str] = {}
        self._sent_times: deque[float] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self.app = self._build_app()

    # --- inspection (tests) ----------------------------------------------------------

    def conversation(self, number: str) -> list[ChatMessage]:
        digits = _digits(number)
        return [m for m in self.messages if m.customer == digits]

    def outbound(self, number: str | None = None) -> list[ChatMessage]:
        return [m for m in (self.conversation(number) if number else self.messages) if m.direction == "out"]

    def inject(self, fault: FaultRequest) -> None:
        if fault.mode is not None:
            self._faults.append(fault.model_copy())
        if fault.undeliverable:
            self._undeliverable |= {_digits(n) for n in fault.undeliverable}

    async def aclose(self) -> None:
        self._closing.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the emulated API ------------------------------------------------------------

    async def handle_send(self, version: str, phone_number_id: str, request: Request) -> JSONResponse:
        self.requests += 1
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or (
            self._token is not None and auth[len("Bearer "):] != self._token.get_secret_value()
        ) or not auth[len("Bearer "):].strip():
            return _graph_error(401, 190, "Error validating access token: The session is invalid.", "OAuthException")
        if phone_number_id != self.phone_number_id:
            return _graph_error(
                400, 100, f"Unsupported post request. Object with ID '{phone_number_id}' does not exist.", "GraphMethodException", subcode=33
            )
        fault = self._next_fault()
        if fault == "500":
            return _graph_error(500, 131000, "Something went wrong", "OAuthException", details="Sandbox: injected server error")
        if fault == "429":
            return _graph_error(429, 130429, "(#130429) Rate limit hit", "OAuthException", details="Cloud API message throughput has been reached.")
        if not self._take_throughput():
            return _graph_error(429, 130429, "(#130429) Rate limit hit", "OAuthException", details="Cloud API message throughput has been reached.")
        try:
            body = await request.json()
            message = _OUTBOUND.validate_python(body)
        except (ValueError, ValidationError) as exc:
            return _graph_error(400, 100, "(#100) Invalid parameter", "OAuthException", details=_first_problem(exc))
        customer = _e164_digits(message.to)
        if customer is None:
            return _graph_error(400, 100, "(#100) Invalid parameter", "OAuthException", details=f"Invalid 'to' phone number: {message.to!r}")
        if self.dedupe_callback_data and message.biz_opaque_callback_data in self._by_callback:
            return _send_ok(message.to, customer, self._by_callback[message.biz_opaque_callback_data], message.type)
        rendered = self._validate(message, customer)
        if isinstance(rendered, JSONResponse):
            return rendered
        text, buttons = rendered
        now = self._clock.now().timestamp()
        if self._pair_interval and now - self._last_outbound.get(customer, -1e18) < self._pair_interval:
            return _graph_error(400, 131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit", "OAuthException")
        self._last_outbound[customer] = now
        wamid = self._wamid()
        self.messages.append(
            ChatMessage(wamid=wamid, direction="out", customer=customer, type=message.type, text=text, buttons=buttons,
                        status="accepted", timestamp=int(now), callback_data=message.biz_opaque_callback_data,
                        request=wire.dump(message))
        )
        if message.biz_opaque_callback_data:
            self._by_callback[message.biz_opaque_callback_data] = wamid
        self._spawn(self._status_timeline(wamid, customer, message.biz_opaque_callback_data))
        if fault == "timeout":
            # Processed, but the answer comes too late: the ambiguous case a sender must survive.
            try:
                await asyncio.wait_for(self._closing.wait(), timeout=self._fault_delay)
            except asyncio.TimeoutError:
                pass
        return _send_ok(message.to, customer, wamid, message.type)

    def _validate(self, message: Any, customer: str) -> tuple[str, list[dict[str, str]]] | JSONResponse:
        if isinstance(message, wire.TemplateMessage):
            t = message.template
            template = self.registry.exact(t.name, t.language.code)  # Meta matches the approved language code exactly
            if template is None:
                return _graph_error(400, 132001, "(#132001) Template name does not exist in the translation", "OAuthException",
                                    details=f"template name ({t.name}) does not exist in {t.language.code}")
            bodies = [c for c in t.components if isinstance(c, wire.BodyComponent)]
            params = [p.text for c in bodies for p in c.parameters]
            if len(params) != template.body_parameters:
                return _graph_error(400, 132000, "(#132000) Number of parameters does not match the expected number of params", "OAuthException",
                                    details=f"body: number of localizable_params ({len(params)}) does not match the expected number of params ({template.body_parameters})")
            for p in params:
                if (problem := parameter_problem(p)) is not None:
                    return _graph_error(400, 132018, "(#132018) There was an issue with the parameters in your template.", "OAuthException", details=problem)
            for c in t.components:
                if isinstance(c, wire.QuickReplyComponent) and int(c.index) >= len(template.buttons):
                    return _graph_error(400, 131009, "(#131009) Parameter value is not valid", "OAuthException",
                                        details=f"button at index {c.index} is not a quick reply button of {t.name}")
            payloads = {int(c.index): c.parameters[0].payload for c in t.components if isinstance(c, wire.QuickReplyComponent)}
            buttons = [{"payload": payloads.get(i, b.text), "title": b.text} for i, b in enumerate(template.buttons)]
            return TemplateRegistry.render(template, params), buttons
        # Free-form messages need the customer to have written within the window; a phone call does not count.
        last = self._last_inbound.get(customer)
        if last is None or self._clock.now().timestamp() - last > self._window_s:
            return _graph_error(400, 131047, "(#131047) Re-engagement message", "OAuthException",
                                details="Message failed to send because more than 24 hours have passed since the customer last replied to this number.")
        if isinstance(message, wire.TextMessage):
            return message.text.body, []
        inter = message.interactive
        if isinstance(inter, wire.ButtonInteractive):
            ids = [b.reply.id for b in inter.action.buttons]
            if len(set(ids)) != len(ids):
                return _graph_error(400, 131009, "(#131009) Parameter value is not valid", "OAuthException", details="Buttons must have unique ids")
            return inter.body.text, [{"id": b.reply.id, "title": b.reply.title, "kind": "button_reply"} for b in inter.action.buttons]
        rows = [r for section in inter.action.sections for r in section.rows]
        if len(rows) > wire.LIST_ROWS_MAX:
            return _graph_error(400, 131009, "(#131009) Parameter value is not valid", "OAuthException", details="Total row count exceed max allowed count: 10")
        return inter.body.text, [{"id": r.id, "title": r.title, "kind": "list_reply"} for r in rows]

    # --- the customer ----------------------------------------------------------------

    async def reply(self, number: str, reply: ReplyRequest) -> dict[str, Any]:
        customer = _e164_digits(number)
        if customer is None:
            raise ValueError(f"not a phone number: {number!r}")
        now = int(self._clock.now().timestamp())
        message: dict[str, Any] = {"from": customer, "id": self._wamid(), "timestamp": str(now)}
        if reply.reply_to:
            message["context"] = {"from": self.display_phone_number, "id": reply.reply_to}
        if reply.button is not None:
            message["type"] = "button"
            message["button"] = {"payload": reply.button.payload or reply.button.text, "text": reply.button.text}
            shown = reply.button.text
        elif reply.interactive is not None:
            message["type"] = "interactive"
            message["interactive"] = {"type": reply.interactive.type, reply.interactive.type: {"id": reply.interactive.id, "title": reply.interactive.title}}
            shown = reply.interactive.title
        elif reply.image is not None or reply.document is not None:
            kind, media = ("image", reply.image) if reply.image is not None else ("document", reply.document)
            body = {"id": media.id or str(self._rng.randrange(10**15, 10**16)), "mime_type": media.mime_type,
                    "sha256": media.sha256 or base64.b64encode(self._rng.randbytes(32)).decode()}
            if media.caption:
                body["caption"] = media.caption
            if kind == "document" and media.filename:
                body["filename"] = media.filename
            message["type"] = kind
            message[kind] = body
            shown = f"[{kind}] " + (media.caption or media.filename or body["mime_type"])
        elif reply.text is not None:
            message["type"] = "text"
            message["text"] = {"body": reply.text}
            shown = reply.text
        else:
            raise ValueError("a reply needs text, button, interactive, image or document")
        self._last_inbound[customer] = float(now)
        self.messages.append(ChatMessage(wamid=message["id"], direction="in", customer=customer, type=message["type"], text=shown,
                                         buttons=[], status="received", timestamp=now))
        value = {"contacts": [{"profile": {"name": reply.name}, "wa_id": customer}], "messages": [message]}
        result = await self._post_webhook(value)
        return {"id": message["id"], "webhook": result}

    # --- webhooks --------------------------------------------------------------------

    async def _status_timeline(self, wamid: str, customer: str, callback_data: str | None) -> None:
        d_sent, d_delivered, d_read = self.status_delays_s
        await self._clock.sleep(d_sent)
        if customer in self._undeliverable:
            await self._status(wamid, customer, "failed", callback_data, errors=[{
                "code": 131026, "title": "Message undeliverable", "message": "Message undeliverable",
                "error_data": {"details": "Message Undeliverable."},
                "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
            }])
            return
        await self._status(wamid, customer, "sent", callback_data)
        await self._clock.sleep(d_delivered)
        await self._status(wamid, customer, "delivered", callback_data)
        if self.auto_read:
            await self._clock.sleep(d_read)
            await self._status(wamid, customer, "read", callback_data)

    async def _status(self, wamid: str, customer: str, status: str, callback_data: str | None, errors: list[dict[str, Any]] | None = None) -> None:
        for m in self.messages:
            if m.wamid == wamid:
                m.status = status
        entry: dict[str, Any] = {"id": wamid, "status": status, "timestamp": str(int(self._clock.now().timestamp())), "recipient_id": customer}
        if status != "failed":
            entry["conversation"] = {"id": f"sandbox-conv-{customer}", "origin": {"type": "utility"}}
            entry["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "utility", "type": "regular"}
        if callback_data:
            entry["biz_opaque_callback_data"] = callback_data
        if errors:
            entry["errors"] = errors
        await self._post_webhook({"statuses": [entry]})

    async def _post_webhook(self, value: dict[str, Any]) -> dict[str, Any]:
        payload = {
            "object": "whatsapp_business_account",
            "entry": [{
                "id": self.business_account_id,
                "changes": [{
                    "value": {"messaging_product": "whatsapp",
                              "metadata": {"display_phone_number": self.display_phone_number, "phone_number_id": self.phone_number_id},
                              **value},
                    "field": "messages",
                }],
            }],
        }
        body = json.dumps(payload, ensure_ascii=False).encode()
        record: dict[str, Any] = {"payload": payload, "status_code": None, "attempts": 0}
        self.webhooks.append(record)
        if self.webhook_url is None or self._http is None:
            return {"delivered": False, "status_code": None}
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, body)}
        for attempt in range(self._webhook_attempts):  # Meta retries failed deliveries too
            record["attempts"] = attempt + 1
            try:
                response = await self._http.post(self.webhook_url, content=body, headers=headers, timeout=5.0)
                record["status_code"] = response.status_code
                if response.is_success:
                    return {"delivered": True, "status_code": response.status_code}
            except httpx.HTTPError as exc:
                record["status_code"] = type(exc).__name__
            await self._clock.sleep(0.2 * 2 ** attempt)
        log.warning("sandbox: webhook to %s not accepted: %s", self.webhook_url, record["status_code"])
        return {"delivered": False, "status_code": record["status_code"]}

    # --- internals -------------------------------------------------------------------

    def _next_fault(self) -> str | None:
        if not self._faults:
            return None
        fault = self._faults[0]
        fault.count -= 1
        if fault.count <= 0:
            self._faults.popleft()
        self._fault_delay = fault.delay_s
        return fault.mode

    def _take_throughput(self) -> bool:
        now = self._clock.monotonic()
        while self._sent_times and now - self._sent_times[0] >= 1.0:
            self._sent_times.popleft()
        if len(self._sent_times) >= self._mps:
            return False
        self._sent_times.append(now)
        return True

    def _wamid(self) -> str:
        return "wamid." + base64.b64encode(self._rng.randbytes(27)).decode()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- HTTP ------------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Puente WhatsApp sandbox", docs_url=None, redoc_url=None, openapi_url=None)

        @app.post("/customers/{number}/reply")
        async def customer_reply(number: str, reply: ReplyRequest) -> JSONResponse:
            try:
                return JSONResponse(await self.reply(number, reply))
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)

        @app.get("/customers/{number}/messages")
        async def customer_messages(number: str) -> list[dict[str, Any]]:
            return [_public(m) for m in self.conversation(number)]

        @app.get("/messages")
        async def all_messages() -> list[dict[str, Any]]:
            return [_public(m) for m in self.messages]

        @app.post("/faults")
        async def faults(fault: FaultRequest) -> dict[str, Any]:
            self.inject(fault)
            return {"queued": [f.model_dump() for f in self._faults], "undeliverable": sorted(self._undeliverable)}

        @app.delete("/faults")
        async def clear_faults() -> dict[str, Any]:
            self._faults.clear()
            self._undeliverable.clear()
            return {"queued": []}

        @app.get("/chat/{number}", response_class=HTMLResponse)
        async def chat(number: str) -> HTMLResponse:
            digits = _e164_digits(number)
            if digits is None:
                return HTMLResponse("not a phone number", status_code=400)
            return HTMLResponse(_CHAT_PAGE.replace("__NUMBER__", digits))

        @app.post("/{version}/{phone_number_id}/messages")
        async def send(version: str, phone_number_id: str, request: Request) -> JSONResponse:
            return await self.handle_send(version, phone_number_id, request)

        return app


def _send_ok(to: str, customer: str, wamid: str, kind: str) -> JSONResponse:
    sent: dict[str, Any] = {"id": wamid}
    if kind == "template":
        sent["message_status"] = "accepted"
    return JSONResponse({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": customer}], "messages": [sent]})


def _graph_error(http_status: int, code: int, message: str, type_: str, *, details: str | None = None, subcode: int | None = None) -> JSONResponse:
    error: dict[str, Any] = {"message": message, "type": type_, "code": code, "fbtrace_id": "SandboxTrace"}
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    if subcode is not None:
        error["error_subcode"] = subcode
    return JSONResponse({"error": error}, status_code=http_status)


def _first_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"Param {'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
    return "Request body is not valid JSON"


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


def _e164_digits(number: str) -> str | None:
    """The number's digits if it is a valid international number (with or without '+')."""
    raw = number.strip()
    if not raw or any(not (ch.isdigit() or ch in "+ -()") for ch in raw):
        return None
    try:
        parsed = phonenumbers.parse("+" + _digits(raw), None)
    except phonenumbers.NumberParseException:
        return None
    return _digits(raw) if phonenumbers.is_valid_number(parsed) else None


def _public(m: ChatMessage) -> dict[str, Any]:
    data = asdict(m)
    data.pop("request")
    return data


_CHAT_PAGE = """<!doctype html>
<html lang="es"><head><meta charset="utf-8"><title>Sandbox chat +__NUMBER__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;background:#ece5dd;margin:0;display:flex;flex-direction:column;height:100vh}
 header{background:#075e54;color:#fff;padding:.7em 1em}
 #log{flex:1;overflow-y:auto;padding:1em}
 .m{max-width:70%;margin:.3em 0;padding:.5em .8em;border-radius:8px;white-space:pre-wrap;box-shadow:0 1px 1px #0002}
 .in{background:#dcf8c6;margin-left:auto}.out{background:#fff}
 .meta{font-size:.7em;color:#777;margin-top:.2em}
 .m button{display:block;margin-top:.4em;width:100%;background:#f7f7f7;border:1px solid #ccc;border-radius:6px;padding:.3em;color:#075e54;cursor:pointer}
 form{display:flex;padding:.5em;background:#f0f0f0}input{flex:1;padding:.6em;border-radius:20px;border:1px solid #ccc}
 form button{margin-left:.5em;border:0;background:#075e54;color:#fff;border-radius:20px;padding:0 1.2em}
</style></head><body>
<header>Customer +__NUMBER__ (Puente WhatsApp sandbox)</header>
<div id="log"></div>
<form id="f"><input id="t" autocomplete="off" placeholder="Write as the customer…"><button>Send</button></form>
<script>
const number = "__NUMBER__";
const base = "../customers/" + number;
const log = document.getElementById("log");
let shown = "";
async function post(body){
  await fetch(base + "/reply", {method:"POST", headers:{"Content-Type":"application/json"}, body:JSON.stringify(body)});
  refresh();
}
function bubble(m){
  const d = document.createElement("div");
  d.className = "m " + m.direction;
  d.textContent = m.text;
  for (const b of m.buttons) {
    const btn = document.createElement("button");
    btn.textContent = b.title;
    btn.onclick = () => b.kind
      ? post({interactive:{type:b.kind, id:b.id, title:b.title}, reply_to:m.wamid})
      : post({button:{payload:b.payload, text:b.title}, reply_to:m.wamid});
    d.appendChild(btn);
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = new Date(m.timestamp * 1000).toLocaleTimeString() + (m.direction === "out" ? " · " + m.status : "");
  d.appendChild(meta);
  return d;
}
async function refresh(){
  const r = await fetch(base + "/messages");
  if (!r.ok) return;
  const msgs = await r.json();
  const key = JSON.stringify(msgs.map(m => [m.wamid, m.status]));
  if (key === shown) return;
  shown = key;
  log.replaceChildren(...msgs.map(bubble));
  log.scrollTop = log.scrollHeight;
}
document.getElementById("f").onsubmit = e => {
  e.preventDefault();
  const t = document.getElementById("t");
  if (t.value.trim()) post({text:t.value});
  t.value = "";
};
refresh();
setInterval(refresh, 1000);
</script></body></html>
"""
