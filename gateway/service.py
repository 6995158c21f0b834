"""The gateway service: wires the SIP edge, speech, NLU and the store, one session per call.

Threads: pjsua2 calls ``on_incoming``/``on_frame``/``on_event`` on its own thread; each
hop onto the asyncio loop with ``call_soon_threadsafe`` and does nothing else there, so
the SIP thread never waits on us. Commands go back through ``SipEndpoint``'s own
thread-safe queue.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.call.announcements import Announcer
from gateway.call.prompts import PromptLibrary
from gateway.call.routing import RoutingPolicy
from gateway.call.session import IN_VOICE, CallSession, DocumentsRequested, FrameIn, SessionDeps
from gateway.call.speech import SpeechPipeline
from gateway.config import Settings
from gateway.flows import FlowEngine
from gateway.numbers import CallerNumber, caller_number
from gateway.queue.dispatcher import Dispatcher
from gateway.queue.journal import QueueJournal
from gateway.queue.recovery import AbandonedWait, plan_recovery
from gateway.store import InterruptedWait, Store, utcnow
from gateway.whatsapp import WhatsAppChannel, build_whatsapp, local_base
from models import AudioFrame, Endpointer, Transcriber, WebRtcVad
from nlu import IntentClassifier, IntentModel, RasaClassifier, load_or_train_default
from sip import Binding, CallEvent, IncomingCall, PjsuaBuild, Registrar, SipEndpoint, pjsua2_build, pjsua_max_calls

log = logging.getLogger(__name__)

#: How long /healthz reports ``degraded`` after a call could not be recorded.
STORE_FAILURE_WINDOW_S = 300.0


@dataclass(frozen=True)
class StartupReport:
    asr_model: str
    nlu_version: str
    interrupted_calls_closed: int
    interrupted_waits: int  # of those, callers cut off while waiting in a voice queue


def load_classifier(settings: Settings) -> IntentClassifier:
    """The embedded model (``nlu.model``, or the bundled one trained once into ``nlu.cache_dir``);
    with ``nlu.backend: rasa`` a Rasa server answers, and the embedded model whenever it cannot."""
    nlu = settings.nlu
    model = IntentModel.load(nlu.model) if nlu.model is not None else load_or_train_default(nlu.cache_dir)
    if nlu.backend == "embedded":
        return model
    token = nlu.rasa_token.get_secret_value() if nlu.rasa_token else None
    return RasaClassifier(nlu.rasa_url, fallback=model, timeout_s=nlu.rasa_timeout_s, token=token)


def build_transcriber(settings: Settings) -> Transcriber:
    return Transcriber(settings.transcriber_config())


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions: dict[str, CallSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: LoopInbox | None = None
        self.store: Store | None = None
        self.speech: SpeechPipeline | None = None
        self.sip: SipEndpoint | None = None
        self.pjsua2: PjsuaBuild | None = None
        self.whatsapp: WhatsAppChannel | None = None
        self.flows: FlowEngine | None = None
        self.queues: Dispatcher | None = None
        self.registrar: Registrar | None = None
        self._announcer = Announcer()
        self._journal = QueueJournal()
        self._policy = RoutingPolicy(settings.routing)
        self._prompts: PromptLibrary | None = None
        self.started_at: float | None = None
        self._unrecorded_calls = 0
        self._last_store_failure: tuple[float, str] | None = None  # (when, what)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> StartupReport:
        """Open everything, or fail with a clear error before taking any call."""
        s = self.settings
        self._loop = asyncio.get_running_loop()
        self._inbox = LoopInbox(self._loop)
        self._prompts = PromptLibrary(s.languages, s.prompts_dir)
        self.store = Store(s.database.url)
        closed = await self.store.calls.close_interrupted("gateway restarted while the call was up")
        cut_off = await self.store.queue.close_interrupted(utcnow())
        # Self-service flows answer the customer's WhatsApp replies (FlowError on a bad flows file).
        self.flows = FlowEngine(self.store, s.flows, backend_url=local_base(s) + "/demo-backend")
        # Sandbox unless whatsapp.access_token is set; the sender retries until the HTTP server is up.
        self.whatsapp = build_whatsapp(s, self.store, on_inbound=self.flows.handle_inbound)
        self.flows.wake = self.whatsapp.worker.wake
        await self.whatsapp.start()
        await self.flows.start()
        transcriber, classifier = await asyncio.gather(
            asyncio.to_thread(build_transcriber, s), asyncio.to_thread(load_classifier, s)
        )
        self.speech = SpeechPipeline(transcriber, classifier, workers=s.asr.workers, max_wait_s=s.asr.max_wait_s,
                                     prompts=s.asr.biasing.prompts(), bias_first_pass=s.asr.biasing.first_pass,
                                     second_opinion=s.asr.second_opinion)
        # What this node can hold: Puente's own pjsua2 build, or the PyPI wheel capped at 4 calls.
        self.pjsua2 = await asyncio.to_thread(pjsua2_build)
        if self.pjsua2.warning():
            log.warning("sip: %s", self.pjsua2.warning())
        if s.sip.max_calls > self.pjsua2.max_calls:
            log.warning("sip: sip.max_calls is %d, but this pjsua2 build holds %d calls per process",
                        s.sip.max_calls, self.pjsua2.max_calls)
        self.sip = SipEndpoint(s.sip_config(), handler=self)
        if s.queues:
            self._journal.start()
            self.queues = Dispatcher(
                s.queues, telephony=self.sip, store=self.store, journal=self._journal,
                schedule=lambda delay, fn: self._loop.call_later(delay, fn),
            )
            self.queues.start()
            passwords = s.agent_passwords()
            if passwords:  # some agents' phones register: listen for them
                self.registrar = Registrar(s.registrar_config(), credentials=passwords.get, on_change=self._registered)
                await self.registrar.start()
        await self._recover(cut_off)
        await asyncio.to_thread(self.sip.start)
        self.started_at = time.time()
        return StartupReport(self.speech.asr_model, self.speech.nlu_version, closed, len(cut_off))

    async def _recover(self, cut_off: list[InterruptedWait]) -> None:
        """Callers a stop or crash cut off in a queue get the recovery a hang-up would have got."""
        s = self.settings
        for wait in cut_off:
            queue = s.queues.get(wait.queue)
            if queue is None:  # the queue was removed from the configuration meanwhile
                continue
            caller = CallerNumber(wait.caller_number, None if wait.caller_number else "no caller number")
            unavailable = caller.unusable or self.whatsapp.account.unavailable(s.whatsapp.recovery_template, wait.language)
            consented = not s.whatsapp.consent.required or bool(
                wait.caller_number and await self.store.consents.latest(wait.caller_number))
            context = {"call_id": wait.call_id, "intent": wait.intent, "language": wait.language,
                       "transcript": wait.transcript, "queue": wait.queue}
            plan = plan_recovery(queue.recovery, AbandonedWait(
                intent=wait.intent, language=wait.language, waited_s=wait.waited_s, to_number=caller.whatsapp,
                unavailable=unavailable, consented=consented, context=context,
            ), template=s.whatsapp.recovery_template, now=utcnow())
            if isinstance(plan, str):
                await self.store.calls.record_event(wait.call_id, "recovery_not_offered", {"reason": plan})
            else:
                await self.store.calls.recover(wait.call_id, plan)
        if cut_off:
            log.info("queue: %d caller(s) were waiting when the gateway stopped; recoveries scheduled by policy", len(cut_off))

    async def stop(self) -> None:
        if self.queues is not None:
            self.queues.close()
        if self.registrar is not None:
            await self.registrar.stop()
        if self.sip is not None:
            # Hanging up delivers CallEnded to every session, which then records its end.
            await asyncio.to_thread(self.sip.stop)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        await self._journal.stop()
        if self.flows is not None:
            await self.flows.stop()
        if self.whatsapp is not None:
            await self.whatsapp.stop()
        if self.speech is not None:
            self.speech.close()
        if self.store is not None:
            self.store.close()
        self._announcer.close()

    # --- sip.CallHandler (SIP thread) --------------------------------------------------

    def on_incoming(self, call: IncomingCall) -> None:
        self._inbox.post(self._open_session, call)

    def on_frame(self, call_id: str, frame: AudioFrame) -> None:
        self._inbox.post(self._deliver, call_id, FrameIn(frame, time.monotonic()))

    def on_event(self, event: CallEvent) -> None:
        self._inbox.post(self._deliver, event.call_id, event)

    # --- event loop ----------------------------------------------------------------------

    def _open_session(self, call: IncomingCall) -> None:
        s = self.settings
        endpointer = Endpointer(WebRtcVad(s.endpointing.vad_aggressiveness), s.endpointer_config())
        deps = SessionDeps(
            settings=s, telephony=self.sip, store=self.store, speech=self.speech, policy=self._policy,
            prompts=self._prompts, endpointer=endpointer, whatsapp=self.whatsapp.account, queues=self.queues,
            announcer=self._announcer,
            context_url=self.context_url,
        )
        session = CallSession(call, caller_number(call.from_uri, call.headers, s.whatsapp.default_region), deps)
        self.sessions[call.call_id] = session
        task = asyncio.get_running_loop().create_task(session.run(), name=f"call-{call.call_id}")
        self._tasks.add(task)
        task.add_done_callback(lambda t, cid=call.call_id: self._closed(t, cid))

    def _closed(self, task: asyncio.Task[None], call_id: str) -> None:
        self._tasks.discard(task)
        session = self.sessions.pop(call_id, None)
        if session is not None and session.store_failure is not None:
            self._unrecorded_calls += 1
            self._last_store_failure = (time.time(), session.store_failure)

    def _deliver(self, call_id: str, item: object) -> None:
        session = self.sessions.get(call_id)
        if session is not None:
            session.post(item)
        elif self.queues is not None and self.queues.handles(call_id):
            self.queues.on_leg_event(item)  # the distributor's call to an agent

    def request_documents(self, call_id: str, *, by: str) -> str | None:
        """Send the caller of a live voice call the WhatsApp link for documents; why not, or None when asked."""
        session = self.sessions.get(call_id)
        if session is None:
            return "no such call up now"
        if session.state not in IN_VOICE:
            return f"the call is {session.state.value}, not waiting for or talking to an agent"
        session.post(DocumentsRequested(by))
        return None

    def _registered(self, agent_id: str, binding: Binding | None) -> None:
        if self.queues is not None:
            self.queues.registered(agent_id, binding.contact if binding else None)

    def context_url(self, call_id: str) -> str:
        """Where an agent's desktop reads the call's context (``http.public_url``, else this machine's address)."""
        base = (self.settings.http.public_url or local_base(self.settings)).rstrip("/")
        return f"{base}/v1/calls/{call_id}/context"

    # --- intent model --------------------------------------------------------------------

    async def reload_nlu(self, model_dir: Path) -> tuple[str, str]:
        """Load ``model_dir`` and serve it from the next utterance on, without a restart.

        Returns (previous version, new version). A directory that does not load raises
        ``ModelLoadError`` and the running model keeps serving. With ``nlu.backend: rasa``
        Rasa keeps answering: the model replaces the embedded fallback behind it, and the
        versions are the fallback's.
        """
        model = await asyncio.to_thread(IntentModel.load, model_dir)
        current = self.speech.classifier
        if isinstance(current, RasaClassifier):
            previous, current.fallback = current.fallback, model
        else:
            previous = self.speech.swap_classifier(model)
        log.info("intent model %s replaced %s", model.version, previous.version)
        return previous.version, model.version

    # --- status --------------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        """``degraded`` while a call runs unrecorded, or for ``STORE_FAILURE_WINDOW_S`` after one ended, and while
        Meta keeps the deflection template from being sent (callers then stay in voice)."""
        failing = [s.store_failure for s in self.sessions.values() if s.store_failure]
        last = self._last_store_failure
        recent = last is not None and time.time() - last[0] < STORE_FAILURE_WINDOW_S
        whatsapp = self.whatsapp.account.as_dict() if self.whatsapp else None
        stopped = whatsapp is not None and bool(whatsapp["deflections"]["stopped"])
        return {
            "status": "starting" if self.sip is None else ("degraded" if failing or recent or stopped else "ok"),
            "active_calls": len(self.sessions),
            "sip": {
                "host": self.settings.sip.host, "port": self.settings.sip.port, "transports": self.settings.sip.transports,
                "tls_port": self.settings.sip.tls_port if "tls" in self.settings.sip.transports else None,
                "srtp": self.settings.sip.srtp,
                # Calls this node answers at once: the configured limit, or the pjsua2 build's if lower.
                "max_calls": min(self.settings.sip.max_calls, self.pjsua2.max_calls) if self.pjsua2 else None,
                # pjsua's slots for those calls, their agent legs, and refusals; a bridged call takes two.
                "call_slots": pjsua_max_calls(self.settings.sip.max_calls, self.pjsua2.max_calls) if self.pjsua2 else None,
                "pjsua2": self.pjsua2.as_dict() if self.pjsua2 else None,
                "invites": self.sip.invites if self.sip else None,
                "frames_dropped": self.sip.frames_dropped if self.sip else None,
            },
            "asr": {
                "model": self.speech.asr_model if self.speech else None,
                "backlog": self.speech.backlog if self.speech else None,
                "expected_wait_s": round(self.speech.expected_wait_s, 2) if self.speech else None,
                "max_wait_s": self.settings.asr.max_wait_s,
            },
            "nlu": {"version": self.speech.nlu_version if self.speech else None},
            "database": {
                "url": self.store.database.display_url if self.store else None,
                "unrecorded_calls": self._unrecorded_calls + len(failing),
                "last_failure": failing[-1] if failing else (last[1] if last else None),
            },
            "whatsapp": whatsapp,
            "registrar": None if self.registrar is None else {
                "port": self.registrar.port, **self.registrar.stats,
            },
            "queues": None if self.queues is None else {
                q["queue"]: {"waiting": sum(1 for w in q["waiting"] if w["state"] != "connected"),
                             "agents": q["agents_by_state"], "estimated_wait_s": q["estimated_wait_s"]}
                for q in self.queues.snapshot()
            },
            "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else None,
        }


class LoopInbox:
    """Hands work from other threads to the event loop in order, one wake-up per batch.

    Fifty frames a second per call, each its own ``call_soon_threadsafe``, would wake the loop
    (a write to its self-pipe) thousands of times a second; here a burst of frames and events from
    one tap drain costs one wake-up, and everything posted, from any thread, runs in the order it
    was posted: a call's session is opened before its first event is delivered.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[tuple[Callable[..., None], tuple[object, ...]]] = deque()
        self._scheduled = False

    def post(self, fn: Callable[..., None], *args: object) -> None:
        """Run ``fn(*args)`` on the loop; thread-safe."""
        self._items.append((fn, args))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        # Cleared before emptying: an item posted while this runs either is taken here or
        # schedules the next run itself.
        self._scheduled = False
        while self._items:
            fn, args = self._items.popleft()
            try:
                fn(*args)
            except Exception:  # one call's failure must not strand the others' frames
                log.exception("gateway: %r failed on the event loop", fn)
