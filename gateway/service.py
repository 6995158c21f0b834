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
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Settings
from gateway.numbers import caller_number
from gateway.prompts import PromptLibrary
from gateway.routing import RoutingPolicy
from gateway.session import CallSession, FrameIn, SessionDeps
from gateway.speech import SpeechPipeline
from gateway.store import Store
from gateway.store_async import AsyncStore
from gateway.flows import FlowEngine
from gateway.whatsapp import WhatsAppChannel, build_whatsapp, local_base
from models.audio import AudioFrame
from models.endpointing import Endpointer, EndpointerConfig
from models.transcribe import Transcriber, TranscriberConfig
from models.vad import WebRtcVad
from sqlalchemy.engine import make_url
from nlu.bundled import load_or_train_default
from nlu.classifier import IntentClassifier
from nlu.model import IntentModel
from sip.config import SipConfig
from sip.endpoint import SipEndpoint
from sip.events import CallEvent, IncomingCall

log = logging.getLogger(__name__)

#: How long /healthz reports ``degraded`` after a call could not be recorded.
STORE_FAILURE_WINDOW_S = 300.0


@dataclass(frozen=True)
class StartupReport:
    asr_model: str
    nlu_version: str
    interrupted_calls_closed: int


def load_classifier(settings: Settings) -> IntentClassifier:
    if settings.nlu.model is not None:
        return IntentModel.load(settings.nlu.model)
    return load_or_train_default(settings.asr.cache_dir.expanduser() / "nlu")


def build_transcriber(settings: Settings) -> Transcriber:
    return Transcriber(
        TranscriberConfig(
            model=settings.asr.model,
            cache_dir=settings.asr.cache_dir.expanduser(),
            compute_type=settings.asr.compute_type,
            cpu_threads=settings.asr.cpu_threads,
            num_workers=settings.asr.workers,
            languages=tuple(sorted({lang for line in settings.lines.values() for lang in line.languages})),
        )
    )


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sessions: dict[str, CallSession] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.store: AsyncStore | None = None
        self.speech: SpeechPipeline | None = None
        self.sip: SipEndpoint | None = None
        self.whatsapp: WhatsAppChannel | None = None
        self.flows: FlowEngine | None = None
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
        languages = {lang for line in s.lines.values() for lang in line.languages}
        self._prompts = PromptLibrary(languages, s.prompts_dir)
        store = Store(s.database.url)
        closed = store.close_interrupted_calls("gateway restarted while the call was up")
        self.store = AsyncStore(store)
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
        self.speech = SpeechPipeline(transcriber, classifier, workers=s.asr.workers)
        self.sip = SipEndpoint(
            SipConfig(
                host=s.sip.host, port=s.sip.port, transports=tuple(s.sip.transports), public_host=s.sip.public_host,
                allowed_networks=tuple(s.sip.allowed_networks), codecs=tuple(s.sip.codecs), rtp_port=s.sip.rtp_port,
                max_calls=s.sip.max_calls, log_level=s.sip.log_level,
            ),
            handler=self,
        )
        await asyncio.to_thread(self.sip.start)
        self.started_at = time.time()
        return StartupReport(self.speech.asr_model, self.speech.nlu_version, closed)

    async def stop(self) -> None:
        if self.sip is not None:
            # Hanging up delivers CallEnded to every session, which then records its end.
            await asyncio.to_thread(self.sip.stop)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        if self.flows is not None:
            await self.flows.stop()
        if self.whatsapp is not None:
            await self.whatsapp.stop()
        if self.speech is not None:
            self.speech.close()
        if self.store is not None:
            self.store.close()

    # --- sip.CallHandler (SIP thread) --------------------------------------------------

    def on_incoming(self, call: IncomingCall) -> None:
        self._loop.call_soon_threadsafe(self._open_session, call)

    def on_frame(self, call_id: str, frame: AudioFrame) -> None:
        self._loop.call_soon_threadsafe(self._deliver, call_id, FrameIn(frame, time.monotonic()))

    def on_event(self, event: CallEvent) -> None:
        self._loop.call_soon_threadsafe(self._deliver, event.call_id, event)

    # --- event loop ----------------------------------------------------------------------

    def _open_session(self, call: IncomingCall) -> None:
        s = self.settings
        endpointer = Endpointer(
            WebRtcVad(s.endpointing.vad_aggressiveness),
            EndpointerConfig(
                end_silence_ms=s.endpointing.end_silence_ms,
                no_input_ms=s.endpointing.no_input_ms,
                max_utterance_ms=s.endpointing.max_utterance_ms,
            ),
        )
        deps = SessionDeps(
            settings=s, telephony=self.sip, store=self.store, speech=self.speech, policy=self._policy,
            prompts=self._prompts, endpointer=endpointer,
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

    # --- intent model --------------------------------------------------------------------

    async def reload_nlu(self, model_dir: Path) -> tuple[str, str]:
        """Load ``model_dir`` and serve it from the next utterance on, without a restart.

        Returns (previous version, new version). A directory that does not load raises
        ``ModelLoadError`` and the running model keeps serving.
        """
        model = await asyncio.to_thread(IntentModel.load, model_dir)
        previous = self.speech.swap_classifier(model)
        log.info("intent model %s replaced %s", model.version, previous.version)
        return previous.version, model.version

    # --- status --------------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        """``degraded`` while a call runs unrecorded, or for ``STORE_FAILURE_WINDOW_S`` after one ended."""
        failing = [s.store_failure for s in self.sessions.values() if s.store_failure]
        last = self._last_store_failure
        recent = last is not None and time.time() - last[0] < STORE_FAILURE_WINDOW_S
        return {
            "status": "starting" if self.sip is None else ("degraded" if failing or recent else "ok"),
            "active_calls": len(self.sessions),
            "sip": {"host": self.settings.sip.host, "port": self.settings.sip.port, "transports": self.settings.sip.transports},
            "asr": {"model": self.speech.asr_model if self.speech else None},
            "nlu": {"version": self.speech.nlu_version if self.speech else None},
            "database": {
                "url": make_url(self.settings.database.url).render_as_string(hide_password=True),
                "unrecorded_calls": self._unrecorded_calls + len(failing),
                "last_failure": failing[-1] if failing else (last[1] if last else None),
            },
            "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else None,
        }

