"""The flow engine: continues a deflected (or abandoned, then recovered) call on WhatsApp, one customer message at a time.

``FlowEngine.handle_inbound`` is the webhook router's ``on_inbound``. For each new customer
message it opens (or creates, from the context of the call's deflection or recovery message) the conversation of that
number + call, runs the intent's flow until the flow waits for the customer again, and
commits the whole turn in one transaction: outbound messages are ``outbox`` rows (key
``conv:{id}:step:{n}``) that the ``OutboxWorker`` delivers with its retries, pacing and
exactly-once bookkeeping — the engine never calls the Cloud API itself.

What a turn sends is merged into as few messages as possible ("say" texts are prefixed to the
next question), because the sender spaces messages to one customer ``per_user_interval_s`` apart.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx

from gateway.config import FlowSettings
from gateway.flows.definitions import (
    AskStep,
    ButtonsStep,
    CallBackendStep,
    CollectMediaStep,
    Flow,
    FlowLibrary,
    HandoffStep,
    ResolveStep,
    SayStep,
    dig,
    pick,
    render,
    render_json,
)
from gateway.flows.handoff import HandoffDelivery
from gateway.store import Conversation, Store, Turn
from gateway.timing import Clock, SystemClock
from gateway.whatsapp.webhooks import InboundEvent

log = logging.getLogger(__name__)

MAX_STEPS_PER_TURN = 50  # a flow that loops without waiting for the customer is cut off (→ handoff)
CSAT_PREFIX = "csat:"
MEDIA_DONE = "media_done"
HANDOFF_BUTTONS = frozenset({"call_me", "agent", "handoff", "human"})
TEXT_MAX, INTERACTIVE_BODY_MAX = 4096, 1024


class FlowEngine:
    def __init__(
        self,
        store: Store,
        settings: FlowSettings | None = None,
        *,
        library: FlowLibrary | None = None,
        backend_url: str | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        """``backend_url``: the value of ``{backend_url}`` when ``settings.backend_url`` is unset (the gateway
        passes ``local_base(settings) + "/demo-backend"``). ``wake``: called after a turn wrote outbox rows
        (``channel.worker.wake``), so the sender does not wait for its next poll."""
        self.settings = settings or FlowSettings()
        self.library = library or FlowLibrary.load(self.settings.file)
        self.store = store
        self.backend_url = (self.settings.backend_url or backend_url or "").rstrip("/")
        self.wake = wake
        self._clock = clock or SystemClock()
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(trust_env=False)
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.handoffs = HandoffDelivery(store, self.settings, self._http, clock=self._clock, rng=rng or random.Random())
        self._redeliver: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Answer recent customer messages a crash left unhandled, then start the background redelivery of
        failed handoff webhooks (and of any left pending by a crash)."""
        await self.recover()
        if self._redeliver is None or self._redeliver.done():
            self._redeliver = asyncio.get_running_loop().create_task(self.handoffs.run(), name="flows-handoff-redelivery")

    async def stop(self, timeout_s: float = 10.0) -> None:
        if self._redeliver is not None:
            self._redeliver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._redeliver
            self._redeliver = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout_s)
            for task in self._tasks:
                task.cancel()
        if self._own_http:
            await self._http.aclose()

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait for handoff deliveries in flight (tests)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    # --- one customer message --------------------------------------------------------

    async def handle_inbound(self, event: InboundEvent) -> None:
        """``on_inbound`` of ``create_whatsapp_router``/``build_whatsapp``."""
        if not self.settings.enabled:
            return
        if event.call_id is None:
            log.info("flows: message %s from %s belongs to no call; left for an agent", event.wamid, event.number)
            return
        lock = self._locks.setdefault(event.number, asyncio.Lock())
        try:
            async with lock:  # one turn at a time per customer: their messages are handled in arrival order
                await self._turn(event)
        finally:
            if not lock.locked() and self._locks.get(event.number) is lock:
                self._locks.pop(event.number, None)

    async def recover(self) -> int:
        """Handle customer messages received in the last ``recover_window_s`` that no turn handled; returns how many."""
        since = self._clock.now() - timedelta(seconds=self.settings.recover_window_s)
        rows = await self.store.conversations.unhandled_inbound(since=since)
        for row in rows:
            media = row["message"].get(row["type"]) if isinstance(row.get("message"), dict) else None
            await self.handle_inbound(InboundEvent(
                call_id=row["call_id"], number=row["from_number"], wamid=row["wamid"], type=row["type"], text=row["text"],
                payload=row["payload"], context_wamid=row["context_wamid"], media=media if isinstance(media, dict) else None,
            ))
        if rows:
            log.info("flows: handled %d customer message(s) left over from before the restart", len(rows))
        return len(rows)

    async def _turn(self, event: InboundEvent) -> None:
        if await self.store.conversations.handled(event.wamid):
            return  # already answered (recovery and the webhook raced, or a redelivered event)
        now = self._clock.now()
        conv = await self.store.conversations.open(event.call_id, event.number, now=now)
        if conv is None:
            log.warning("flows: call %s of message %s is not in the store", event.call_id, event.wamid)
            return
        turn = Turn(conversation=conv, now=now)
        run = _Run(self, turn)
        turn.inbound = {
            "type": event.type, "text": event.text, "wamid": event.wamid, "step": conv.step,
            "data": {k: v for k, v in {"payload": event.payload, "media": event.media, "context_wamid": event.context_wamid}.items() if v},
        }
        await run.handle(event)
        handoff_id = await self.store.conversations.commit_turn(turn)
        if turn.outbound and self.wake is not None:
            self.wake()
        if handoff_id is not None:
            self._spawn(self.handoffs.deliver(handoff_id))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- backend ---------------------------------------------------------------------

    async def call_backend(self, step: CallBackendStep, variables: dict[str, Any]) -> tuple[int | None, Any, str | None, float]:
        """(HTTP status or None, JSON answer or None, error or None, elapsed ms)."""
        url = render(step.url, variables, quote=True)
        body = render_json(step.body, variables) if step.body is not None else None
        started = time.monotonic()
        try:
            response = await self._http.request(step.method, url, json=body, timeout=step.timeout_s or self.settings.backend_timeout_s)
        except httpx.HTTPError as exc:
            return None, None, f"{type(exc).__name__} calling {step.method} {_redact(url)}", _ms(started)
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        return response.status_code, data, None, _ms(started)


class _Run:
    """The work of one turn: walks the flow, collects outbound messages and step records into the Turn."""

    def __init__(self, engine: FlowEngine, turn: Turn) -> None:
        self.e = engine
        self.turn = turn
        self.c: Conversation = turn.conversation
        self.lang = self.c.language
        self.pending: list[str] = []
        self.flow: Flow | None = engine.library.flows.get(self.c.flow or self.c.intent or "")

    # --- dispatch --------------------------------------------------------------------

    async def handle(self, event: InboundEvent) -> None:
        c = self.c
        button = _button_id(event.payload)
        if c.status == "handoff":
            return  # an agent has the conversation; the message is recorded for them
        if button in HANDOFF_BUTTONS or self._asks_for_human(event):
            await self.handoff("customer_request" if button != "call_me" else "customer_requested_call")
            return
        if c.status == "closed":
            self.send_text(self.e.library.text("closed", self.lang), step=None)
            return
        if c.status == "awaiting_csat":
            await self.answer_csat(event, button)
            return
        if c.status == "new":
            if self.flow is None:
                self.record(c.intent or "-", "start", "no_flow", {"intent": c.intent})
                await self.handoff(f"no_flow_for_intent:{c.intent}")
                return
            c.flow, c.status = self.flow.intent, "active"
            self.record(self.flow.start, "start", "started", {"flow": self.flow.intent, "trigger": button or event.type})
            hint = event.text if event.type == "text" else None
            await self.enter(self.flow.start, hint=hint)
            step = self.flow.steps.get(c.step or "")
            if event.media is not None and isinstance(step, CollectMediaStep):
                await self.answer(step, event, button)  # the file that opened the chat is the first one collected
            return
        step = self.flow.steps.get(c.step or "") if self.flow else None
        if step is None:
            await self.handoff(f"unknown_step:{c.step}")
            return
        if button == "continue":  # an old template button tapped mid-flow: ask the current question again
            await self.prompt(step)
            return
        await self.answer(step, event, button)

    def _asks_for_human(self, event: InboundEvent) -> bool:
        if event.type != "text" or not event.text:
            return False
        words = {w.casefold() for w in re.findall(r"\w+", event.text)}
        wanted = {w.casefold() for lang in (self.lang, "es", "en") for w in self.e.settings.handoff_words.get(lang, [])}
        return bool(words & wanted)

    # --- walking the flow --------------------------------------------------------------

    async def enter(self, step_id: str, *, hint: str | None = None) -> None:
        """Run steps from ``step_id`` until one waits for the customer or the flow ends."""
        assert self.flow is not None
        for _ in range(MAX_STEPS_PER_TURN):
            step = self.flow.steps[step_id]
            self.c.step = step.id
            self.c.invalid_count = 0
            if isinstance(step, AskStep):
                value = None
                sources = ([("message", hint)] if hint and step.pattern else []) + [(v, self.vars().get(v)) for v in step.reuse]
                for source, text in sources:
                    value = step.extract(str(text) if text is not None else None)
                    if value is not None:
                        self.c.variables[step.var] = value
                        self.record(step.id, step.type, "reused", {"var": step.var, "value": value, "from": source})
                        break
                if value is not None:
                    step_id = step.next
                    continue
                await self.prompt(step)
                return
            if isinstance(step, (ButtonsStep, CollectMediaStep)):
                await self.prompt(step)
                return
            if isinstance(step, SayStep):
                self.pending.append(render(pick(step.text, self.lang), self.vars()))
                self.record(step.id, step.type, "said", {})
                step_id = step.next
                continue
            if isinstance(step, CallBackendStep):
                step_id = await self.backend(step)
                continue
            if isinstance(step, HandoffStep):
                await self.handoff(step.reason, text=pick(step.text, self.lang) if step.text else None, step=step.id)
                return
            if isinstance(step, ResolveStep):
                self.resolve(step)
                return
        self.record(step_id, "engine", "loop", {"limit": MAX_STEPS_PER_TURN})
        await self.handoff("flow_loop")

    async def prompt(self, step: AskStep | ButtonsStep | CollectMediaStep, *, invalid: bool = False) -> None:
        text = render(pick(step.text, self.lang), self.vars())
        if invalid:
            text = (render(pick(step.invalid, self.lang), self.vars()) if getattr(step, "invalid", None)
                    else self.e.library.text("invalid", self.lang) + text)
        if isinstance(step, AskStep):
            self.send_text(text, step=step.id)
        elif isinstance(step, ButtonsStep):
            self.send_choice(text, [(o.id, pick(o.title, self.lang), pick(o.description, self.lang) or None) for o in step.options],
                             button=pick(step.button, self.lang), step=step.id)
        else:
            self.send_choice(text, [(MEDIA_DONE, pick(step.done, self.lang), None)], button="", step=step.id)
        self.record(step.id, step.type, "invalid" if invalid else "asked", {})

    async def answer(self, step: Any, event: InboundEvent, button: str | None) -> None:
        if isinstance(step, AskStep):
            value = step.extract(event.text) if event.type in ("text", "button", "interactive") else None
            if value is None:
                await self.invalid(step, {"text": event.text, "type": event.type})
                return
            self.c.variables[step.var] = value
            self.record(step.id, step.type, "answered", {"var": step.var, "value": value})
            await self.enter(step.next)
            return
        if isinstance(step, ButtonsStep):
            option = _choose(step, event, button, self.lang)
            if option is None:
                await self.invalid(step, {"text": event.text, "payload": event.payload})
                return
            if step.var:
                self.c.variables[step.var] = option.id
            self.record(step.id, step.type, "chosen", {"option": option.id})
            await self.enter(option.next or step.next)
            return
        if isinstance(step, CollectMediaStep):
            await self.collect(step, event, button)
            return
        await self.handoff(f"not_waiting:{step.id}")  # a committed state always waits on a question

    async def invalid(self, step: AskStep | ButtonsStep | CollectMediaStep, data: dict[str, Any]) -> None:
        self.c.invalid_count += 1
        count = self.c.invalid_count
        if count >= self.e.settings.max_invalid:
            self.record(step.id, step.type, "invalid", {**data, "count": count})
            await self.handoff("too_many_invalid_answers")
            return
        await self.prompt(step, invalid=True)
        self.c.invalid_count = count
        self.turn.steps[-1]["data"] = {**data, "count": count}

    async def collect(self, step: CollectMediaStep, event: InboundEvent, button: str | None) -> None:
        items: list[dict[str, Any]] = list(self.c.variables.get(step.var) or [])
        if event.media is not None and event.type in step.accept:
            media = event.media
            item = {"kind": event.type, "media_id": str(media.get("id")), "mime_type": media.get("mime_type"),
                    "sha256": media.get("sha256"), "caption": media.get("caption"), "filename": media.get("filename"), "wamid": event.wamid}
            items.append(item)
            self.c.variables[step.var] = items
            self.turn.media.append(item)
            self.record(step.id, step.type, "received", {"kind": event.type, "media_id": item["media_id"], "mime_type": item["mime_type"],
                                                          "count": len(items)})
            if len(items) >= step.max:
                await self.enter(step.next)
            else:
                ack = render(pick(step.ack, self.lang), {**self.vars(), "count": len(items)})
                self.send_choice(ack, [(MEDIA_DONE, pick(step.done, self.lang), None)], button="", step=step.id)
            return
        done_words = {pick(step.done, self.lang).casefold(), "listo", "done", "ya", "ok", "fin", "terminé", "termine"}
        if button == MEDIA_DONE or (event.type == "text" and (event.text or "").strip().casefold().rstrip(".!") in done_words):
            if len(items) >= step.min:
                self.record(step.id, step.type, "done", {"count": len(items)})
                await self.enter(step.next)
                return
        await self.invalid(step, {"type": event.type, "text": event.text})

    async def backend(self, step: CallBackendStep) -> str:
        status, data, error, elapsed = await self.e.call_backend(step, self.vars())
        info: dict[str, Any] = {"method": step.method, "status": status, "elapsed_ms": elapsed}
        if status is not None and status in step.on_status:
            self._save(step, data)
            self.record(step.id, step.type, f"status_{status}", info)
            return step.on_status[status]
        if status is not None and 200 <= status < 300 and error is None:
            missing = self._save(step, data)
            if missing:
                info["missing"] = missing
            self.record(step.id, step.type, "ok", info)
            return step.next
        info["error"] = error or f"HTTP {status}"
        self.record(step.id, step.type, "error", info)
        self.c.variables["backend_error"] = info["error"]
        return step.on_error

    def _save(self, step: CallBackendStep, data: Any) -> list[str]:
        missing = []
        for var, path in step.save.items():
            value = dig(data, path)
            if value is None:
                missing.append(var)
            else:
                self.c.variables[var] = value
        return missing

    # --- endings ---------------------------------------------------------------------

    async def handoff(self, reason: str, *, text: str | None = None, step: str | None = None) -> None:
        c = self.c
        self.pending.append(text or self.e.library.text("handoff", self.lang, self.vars()))
        self.flush(step or c.step)
        self.record(step or "handoff", "handoff", "handoff", {"reason": reason})
        c.status, c.resolution, c.handoff_reason = "handoff", "handoff", reason
        self.turn.handoff_reason = reason

    def resolve(self, step: ResolveStep) -> None:
        c = self.c
        self.pending.append(render(pick(step.text, self.lang), self.vars()) if step.text else self.e.library.text("resolved", self.lang))
        c.resolution = "resolved"
        self.turn.resolved = True
        self.record(step.id, step.type, "resolved", {})
        if self.e.settings.csat and step.csat:
            c.status, c.step = "awaiting_csat", "csat"
            self.ask_csat()
        else:
            c.status = "closed"
            self.turn.closed = True
            self.flush(step.id)

    def ask_csat(self, *, invalid: bool = False) -> None:
        lib = self.e.library
        text = (lib.text("invalid", self.lang) if invalid else "") + lib.text("csat", self.lang)
        stars = ["1 ⭐", "2 ⭐⭐", "3 ⭐⭐⭐", "4 ⭐⭐⭐⭐", "5 ⭐⭐⭐⭐⭐"]
        self.send_choice(text, [(f"{CSAT_PREFIX}{n}", stars[n - 1], None) for n in range(1, 6)], button=lib.text("csat_button", self.lang),
                         step="csat", force_list=True)
        self.record("csat", "csat", "invalid" if invalid else "asked", {})

    async def answer_csat(self, event: InboundEvent, button: str | None) -> None:
        c = self.c
        score = None
        if button and button.startswith(CSAT_PREFIX) and button[len(CSAT_PREFIX):].isdigit():
            score = int(button[len(CSAT_PREFIX):])
        elif event.text:
            m = re.match(r"^\s*([1-5])\b", event.text) or (re.fullmatch(r"\s*(⭐{1,5})\s*", event.text))
            if m:
                score = int(m.group(1)) if m.group(1).isdigit() else len(m.group(1))
        if score is None or not 1 <= score <= 5:
            c.invalid_count += 1
            if c.invalid_count >= self.e.settings.max_invalid:
                self.record("csat", "csat", "unanswered", {"text": event.text})
                c.status, c.step = "closed", None
                self.turn.closed = True
                return
            count = c.invalid_count
            self.ask_csat(invalid=True)
            c.invalid_count = count
            return
        c.csat, c.status, c.step = score, "closed", None
        self.turn.closed = True
        self.record("csat", "csat", "scored", {"score": score})
        self.send_text(self.e.library.text("csat_thanks", self.lang), step="csat")

    # --- output ----------------------------------------------------------------------

    def vars(self) -> dict[str, Any]:
        ctx = self.c.context
        return {
            "intent": self.c.intent, "language": self.lang, "transcript": ctx.get("transcript"), "line": ctx.get("line"),
            "dtmf": ctx.get("dtmf"), "call_id": self.c.call_id, "number": self.c.number, "conversation_id": self.c.id,
            "backend_url": self.e.backend_url, **self.c.variables,
        }

    def record(self, step: str, type_: str, outcome: str, data: dict[str, Any]) -> None:
        self.c.step_seq += 1
        self.turn.steps.append({"seq": self.c.step_seq, "step": step, "type": type_, "outcome": outcome, "data": data})

    def _take_pending(self, text: str | None, limit: int) -> str:
        parts = [p for p in [*self.pending, text] if p]
        self.pending = []
        body = "\n\n".join(parts)
        if len(body) > limit and text:
            # Too long to merge: the earlier texts go first as their own message.
            self._emit({"type": "text", "text": _cut("\n\n".join(parts[:-1]), TEXT_MAX)}, step=self.c.step)
            body = text
        return _cut(body, limit)

    def send_text(self, text: str, *, step: str | None) -> None:
        self._emit({"type": "text", "text": self._take_pending(text, TEXT_MAX)}, step=step)

    def send_choice(self, text: str, options: list[tuple[str, str, str | None]], *, button: str, step: str | None,
                    force_list: bool = False) -> None:
        body = self._take_pending(text, INTERACTIVE_BODY_MAX)
        if len(options) <= 3 and not force_list:
            payload = {"type": "buttons", "text": body, "buttons": [{"id": i, "title": t} for i, t, _ in options]}
        else:
            rows = [{"id": i, "title": t, **({"description": d} if d else {})} for i, t, d in options]
            payload = {"type": "list", "text": body, "button": button or "Options", "rows": rows}
        self._emit(payload, step=step)

    def flush(self, step: str | None) -> None:
        if self.pending:
            self.send_text("", step=step)

    def _emit(self, payload: dict[str, Any], *, step: str | None) -> None:
        self.c.out_seq += 1
        key = f"conv:{self.c.id}:step:{self.c.out_seq}"
        self.turn.outbound.append({"idempotency_key": key, "payload": payload, "step": step, "text": payload["text"]})


# --- helpers ---------------------------------------------------------------------------


def _button_id(payload: str | None) -> str | None:
    """A reply's button id; template quick replies carry "id|<our idempotency key>"."""
    return payload.split("|", 1)[0] if payload else None


def _choose(step: ButtonsStep, event: InboundEvent, button: str | None, lang: str):
    by_id = {o.id: o for o in step.options}
    if button in by_id:
        return by_id[button]
    text = (event.text or "").strip().casefold()
    if not text:
        return None
    if text.isdigit() and 1 <= int(text) <= len(step.options):
        return step.options[int(text) - 1]
    for option in step.options:
        if text in {pick(option.title, lang).casefold(), option.id.casefold()}:
            return option
    return None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _redact(url: str) -> str:
    return url.split("?", 1)[0]
