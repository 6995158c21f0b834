"""One call, as an explicit state machine.

A ``CallSession`` consumes what the SIP edge reports about its call (audio frames,
DTMF, playback and transfer progress, hangup) from one asyncio queue, in order, and
answers with telephony commands. Transcription and classification run in worker
threads; the session awaits them, so its own logic is single-threaded and every
transition goes through ``_enter`` (checked against ``TRANSITIONS`` and persisted).

    answered → greeting → listening → transcribing → classifying → deciding → acting → ended
                             ▲  │ no input                            │ ▲    │ reprompt
                             │  ▼                                   │ │    ▼
                             └─ reprompting ◀────────────────────────┼─┼────┘
                                         consenting (WhatsApp opt-in)◀┘ │
                                              └────────────────────────┘
    deciding (voice, with queues) → queued ⇄ offering (WhatsApp at the SLA) → deciding (accepted)
                                      │  └──────┴─→ connected (an agent answered) → ended
                                      └→ acting (waited past the queue's max_wait_s: goodbye)

Early commit (``endpointing.early_silence_ms``): at a short pause the endpointer reports
``UtterancePaused`` and keeps listening; the session transcribes and classifies those words
*speculatively*, in the background, still ``listening``. When that finishes (``SpeculationDone``, in
order with the frames, so any speech since has been heard) and the caller has not spoken again, a
confident intent on words that do not end open (``nlu.completeness``) commits the utterance there
(``Endpointer.commit``), once the pause has lasted ``endpointing.early_commit_silence_ms`` (a fast
server must not decide at every 300 ms breath: pauses inside a sentence run to 500 ms). Otherwise the turn waits for the full silence and reuses the transcript (one
Whisper run); if the caller speaks on, the speculation is dropped: never recorded, never deciding.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol

from gateway.call.announcements import AnnouncementError, Announcer, announcement_text
from gateway.call.context import CONTEXT_URL_HEADER, HandoffContext
from gateway.call.prompts import Prompt, PromptLibrary
from gateway.call.recorder import CallRecorder
from gateway.call.routing import Decision, RoutingPolicy, Understanding
from gateway.call.speech import AsrSaturated, SpeechPipeline
from gateway.config import Settings
from gateway.numbers import CallerNumber
from gateway.queue.dispatcher import AgentConnected, AgentLeft, AgentRinging, Dispatcher, JoinRequest, TransferToAgent
from gateway.queue.recovery import AbandonedWait, plan_recovery
from gateway.queue.tickets import Ticket
from gateway.store import DecisionRecord, NewCall, OutboundMessage, Recovery, Store, UtteranceRecord, utcnow
from gateway.whatsapp.account import AccountHealth
from gateway.whatsapp.templates import documents_payload, followup_payload
from models import (
    FRAME_MS,
    AudioFrame,
    Endpointer,
    EndpointerConfig,
    NoInput,
    SpeechResumed,
    SpeechStarted,
    Transcript,
    UtteranceEnded,
    UtterancePaused,
)
from nlu import OUT_OF_SCOPE, IntentResult, open_ending
from sip import CallEnded, CallMediaReady, DtmfReceived, IncomingCall, PlaybackFinished, TransferUpdate

log = logging.getLogger(__name__)


class CallState(str, Enum):
    ANSWERED = "answered"
    GREETING = "greeting"
    LISTENING = "listening"
    TRANSCRIBING = "transcribing"
    CLASSIFYING = "classifying"
    DECIDING = "deciding"
    CONSENTING = "consenting"
    REPROMPTING = "reprompting"
    ACTING = "acting"
    QUEUED = "queued"
    OFFERING = "offering"
    CONNECTED = "connected"
    ENDED = "ended"


S = CallState
TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    S.ANSWERED: frozenset({S.GREETING}),
    S.GREETING: frozenset({S.LISTENING}),
    S.LISTENING: frozenset({S.TRANSCRIBING, S.REPROMPTING, S.DECIDING}),
    S.TRANSCRIBING: frozenset({S.CLASSIFYING, S.DECIDING}),
    S.CLASSIFYING: frozenset({S.DECIDING}),
    S.DECIDING: frozenset({S.REPROMPTING, S.CONSENTING, S.ACTING, S.QUEUED}),
    S.CONSENTING: frozenset({S.DECIDING}),
    S.REPROMPTING: frozenset({S.LISTENING}),
    S.ACTING: frozenset(),
    S.QUEUED: frozenset({S.OFFERING, S.CONNECTED, S.ACTING}),
    S.OFFERING: frozenset({S.QUEUED, S.DECIDING, S.CONNECTED, S.ACTING}),
    S.CONNECTED: frozenset(),
    S.ENDED: frozenset(),
}
# The caller may hang up, and the gateway may stop, in any state.
for _state in CallState:
    if _state is not S.ENDED:
        TRANSITIONS[_state] = TRANSITIONS[_state] | {S.ENDED}
_HEARING = frozenset({S.GREETING, S.LISTENING, S.REPROMPTING, S.CONSENTING, S.OFFERING})
_WAITING = frozenset({S.QUEUED, S.OFFERING})  # in a queue, not yet with an agent
IN_VOICE = frozenset({S.QUEUED, S.OFFERING, S.CONNECTED})  # waiting for an agent, or with one

#: DTMF 0 during the IVR asks for a person, as callers have learned to expect.
AGENT_DIGIT = "0"
#: The keys of the WhatsApp consent question and of the offer ("say yes or press 1, no or press 2").
CONSENT_DIGITS = {"1": True, "2": False}


class Telephony(Protocol):
    """The commands a session sends to the SIP edge (``sip.SipEndpoint`` implements them)."""

    def play(self, call_id: str, wav_path: Any) -> str: ...
    def stop_playback(self, call_id: str) -> None: ...
    def hangup(self, call_id: str, status_code: int | None = None) -> None: ...
    def listen(self, call_id: str, on: bool) -> None: ...
    def transfer(self, call_id: str, target_uri: str, headers: dict[str, str]) -> None: ...


@dataclass(frozen=True)
class FrameIn:
    """A caller frame and when it reached the gateway (monotonic seconds)."""

    frame: AudioFrame
    arrived: float


@dataclass(frozen=True)
class HoldExpired:
    pass


@dataclass(frozen=True)
class OfferCheck:
    """Time to compare a waiting caller's wait with the queue's SLA."""


@dataclass(frozen=True)
class QueueTimeout:
    """The caller waited the queue's max_wait_s."""


@dataclass(frozen=True)
class AnnouncementDue:
    """Time to tell the waiting caller their place and expected wait."""


@dataclass(frozen=True)
class DocumentsRequested:
    """Send the caller the WhatsApp link for documents and photos now (asked by ``by``: the agent's desktop)."""

    by: str


def not_early(transcript: Transcript, result: IntentResult, *, min_confidence: float) -> str | None:
    """The early-commit rule: why the words of a pause are not (yet) a complete request, or None when they are.

    A complete request is one the intent model is sure of (an intent, not out_of_scope nor a fallback, at
    ``min_confidence`` or more) in words that do not end open (:func:`nlu.open_ending`: "de", "mi", "and",
    "the", "um", a number being dictated…).
    """
    if not transcript.text:
        return "no words"
    if result.intent in (None, OUT_OF_SCOPE) or result.fallback:
        return "not understood"
    if result.confidence < min_confidence:
        return "not confident"
    return open_ending(transcript.text, transcript.language)


class _Speculation:
    """The words of one pause, transcribed (and classified) before the caller is known to be done."""

    def __init__(self, paused: UtterancePaused) -> None:
        self.paused = paused
        self.transcribed = asyncio.Event()  # set once transcript (or error) is known
        self.finished = asyncio.Event()  # set once the classification (or error) is known too
        self.transcript: Transcript | None = None
        self.result: tuple[IntentResult, float] | None = None
        self.error: Exception | None = None
        self.dropped = False  # the caller spoke again, or the turn moved on: its result is never used
        self.complete = False  # a complete request: commit once the pause is long enough
        self.task: asyncio.Task[None] | None = None

    def of(self, event: UtteranceEnded) -> bool:
        """Whether ``event`` is the utterance as it was at this pause (no speech since)."""
        return (event.start_ms, event.speech_end_ms) == (self.paused.start_ms, self.paused.speech_end_ms)


@dataclass(frozen=True)
class SpeculationDone:
    """A speculative transcription (and classification) finished; posted to the session's inbox."""

    speculation: _Speculation


@dataclass
class SessionDeps:
    settings: Settings
    telephony: Telephony
    store: Store
    speech: SpeechPipeline
    policy: RoutingPolicy
    prompts: PromptLibrary
    endpointer: Endpointer
    whatsapp: AccountHealth  # whether the deflection template can be sent now
    queues: Dispatcher | None = None  # voice queues with agents; None: voice calls are transferred or held
    announcer: Announcer | None = None  # speaks a waiting caller's place and wait (queues with announce_interval_s)
    context_url: Callable[[str], str] | None = None  # call id → the agent's context URL
    clock: Callable[[], float] = time.monotonic  # monotonic seconds


@dataclass
class _Progress:
    """What the call has accumulated so far; it becomes the handoff context."""

    utterances: list[str] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)
    no_inputs: int = 0
    reprompts: int = 0
    decisions: int = 0
    intent: str | None = None
    confidence: float | None = None
    ranking: list[dict[str, float]] = field(default_factory=list)
    consent: str | None = None  # how consent was settled on this call: on_record, dtmf, speech, policy
    waited_s: float | None = None  # time in the voice queue before taking the WhatsApp offer


@dataclass(frozen=True)
class _Pending:
    """A WhatsApp decision waiting for the caller's consent."""

    decision: Decision
    heard: Understanding
    utterance_seq: int | None
    timings: dict[str, float]


class CallSession:
    def __init__(self, call: IncomingCall, caller: CallerNumber, deps: SessionDeps) -> None:
        self.call = call
        self.caller = caller
        self._deps = deps
        self._line = deps.settings.line(call.to_user)
        self.language: str | None = self._line.languages[0] if len(self._line.languages) == 1 else None
        self.state = CallState.ANSWERED
        self.inbox: asyncio.Queue[object] = asyncio.Queue()
        self._progress = _Progress()
        self._playback: str | None = None
        self._last_index = -1
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=500)  # 10 s of frame arrival times
        self._outcome: str | None = None
        self._hold_timer: asyncio.TimerHandle | None = None
        self._transferring = False
        self._pending: _Pending | None = None
        self._ending = False  # the call ended; its CallEnded waits in the inbox
        self._ticket: Ticket | None = None  # this caller's place in a voice queue, while they hold it
        self._queued_in: Ticket | None = None  # the place they took, kept after they left it (the context says where)
        self._queue_heard: tuple[Understanding, int | None] | None = None  # what sent the caller to the queue
        self._offer_reason: str | None = None
        self._queue_timers: dict[type, asyncio.TimerHandle] = {}  # the next of each kind (offer check, announcement…)
        self._record = CallRecorder(deps.store, call.call_id)
        self._speculation: _Speculation | None = None  # the current pause's, while the caller may go on
        self._speculating: set[asyncio.Task[None]] = set()  # every speculation still running
        self.done = asyncio.Event()

    @property
    def call_id(self) -> str:
        return self.call.call_id

    @property
    def store_failure(self) -> str | None:
        """Why the context store stopped taking this call's writes, or None while it takes them."""
        return self._record.failure

    def post(self, item: object) -> None:
        """Called on the event loop for everything the SIP edge reports about this call."""
        if isinstance(item, CallEnded):
            self._ending = True  # seen at once, so a turn being transcribed or classified decides nothing more
        self.inbox.put_nowait(item)

    # --- main loop ---------------------------------------------------------------------

    async def run(self) -> None:
        d = self._deps
        await self._record.start(
            NewCall(
                call_id=self.call_id, sip_call_id=self.call.sip_call_id, from_uri=self.call.from_uri,
                to_uri=self.call.to_uri, line=self.call.to_user, caller_number=self.caller.e164,
                remote_address=self.call.remote_address, asr_model=d.speech.asr_model,
                nlu_version=d.speech.nlu_version,
            ),
            self.state.value,
        )
        if self.language:
            await self._record.event("language_forced", {"language": self.language}, language=self.language)
        try:
            while self.state is not CallState.ENDED:
                await self._handle(await self.inbox.get())
        except Exception:
            log.exception("call %s failed; hanging up", self.call_id)
            d.telephony.hangup(self.call_id, 500)
            await self._end("gateway", "internal error", outcome="failed")
        finally:
            for timer in [self._hold_timer, *self._queue_timers.values()]:
                if timer is not None:
                    timer.cancel()
            for task in list(self._speculating):
                task.cancel()  # nobody is left to use them
            self.done.set()

    async def _handle(self, item: object) -> None:
        match item:
            case FrameIn(frame=frame, arrived=arrived):
                await self._on_frame(frame, arrived)
            case SpeculationDone(speculation=speculation):
                await self._on_speculation_done(speculation)
            case CallMediaReady():
                if self.state is CallState.ANSWERED:
                    await self._enter(CallState.GREETING)
                    self._play(Prompt.GREETING)
                    self._deps.endpointer.begin_turn(self._last_index + 1)
            case DtmfReceived(digit=digit, method=method):
                await self._on_dtmf(digit, method)
            case PlaybackFinished(playback_id=playback_id):
                if playback_id == self._playback:
                    self._playback = None
                    await self._on_prompt_done()
            case TransferUpdate(status_code=code, final=final):
                await self._on_transfer(code, final)
            case HoldExpired():
                if self.state is CallState.ACTING and self._outcome is None:
                    self._outcome = "unserved"
                    self._play(Prompt.GOODBYE)
            case OfferCheck():
                await self._on_offer_check()
            case QueueTimeout():
                await self._on_queue_timeout()
            case AnnouncementDue():
                await self._announce()
            case DocumentsRequested(by=by):
                if self.state in IN_VOICE:
                    await self._send_documents_link(by)
            case AgentRinging():
                pass  # the distributor records it; the caller keeps hearing the hold audio
            case AgentConnected():
                await self._on_agent_connected()
            case TransferToAgent(uri=uri, headers=headers):
                if self.state in _WAITING:
                    await self._event("transfer_requested", {"target": uri})
                    self._deps.telephony.transfer(self.call_id, uri, headers)
            case AgentLeft():
                if self.state is CallState.CONNECTED:
                    self._deps.telephony.hangup(self.call_id)
            case CallEnded(by=by, reason=reason):
                await self._on_ended(by, reason)

    # --- hearing -----------------------------------------------------------------------

    async def _on_frame(self, frame: AudioFrame, arrived: float) -> None:
        self._last_index = frame.index
        self._arrivals.append((frame.index, arrived))
        if self.state not in _HEARING:
            return
        for event in self._deps.endpointer.push(frame):
            if isinstance(event, SpeechStarted):
                await self._on_speech_started(event)
            elif isinstance(event, UtteranceEnded) and self.state is CallState.CONSENTING:
                await self._on_consent_answer(event)
            elif isinstance(event, UtteranceEnded) and self.state is CallState.OFFERING:
                await self._on_offer_answer(event)
            elif isinstance(event, UtteranceEnded):
                await self._on_utterance(event)
            elif isinstance(event, UtterancePaused) and self.state is CallState.LISTENING:
                self._speculate(event)
            elif isinstance(event, SpeechResumed):
                self._drop_speculation()
            elif isinstance(event, NoInput) and self.state is CallState.CONSENTING and self._playback is None:
                # Silence while the question plays is listening; the wait for the answer starts when it ends.
                await self._settle_consent(None, "no answer")
            elif isinstance(event, NoInput) and self.state is CallState.OFFERING and self._playback is None:
                await self._settle_offer(None, "no answer")
            elif isinstance(event, NoInput) and self.state is CallState.LISTENING:
                await self._on_no_input(event)
            if self.state not in _HEARING:
                break
        if self.state is CallState.LISTENING and self._speculation is not None and self._speculation.complete:
            await self._commit_if_due()

    async def _on_speech_started(self, event: SpeechStarted) -> None:
        self._drop_speculation()  # a new utterance: the last pause's words are not of it
        if self._playback is not None:  # barge-in: the caller talks over the prompt
            self._stop_prompt()
            await self._event("barge_in", {"at_ms": event.start_ms})
        if self.state in (CallState.GREETING, CallState.REPROMPTING):
            await self._enter(CallState.LISTENING)

    async def _on_prompt_done(self) -> None:
        if self.state in (CallState.GREETING, CallState.REPROMPTING):
            # The no-input clock starts when the caller has heard the whole prompt.
            self._deps.endpointer.begin_turn(self._last_index + 1)
            await self._enter(CallState.LISTENING)
        elif self.state is CallState.CONSENTING:
            self._deps.endpointer.begin_turn(self._last_index + 1, self._consent_turn())
        elif self.state is CallState.OFFERING:
            self._deps.endpointer.begin_turn(self._last_index + 1, self._offer_turn())
        elif self.state is CallState.QUEUED:
            self._play(Prompt.HOLD_MUSIC)  # round and round until an agent answers
        elif self.state is CallState.ACTING:
            await self._after_action_prompt()

    async def _on_no_input(self, event: NoInput) -> None:
        self._progress.no_inputs += 1
        await self._event("no_input", {"count": self._progress.no_inputs, "at_ms": event.at_ms})
        final = self._deps.policy.after_silence(self._progress.no_inputs)
        if final is None:
            first = self._progress.no_inputs == 1
            await self._reprompt(Prompt.NO_INPUT if first else Prompt.REPROMPT)
            return
        await self._enter(CallState.DECIDING)
        await self._decide_and_act(final, Understanding(None, 0.0), utterance_seq=None, timings={})

    # --- early commit: speculating on a pause ---------------------------------------------

    def _speculate(self, paused: UtterancePaused) -> None:
        """Transcribe and classify the words so far in the background; the turn keeps listening. Not while
        utterances wait for Whisper: a speculation the caller talks over is a run wasted, and on a busy node
        it would delay other callers' finished turns (this one is then transcribed at its end, as before)."""
        self._drop_speculation()
        if self._deps.speech.backlog > 0:
            return
        speculation = self._speculation = _Speculation(paused)
        speculation.task = asyncio.create_task(self._run_speculation(speculation))
        self._speculating.add(speculation.task)
        speculation.task.add_done_callback(self._speculating.discard)

    async def _run_speculation(self, speculation: _Speculation) -> None:
        d = self._deps
        try:
            transcript = await d.speech.transcribe(pcm=speculation.paused.pcm, languages=self._transcription_languages())
            speculation.transcript = transcript
            speculation.transcribed.set()
            if transcript.text and not speculation.dropped and not self._ending:
                speculation.result = await d.speech.classify(text=transcript.text)
        except Exception as exc:  # noqa: BLE001 — kept; the utterance's own path runs (and meets it) again
            speculation.error = exc
        finally:
            speculation.transcribed.set()
            speculation.finished.set()
        self.post(SpeculationDone(speculation))

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._speculation.dropped = True
            self._speculation = None

    async def _on_speculation_done(self, speculation: _Speculation) -> None:
        """Commit early if the words so far are a complete, confident request and the caller is still quiet."""
        if speculation is not self._speculation or speculation.dropped or self._ending:
            return
        if self.state is not CallState.LISTENING:
            self._drop_speculation()
            return
        if self._not_early(speculation) is not None:
            return  # wait for the full silence; the transcript is reused then
        speculation.complete = True
        await self._commit_if_due()

    async def _commit_if_due(self) -> None:
        """Commit the current speculation's utterance if it is complete and the pause has lasted long enough."""
        speculation = self._speculation
        if speculation is None or not speculation.complete or speculation.dropped or self.state is not CallState.LISTENING:
            return
        silence_ms = (self._last_index + 1) * FRAME_MS - speculation.paused.speech_end_ms
        if silence_ms < self._deps.settings.endpointing.early_commit_silence_ms:
            return  # checked again on the next frame
        ended = self._deps.endpointer.commit(speculation.paused.speech_end_ms)
        if ended is not None:
            await self._on_utterance(ended)

    def _not_early(self, speculation: _Speculation) -> str | None:
        """Why these words do not decide the turn before the full silence, or None when they may."""
        if speculation.error is not None or speculation.transcript is None or speculation.result is None:
            return "no result"
        return not_early(speculation.transcript, speculation.result[0],
                         min_confidence=self._deps.settings.endpointing.early_commit_min_confidence)

    def _speculation_of(self, event: UtteranceEnded) -> _Speculation | None:
        """The current speculation, taken, if it is of ``event`` and has a transcript (or may still get one)."""
        speculation, self._speculation = self._speculation, None
        if speculation is None or speculation.dropped or not speculation.of(event):
            if speculation is not None:
                speculation.dropped = True
            return None
        if speculation.transcribed.is_set() and speculation.transcript is None:
            return None  # it failed (e.g. Whisper was saturated then): transcribe again now
        return speculation

    async def _transcribe(self, pcm: bytes, speculation: _Speculation | None) -> Transcript:
        if speculation is not None:
            await speculation.transcribed.wait()
            if speculation.transcript is not None:
                return speculation.transcript
        return await self._deps.speech.transcribe(pcm=pcm, languages=self._transcription_languages())

    async def _classify(self, text: str, speculation: _Speculation | None) -> tuple[IntentResult, float]:
        if speculation is not None:
            await speculation.finished.wait()
            if speculation.result is not None:
                return speculation.result
        return await self._deps.speech.classify(text=text)

    def _early_timings(self, event: UtteranceEnded, speculation: _Speculation | None) -> dict[str, float]:
        """With early commit on: whether this utterance was committed early, and the silence that saved."""
        config = self._deps.endpointer.config
        if not config.early:
            return {}
        if event.reason != "early":
            return {"early_commit": 0.0, "speculation_reused": 1.0 if speculation is not None else 0.0}
        return {"early_commit": 1.0, "early_saved_ms": float(config.end_silence_ms - event.endpointing_wait_ms)}

    # --- the caller's utterance ------------------------------------------------------------

    async def _on_utterance(self, event: UtteranceEnded) -> None:
        speculation = self._speculation_of(event)
        await self._enter(CallState.TRANSCRIBING)
        end_arrival = self._arrival_of(event.speech_end_ms)
        detected_arrival = self._arrival_of(event.detected_ms)
        try:
            transcript = await self._transcribe(event.pcm, speculation)
        except AsrSaturated as exc:
            await self._asr_saturated(exc, end_arrival, detected_arrival)
            return
        seq = len(self._progress.utterances) + 1
        timings = {
            "endpointing_ms": _ms(detected_arrival - end_arrival),
            "transcription_ms": _ms(transcript.elapsed_s),
            **self._early_timings(event, speculation),
        }
        await self._save_utterance(seq, event, transcript, timings)
        if self._ending:
            return  # the caller hung up while we listened: what they said is kept, nothing is decided for them
        if not transcript.text:
            await self._enter(CallState.DECIDING)
            heard = Understanding(None, 0.0)
        else:
            await self._enter(CallState.CLASSIFYING)
            result, nlu_s = await self._classify(transcript.text, speculation)
            timings["classification_ms"] = _ms(nlu_s)
            if self._unsure(result) and not self._ending:
                result = await self._second_opinion(event.pcm, result, timings)
            if self._ending:
                return
            await self._enter(CallState.DECIDING)
            heard = Understanding(result.intent, result.confidence)
            self._progress.intent, self._progress.confidence = result.intent, result.confidence
            self._progress.ranking = [{"name": r.name, "confidence": r.confidence} for r in result.ranking]
        started = self._deps.clock()
        decision = self._deps.policy.decide(
            heard, reprompts_used=self._progress.reprompts, whatsapp_unavailable=self._whatsapp_unavailable()
        )
        timings["routing_ms"] = _ms(self._deps.clock() - started)
        timings["end_of_speech_to_decision_ms"] = _ms(self._deps.clock() - end_arrival)
        await self._decide_and_act(decision, heard, utterance_seq=seq, timings=timings)

    def _unsure(self, result: IntentResult) -> bool:
        """A reading the routing policy would not act on: a fallback, or under its confidence floor."""
        return result.fallback or result.confidence < self._deps.settings.routing.min_confidence

    async def _second_opinion(self, pcm: bytes, first: IntentResult, timings: dict[str, float]) -> IntentResult:
        """Ask Whisper what else it heard (``asr.second_opinion``): the hypotheses classified together
        replace ``first`` only when they are sure, so one misheard word does not cost a reprompt."""
        try:
            opinion = await self._deps.speech.second_opinion(pcm, self._transcription_languages())
        except AsrSaturated:
            return first  # no time for it: the caller is reprompted as before
        if opinion is None:
            return first
        transcript, combined, nlu_s = opinion
        timings["second_opinion_ms"] = _ms(transcript.elapsed_s + nlu_s)
        taken = not self._unsure(combined)
        await self._event("second_opinion", {
            "hypotheses": [{"text": a.text, "avg_logprob": round(a.avg_logprob, 3)} for a in transcript.alternatives],
            "intent": combined.intent, "confidence": round(combined.confidence, 3),
            "first": {"intent": first.intent, "confidence": round(first.confidence, 3)}, "taken": taken,
        })
        return combined if taken else first

    async def _asr_saturated(self, exc: AsrSaturated, end_arrival: float, detected_arrival: float) -> None:
        """Whisper is too far behind: the caller is not made to wait for it, but goes the voice
        way now (an agent, or the hold queue), as a caller who asked for a person would."""
        await self._saturated(exc)
        await self._enter(CallState.DECIDING)
        timings = {
            "endpointing_ms": _ms(detected_arrival - end_arrival),
            "end_of_speech_to_decision_ms": _ms(self._deps.clock() - end_arrival),
        }
        await self._decide_and_act(Decision("voice", str(exc)), Understanding(None, 0.0), utterance_seq=None, timings=timings)

    async def _saturated(self, exc: AsrSaturated) -> None:
        await self._event("asr_saturated", {"waiting": exc.waiting, "expected_wait_s": round(exc.expected_wait_s, 2)})

    def _transcription_languages(self) -> list[str]:
        return [self.language] if self.language else list(self._line.languages)

    async def _save_utterance(self, seq: int, event: UtteranceEnded, transcript: Any, timings: dict[str, float]) -> None:
        self._progress.utterances.append(transcript.text)
        detected_language = None
        if transcript.text and self.language is None:
            self.language = detected_language = transcript.language
        await self._record.utterance(
            UtteranceRecord(
                seq=seq, start_ms=event.start_ms, speech_end_ms=event.speech_end_ms, end_reason=event.reason,
                text=transcript.text, language=transcript.language,
                language_probability=transcript.language_probability, no_speech_prob=transcript.no_speech_prob,
                avg_logprob=transcript.avg_logprob, dropped=transcript.dropped, timings=timings,
            ),
            language=detected_language,
        )

    # --- deciding and acting -----------------------------------------------------------

    async def _decide_and_act(
        self, decision: Decision, heard: Understanding, *, utterance_seq: int | None, timings: dict[str, float]
    ) -> None:
        d = self._deps
        if decision.route == "whatsapp" and self._progress.consent is None and self.store_failure is None:
            if await self._consent_on_record():
                self._progress.consent = "on_record"
            elif self.store_failure is None:
                self._pending = _Pending(decision, heard, utterance_seq, timings)
                await self._ask_consent()
                return
        if decision.route == "whatsapp" and self.store_failure is not None:
            decision = Decision("voice", f"{decision.reason}, but the context store failed ({self.store_failure})")
        self._progress.decisions += 1
        message = self._deflection_message() if decision.route == "whatsapp" else None
        await self._record.decision(
            DecisionRecord(
                seq=self._progress.decisions, utterance_seq=utterance_seq, intent=heard.intent,
                confidence=heard.confidence if heard.intent else None, route=decision.route, reason=decision.reason,
                ranking=self._progress.ranking if heard.intent else [], nlu_version=d.speech.nlu_version,
                timings=timings,
            ),
            message,
        )
        if decision.route == "whatsapp" and self.store_failure is not None:
            # The message could not be queued: do not promise it to the caller.
            decision = Decision("voice", f"{decision.reason}, but the context store failed ({self.store_failure})")
        if decision.route == "reprompt":
            self._progress.reprompts += 1
            await self._reprompt(Prompt.REPROMPT)
            return
        if decision.route == "voice" and d.queues is not None:
            await self._join_queue(decision, heard, utterance_seq)
            return
        await self._enter(CallState.ACTING)
        # Nothing the caller says is heard from here on (goodbye, transfer or hold): their frames
        # stop at the SIP edge, which matters when dozens of callers are on hold at once.
        d.telephony.listen(self.call_id, False)
        if decision.route == "whatsapp":
            self._outcome = "deflected"
            self._play(Prompt.WHATSAPP_SENT)
        elif d.settings.routing.agent_uri:
            self._play(Prompt.TRANSFER)
        else:
            await self._hold()

    async def _reprompt(self, prompt: Prompt) -> None:
        await self._enter(CallState.REPROMPTING)
        self._play(prompt)
        self._deps.endpointer.begin_turn(self._last_index + 1)

    async def _after_action_prompt(self) -> None:
        d = self._deps
        if self._outcome in ("deflected", "unserved"):
            d.telephony.hangup(self.call_id)
        elif self._outcome is None and d.settings.routing.agent_uri and not self._transferring:
            self._transferring = True
            await self._event("transfer_requested", {"target": d.settings.routing.agent_uri})
            d.telephony.transfer(self.call_id, d.settings.routing.agent_uri, self._context().sip_headers())
        elif self._outcome is None:  # still holding: keep the caller company
            self._play(Prompt.HOLD)

    async def _hold(self) -> None:
        await self._event("hold", {"timeout_s": self._deps.settings.routing.hold_timeout_s})
        self._play(Prompt.HOLD)
        loop = asyncio.get_running_loop()
        self._hold_timer = loop.call_later(self._deps.settings.routing.hold_timeout_s, self.post, HoldExpired())

    async def _on_transfer(self, code: int, final: bool) -> None:
        await self._event("transfer_progress", {"status": code, "final": final})
        if not final:
            return
        if self.state in _WAITING and self._deps.queues is not None:
            await self._transferred_from_queue(code)
        elif 200 <= code < 300:
            self._outcome = "transferred"
            self._deps.telephony.hangup(self.call_id)
        elif self._outcome is None:
            await self._hold()

    async def _on_dtmf(self, digit: str, method: str) -> None:
        self._progress.dtmf.append(digit)
        await self._event("dtmf", {"digit": digit, "method": method})
        if self.state is CallState.CONSENTING and digit in CONSENT_DIGITS:
            self._stop_prompt()
            await self._settle_consent(CONSENT_DIGITS[digit], "dtmf")
        elif self.state is CallState.OFFERING and digit in CONSENT_DIGITS:
            self._stop_prompt()
            await self._settle_offer(CONSENT_DIGITS[digit], "dtmf")
        elif digit == AGENT_DIGIT and self.state in _HEARING and self.state is not CallState.OFFERING:
            self._stop_prompt()
            if self.state is CallState.CONSENTING:
                self._pending = None
            elif self.state is not CallState.LISTENING:
                await self._enter(CallState.LISTENING)
            await self._enter(CallState.DECIDING)
            await self._decide_and_act(
                Decision("voice", f"caller pressed {AGENT_DIGIT} for an agent"),
                Understanding("agent_request", 1.0), utterance_seq=None, timings={},
            )

    # --- WhatsApp consent ----------------------------------------------------------------

    async def _consent_on_record(self) -> bool:
        policy = self._deps.settings.whatsapp.consent
        if not policy.required:
            return True
        return await self._record.consent_on_record(self.caller.e164)

    def _consent_turn(self) -> EndpointerConfig:
        """A yes/no answer is short: end it sooner, and wait less for it."""
        policy = self._deps.settings.whatsapp.consent
        return replace(self._deps.endpointer.config, end_silence_ms=policy.silence_ms, no_input_ms=policy.no_input_ms,
                       early_silence_ms=None)  # a yes/no answer is not classified: no early commit, its own silence

    async def _ask_consent(self) -> None:
        await self._enter(CallState.CONSENTING)
        await self._event("consent_asked", {"number": self.caller.e164})
        self._play(Prompt.CONSENT)
        self._deps.endpointer.begin_turn(self._last_index + 1, self._consent_turn())

    async def _on_consent_answer(self, event: UtteranceEnded) -> None:
        try:
            answer = await self._deps.speech.recognize_yes_no(event.pcm, self.language or self._line.languages[0])
        except AsrSaturated as exc:
            await self._saturated(exc)
            await self._settle_consent(None, str(exc))
            return
        await self._event("consent_answer", {"choice": answer.choice, "score": answer.score, "margin": answer.margin})
        granted = {"yes": True, "no": False}.get(answer.choice or "")
        await self._settle_consent(granted, "speech" if granted is not None else "unclear answer")

    async def _settle_consent(self, granted: bool | None, how: str) -> None:
        """Record the answer, then act on the decision that waited for it."""
        pending, self._pending = self._pending, None
        if pending is None or self.state is not CallState.CONSENTING:
            return
        if granted is not None:
            await self._record.consent(self.caller.e164, granted=granted, method=how)
        await self._enter(CallState.DECIDING)
        if granted or (granted is None and self._deps.settings.whatsapp.consent.on_no_answer == "whatsapp"):
            self._progress.consent = how if granted else "policy"
            decision = Decision("whatsapp", f"{pending.decision.reason}; consent: {self._progress.consent}")
        elif granted is False:
            decision = Decision("voice", f"{pending.decision.reason}, but the caller declined WhatsApp ({how})")
        else:
            decision = Decision("voice", f"{pending.decision.reason}, but no consent: {how}")
        await self._decide_and_act(decision, pending.heard, utterance_seq=pending.utterance_seq, timings=pending.timings)

    # --- the voice queue ------------------------------------------------------------------

    async def _join_queue(self, decision: Decision, heard: Understanding, utterance_seq: int | None) -> None:
        d = self._deps
        assert d.queues is not None
        queue = d.settings.queue_of(heard.intent)
        await self._enter(CallState.QUEUED)
        d.telephony.listen(self.call_id, False)  # nothing is heard while waiting, until an offer
        self._queue_heard = (heard, utterance_seq)
        context = self._context()
        headers = context.sip_headers()
        if d.context_url is not None:
            headers[CONTEXT_URL_HEADER] = d.context_url(self.call_id)
        self._ticket = self._queued_in = d.queues.join(
            JoinRequest(
                call_id=self.call_id, queue=queue, intent=heard.intent, language=self._deflection_language(),
                priority=d.settings.routing.priorities.get(heard.intent or "", 0), caller_number=self.caller.e164,
                reason=decision.reason, transcript=context.transcript, headers=headers,
            ),
            self,
        )
        await self._event("queued", {
            "queue": queue, "priority": self._ticket.priority, "holdout": self._ticket.holdout,
            "position": d.queues.position(self.call_id), "estimated_wait_s": _round(d.queues.estimate(self.call_id)),
        })
        if self.state is CallState.QUEUED:  # not already with an agent
            self._play(Prompt.HOLD)
        if heard.intent in d.settings.routing.documents_intents:
            await self._send_documents_link("intent")
        settings = d.settings.queues[queue]
        self._later(settings.max_wait_s, QueueTimeout())
        self._later(settings.offer.check_interval_s, OfferCheck())
        if settings.announce_interval_s is not None and d.announcer is not None:
            self._later(settings.announce_interval_s, AnnouncementDue())

    async def _send_documents_link(self, by: str) -> None:
        """The WhatsApp link for documents and photos, while the call goes on; what the customer sends there
        belongs to this call (its conversation), and the agent sees it in the call's context."""
        d = self._deps
        why_not = (self._whatsapp_unavailable(d.settings.whatsapp.documents_template)
                   or (None if await self._consent_on_record() else "no WhatsApp consent on record"))
        if why_not is None:
            assert self.caller.whatsapp is not None
            context = {**self._context().as_dict(), "intent": self._progress.intent or "agent_request"}
            payload = documents_payload(d.settings.whatsapp.documents_template, self._deflection_language(), context,
                                        d.settings.flows.documents_flow)
            message = OutboundMessage(purpose="documents", to_number=self.caller.whatsapp, payload=payload)
            if await self._record.message(message, event="documents_link_sent", data={"by": by}):
                return
            why_not = "already sent on this call"
        await self._event("documents_link_skipped", {"by": by, "reason": why_not})

    async def _announce(self) -> None:
        """Between the hold music: "there are 3 callers ahead of you; your estimated wait is about 4 minutes"."""
        d = self._deps
        if self.state not in _WAITING or self._ticket is None or d.queues is None or d.announcer is None:
            return
        settings = d.settings.queues[self._ticket.queue]
        assert settings.announce_interval_s is not None
        self._later(settings.announce_interval_s, AnnouncementDue())
        position, wait = d.queues.position(self.call_id), d.queues.estimate(self.call_id)
        text = announcement_text(self._deflection_language(), position=position, wait_s=wait, announce=settings.announce)
        if self.state is not CallState.QUEUED or text is None:
            return  # an offer is playing, or nothing to say: the next one
        try:
            wav = await asyncio.to_thread(d.announcer.render, self._deflection_language(), text)
        except AnnouncementError as exc:
            log.warning("call %s: %s", self.call_id, exc)
            return
        if self.state is CallState.QUEUED:  # still waiting once the words are ready
            self._playback = d.telephony.play(self.call_id, wav)
            await self._event("announced", {"position": position, "estimated_wait_s": _round(wait), "text": text})

    def _later(self, seconds: float, item: object) -> None:
        """Post ``item`` to this session in ``seconds``; the next of its kind replaces the last (it has fired)."""
        self._queue_timers[type(item)] = asyncio.get_running_loop().call_later(seconds, self.post, item)

    async def _on_offer_check(self) -> None:
        d = self._deps
        if self.state not in _WAITING or self._ticket is None or d.queues is None:
            return
        self._later(d.settings.queues[self._ticket.queue].offer.check_interval_s, OfferCheck())
        if self.state is not CallState.QUEUED:
            return
        reason = d.queues.offer_reason(self.call_id)
        if reason is None:
            return
        unavailable = self._whatsapp_unavailable()
        if unavailable is not None:
            if self._offer_reason != unavailable:  # said once, not every check
                self._offer_reason = unavailable
                await self._event("offer_skipped", {"reason": unavailable})
            return
        await self._enter(CallState.OFFERING)
        self._offer_reason = reason
        d.queues.offered(self.call_id)
        await self._event("offer_made", {"reason": reason, "offer": self._ticket.offers})
        d.telephony.listen(self.call_id, True)
        self._play(Prompt.OFFER)
        d.endpointer.begin_turn(self._last_index + 1, self._offer_turn())

    def _offer_turn(self) -> EndpointerConfig:
        """The offer's yes/no answer: its own end-of-speech silence and wait, per queue."""
        assert self._ticket is not None
        offer = self._deps.settings.queues[self._ticket.queue].offer
        return replace(self._deps.endpointer.config, end_silence_ms=offer.silence_ms, no_input_ms=offer.no_input_ms,
                       early_silence_ms=None)

    async def _on_offer_answer(self, event: UtteranceEnded) -> None:
        try:
            answer = await self._deps.speech.recognize_yes_no(event.pcm, self._deflection_language())
        except AsrSaturated as exc:
            await self._saturated(exc)
            await self._settle_offer(None, str(exc))
            return
        await self._event("offer_answer", {"choice": answer.choice, "score": answer.score, "margin": answer.margin})
        accepted = {"yes": True, "no": False}.get(answer.choice or "")
        await self._settle_offer(accepted, "speech" if accepted is not None else "unclear answer")

    async def _settle_offer(self, accepted: bool | None, how: str) -> None:
        """Accepted: the caller leaves the queue for WhatsApp. Declined or unanswered: they keep their place."""
        d = self._deps
        if self.state is not CallState.OFFERING or self._ticket is None or d.queues is None:
            return
        if not accepted:
            await self._event("offer_declined" if accepted is False else "offer_ignored", {"how": how})
            if accepted is False:
                d.queues.declined(self.call_id)
            await self._enter(CallState.QUEUED)
            d.telephony.listen(self.call_id, False)
            self._play(Prompt.OFFER_DECLINED if accepted is False else Prompt.HOLD_MUSIC)
            return
        ticket, (heard, utterance_seq) = self._ticket, self._queue_heard or (Understanding(None, 0.0), None)
        waited = ticket.waited(d.clock())
        await self._event("offer_accepted", {"how": how, "waited_s": round(waited, 1)})
        await self._record.consent(self.caller.e164, granted=True, method=how)
        d.queues.leave(self.call_id, "deflected")
        self._ticket, self._progress.consent = None, how
        self._progress.waited_s = waited
        await self._enter(CallState.DECIDING)
        await self._decide_and_act(
            Decision("whatsapp", f"accepted WhatsApp after {waited:.0f} s in the {ticket.queue} queue ({how}); {self._offer_reason}"),
            heard, utterance_seq=utterance_seq, timings={},
        )

    async def _on_agent_connected(self) -> None:
        if self.state not in _WAITING:
            return
        self._playback = None  # the bridge stopped the hold audio or the offer
        await self._enter(CallState.CONNECTED)
        self._deps.telephony.listen(self.call_id, False)
        for timer in self._queue_timers.values():
            timer.cancel()

    async def _transferred_from_queue(self, code: int) -> None:
        """The REFER to a queue's agent ended: 2xx, the caller is with the agent (our leg ends); else they
        keep their place and the hold music."""
        d = self._deps
        assert d.queues is not None
        d.queues.transfer_ended(self.call_id, code)
        if 200 <= code < 300:
            self._outcome = "transferred"  # the ticket stays: leaving at the end records the wait as served
            self._stop_prompt()
            await self._enter(CallState.CONNECTED)
            d.telephony.hangup(self.call_id)
        elif self.state is CallState.QUEUED:
            self._play(Prompt.HOLD_MUSIC)

    async def _on_queue_timeout(self) -> None:
        d = self._deps
        if self.state not in _WAITING or d.queues is None:
            return
        d.queues.leave(self.call_id, "timeout")
        self._ticket = None
        await self._enter(CallState.ACTING)
        d.telephony.listen(self.call_id, False)
        self._outcome = "unserved"
        self._play(Prompt.GOODBYE)

    # --- ending ------------------------------------------------------------------------

    async def _on_ended(self, by: str, reason: str) -> None:
        if self.state in _HEARING and self.state is not CallState.OFFERING:
            partial = self._deps.endpointer.flush()
            if partial is not None:
                await self._save_last_words(partial)
        ticket, recovery = self._ticket, None
        if ticket is not None and self._deps.queues is not None:
            self._deps.queues.leave(self.call_id, "abandoned" if by == "remote" else "interrupted")
            if self.state in _WAITING:  # hung up, or cut off by the gateway stopping (it never hangs up a waiting caller)
                recovery = await self._recovery(ticket)
        if self._outcome in ("deflected", "transferred", "unserved"):
            outcome = self._outcome
        elif self.state is CallState.CONNECTED:
            outcome = "served"
        elif by == "remote":
            outcome = "abandoned"
        else:
            outcome = "interrupted"
        await self._end(by, reason, outcome=outcome, recovery=recovery)

    async def _recovery(self, ticket: Ticket) -> Recovery | None:
        """The WhatsApp message that picks up where this caller, who hung up in the queue, left off (or None, recorded why)."""
        d = self._deps
        unavailable = self._whatsapp_unavailable(d.settings.whatsapp.recovery_template)
        wait = AbandonedWait(
            intent=ticket.intent, language=self._deflection_language(), waited_s=ticket.waited(d.clock()),
            to_number=self.caller.whatsapp, unavailable=unavailable,
            consented=unavailable is None and await self._consent_on_record(), context=self._context().as_dict(),
        )
        plan = plan_recovery(d.settings.queues[ticket.queue].recovery, wait, template=d.settings.whatsapp.recovery_template,
                             now=utcnow())
        if isinstance(plan, str):
            await self._event("recovery_not_offered", {"reason": plan})
            return None
        return plan

    async def _save_last_words(self, partial: UtteranceEnded) -> None:
        """What the caller was saying when they hung up, kept in the record (nothing is decided on it); a
        speculation on those same words (the caller hung up during a pause) is reused."""
        try:
            transcript = await self._transcribe(partial.pcm, self._speculation_of(partial))
        except AsrSaturated as exc:
            await self._saturated(exc)
            return
        seq = len(self._progress.utterances) + 1
        await self._save_utterance(seq, partial, transcript, {"transcription_ms": _ms(transcript.elapsed_s)})

    async def _end(self, by: str, reason: str, *, outcome: str, recovery: Recovery | None = None) -> None:
        self.state = CallState.ENDED
        await self._record.end(outcome=outcome, ended_by=by, reason=reason, recovery=recovery)

    # --- helpers -----------------------------------------------------------------------

    async def _enter(self, state: CallState) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"call {self.call_id}: illegal transition {self.state.value} → {state.value}")
        previous, self.state = self.state, state
        await self._record.event("state", {"from": previous.value, "to": state.value}, state=state.value)

    async def _event(self, type_: str, data: dict[str, Any]) -> None:
        await self._record.event(type_, data)

    def _stop_prompt(self) -> None:
        if self._playback is not None:
            self._deps.telephony.stop_playback(self.call_id)
            self._playback = None

    def _play(self, prompt: Prompt) -> None:
        self._playback = self._deps.telephony.play(self.call_id, self._deps.prompts.path(prompt, self.language or self._line.languages[0]))

    def _arrival_of(self, ms: int) -> float:
        """When the frame ending at ``ms`` of call audio reached us."""
        index = ms // FRAME_MS - 1
        for frame_index, arrived in reversed(self._arrivals):
            if frame_index <= index:
                return arrived
        return self._arrivals[0][1] if self._arrivals else self._deps.clock()

    def _context(self) -> HandoffContext:
        p, ticket = self._progress, self._queued_in
        return HandoffContext(
            call_id=self.call_id, sip_call_id=self.call.sip_call_id, line=self.call.to_user, language=self.language,
            intent=p.intent, confidence=p.confidence, transcript=" ".join(t for t in p.utterances if t), dtmf="".join(p.dtmf),
            queue=ticket.queue if ticket else None, priority=ticket.priority if ticket else None,
            waited_s=None if p.waited_s is None else round(p.waited_s, 1),
        )

    def _deflection_language(self) -> str:
        return self.language or self._line.languages[0]

    def _whatsapp_unavailable(self, template: str | None = None) -> str | None:
        """Why this caller cannot get ``template`` (default: the deflection's) now: their number, or Meta
        stopped the template in their language; None when they can."""
        name = template or self._deps.settings.whatsapp.template
        return self.caller.unusable or self._deps.whatsapp.unavailable(name, self._deflection_language())

    def _deflection_message(self) -> OutboundMessage:
        assert self.caller.whatsapp is not None  # the policy never deflects an unusable number
        payload = followup_payload(self._deps.settings.whatsapp.template, self._deflection_language(), self._context().as_dict())
        return OutboundMessage(purpose="deflection", to_number=self.caller.whatsapp, payload=payload)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _round(seconds: float | None) -> float | None:
    return None if seconds is None or seconds == float("inf") else round(seconds, 1)
