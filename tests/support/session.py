"""A call session on a test bench: everything around ``gateway.call.session.CallSession`` is a
stand-in except the routing policy, the prompt library, the endpointer, the context store and the
WhatsApp account's state (what Meta said about the templates), which are the real ones.

- ``FakeTelephony`` notes every command and answers like the SIP edge does: ``play`` returns a
  playback id, a replaced or stopped prompt reports ``PlaybackFinished(interrupted=True)``, and a
  hangup by the gateway reports ``CallEnded(by="local")``. When a prompt *finishes* is the test's
  choice (``Call.prompt_ends``).
- ``ScriptedSpeech`` has ``SpeechPipeline``'s interface and answers from a script, one
  transcript / intent / yes-no answer per utterance, in order (the real dataclasses of
  ``models.transcribe``, ``nlu.classifier`` and ``models.answers``).
- The endpointer is the real ``models.endpointing.Endpointer`` listening through
  ``AnyNonSilence``, a VAD that calls every frame with a non-zero sample speech. That is as
  deterministic as a scripted endpointer (it only counts frames) and less to trust: the
  session's own use of the endpointer (the turn it begins after each prompt, the short
  yes/no turn of the consent question, the partial utterance it flushes on hangup) runs against
  the real thing, and a test says "the caller speaks for a second" instead of scheduling events.
- The store is a real ``Store`` on a SQLite file; ``BreakingStore`` wraps one whose disk
  "fills up" at a chosen operation.
- Time is a ``FakeClock`` (``SessionDeps.clock``): each frame advances it by 20 ms and arrives at
  that time; a transcription or a classification advances it by the time the script says it took.
  Early commit is on (the default ``endpointing.early_silence_ms``): at a pause the session asks for
  a speculative transcription, which the script answers as it would the utterance's.

``Call`` drives one session: it posts what the SIP edge would, and after each step waits (bounded)
until the session is idle, i.e. blocked on an empty inbox, so a test reads as a sequence of
caller actions followed by assertions on commands sent and facts recorded.
"""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.call.announcements import Announcer
from gateway.call.prompts import PromptLibrary
from gateway.call.routing import RoutingPolicy
from gateway.call.session import TRANSITIONS, CallSession, CallState, FrameIn, SessionDeps
from gateway.config import load_settings
from gateway.numbers import CallerNumber
from gateway.queue.dispatcher import Dispatcher
from gateway.queue.journal import QueueJournal
from gateway.store import Store, StoreError
from gateway.whatsapp import AccountHealth
from models.answers import AnswerResult
from models.audio import FRAME_BYTES, FRAME_MS, AudioFrame
from models.endpointing import Endpointer
from models.transcribe import Alternative, Transcript
from models.vad import VoiceActivityDetector
from nlu.classifier import IntentResult, IntentScore
from sip.events import CallEnded, CallMediaReady, DtmfReceived, IncomingCall, PlaybackFinished, TransferUpdate
from tests.support.queue import FakeAgentPhones, FakeTimers
from tests.support.whatsapp import fresh_account

NUMBER = "+525555550123"
CALLER = CallerNumber(NUMBER, None)
AGENT = "sip:agents@pbx.test"
SILENT = bytes(FRAME_BYTES)
VOICED = b"\x00\x10" * (FRAME_BYTES // 2)
SETTLE_S = 2.0  # no step of a scripted call takes anywhere near this


class TransitionLog:
    """The state transitions a test module's calls took (read from what each call recorded), and which of
    its tests ran: the module's last test checks the table against it."""

    def __init__(self) -> None:
        self.taken: set[tuple[CallState, CallState]] = set()
        self.ran: set[str] = set()

    def note(self, record: dict[str, Any] | None) -> None:
        """``placed_call``'s ``on_record``."""
        if record is None:
            return
        states = [e["data"] for e in record["events"] if e["type"] == "state"]
        self.taken.update((CallState(e["from"]), CallState(e["to"])) for e in states)
        if record["outcome"] is not None:  # ending is recorded as call_ended, not as a state event
            self.taken.add((CallState(states[-1]["to"]) if states else CallState.ANSWERED, CallState.ENDED))

    def untaken(self, request: Any, table: set[tuple[CallState, CallState]]) -> list[str]:
        """The transitions of ``table`` no test took; skips the test unless the whole module ran before it."""
        module = request.node.parent
        others = [item.nodeid for item in module.collect() if item.nodeid != request.node.nodeid]
        not_run = [nodeid for nodeid in others if nodeid not in self.ran]
        if not_run:
            pytest.skip(f"needs the whole module: {len(not_run)} of its tests did not run before this one")
        every = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
        assert self.taken - every == set(), "transitions outside the table"
        return sorted(f"{a.value} → {b.value}" for a, b in table - self.taken)


class FakeClock:
    """``SessionDeps.clock``: monotonic seconds that move only when the bench moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class AnyNonSilence(VoiceActivityDetector):
    def is_speech(self, frame: AudioFrame) -> bool:
        return frame.pcm != SILENT


class FakeTelephony:
    """The ``Telephony`` commands, noted in ``commands``; emits what the SIP edge would emit back."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []
        self.playing: str | None = None
        self.listening = True  # whether the caller's frames would still reach the session
        self.emit: Callable[[object], None] = lambda event: None
        self._ids = 0

    def play(self, call_id: str, wav_path: Any) -> str:
        path = Path(wav_path)
        assert path.is_file(), path
        self._interrupt(call_id)
        self._ids += 1
        self.playing = f"playback-{self._ids}"
        self.commands.append(("play", f"{path.parent.name}/{path.stem}"))
        return self.playing

    def stop_playback(self, call_id: str) -> None:
        self.commands.append(("stop_playback",))
        self._interrupt(call_id)

    def hangup(self, call_id: str, status_code: int | None = None) -> None:
        self.commands.append(("hangup", status_code))
        self._interrupt(call_id)
        self.emit(CallEnded(call_id, by="local", reason="Normal call clearing", sip_status=status_code or 200))

    def transfer(self, call_id: str, target_uri: str, headers: dict[str, str]) -> None:
        self.commands.append(("transfer", target_uri, dict(headers)))

    def listen(self, call_id: str, on: bool) -> None:
        self.listening = on

    @property
    def prompts(self) -> list[str]:
        """The prompts played, in order, as ``language/name``."""
        return [c[1] for c in self.commands if c[0] == "play"]

    def _interrupt(self, call_id: str) -> None:
        if self.playing is not None:
            self.emit(PlaybackFinished(call_id, self.playing, interrupted=True))
            self.playing = None


class ScriptedSpeech:
    """``SpeechPipeline``'s interface, answering from a script; ``asked`` notes every request."""

    asr_model = "whisper-scripted"
    nlu_version = "nlu-scripted"
    backlog = 0  # utterances waiting for a worker (a test may say Whisper is behind)

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._transcripts: deque[Transcript] = deque()
        self._results: deque[tuple[IntentResult, float]] = deque()
        self._answers: deque[AnswerResult] = deque()
        self._opinions: deque[tuple[Transcript, IntentResult, float]] = deque()
        self.asked: list[tuple[Any, ...]] = []
        self.unscripted: list[str] = []
        self.failures: dict[str, Exception] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.called = asyncio.Event()  # set on every request

    def will_hear(self, text: str, *, language: str, elapsed_s: float) -> None:
        self._transcripts.append(Transcript(
            text=text, language=language, language_probability=0.97, no_speech_prob=0.02 if text else 0.9,
            avg_logprob=-0.25 if text else -1.8, duration_s=1.0, elapsed_s=elapsed_s, dropped=None if text else "no_speech",
        ))

    def will_classify(self, text: str, intent: str, confidence: float, *, elapsed_s: float) -> None:
        ranking = (IntentScore(intent, confidence), IntentScore("complaint", round((1 - confidence) / 2, 4)))
        self._results.append((IntentResult(text=text, intent=intent, confidence=confidence, ranking=ranking), elapsed_s))

    def will_reconsider(self, hypotheses: list[str], intent: str, confidence: float, *, elapsed_s: float) -> None:
        """The next second opinion hears ``hypotheses`` and, classified together, ``intent`` at ``confidence``.
        Unscripted, a second opinion answers None (as with ``asr.second_opinion`` 0)."""
        alternatives = tuple(Alternative(text, -0.3 - 0.1 * i) for i, text in enumerate(hypotheses))
        transcript = Transcript(
            text=hypotheses[0], language="es", language_probability=0.97, no_speech_prob=0.02, avg_logprob=-0.3,
            duration_s=1.0, elapsed_s=elapsed_s, alternatives=alternatives,
        )
        ranking = (IntentScore(intent, confidence),)
        self._opinions.append((transcript, IntentResult(hypotheses[0], intent, confidence, ranking), 0.002))

    def will_answer(self, choice: str | None) -> None:
        scores = {"yes": -0.05 if choice == "yes" else -3.0, "no": -0.05 if choice == "no" else -3.0, "other": -4.0}
        self._answers.append(AnswerResult(
            choice=choice, score=max(scores.values()), margin=2.95 if choice else 0.1, scores=scores, elapsed_s=0.15,
            reason=None if choice else "low_margin", best=choice or "yes",
        ))

    def hold(self, method: str) -> asyncio.Event:
        """Make ``method`` wait until the returned event is set (a busy worker pool)."""
        self.gates[method] = asyncio.Event()
        return self.gates[method]

    async def transcribe(self, pcm: bytes, languages: Any) -> Transcript:
        self.asked.append(("transcribe", len(pcm) // FRAME_BYTES, list(languages)))
        transcript = await self._next("transcribe", self._transcripts)
        self._clock.advance(transcript.elapsed_s)
        return transcript

    async def classify(self, text: str) -> tuple[IntentResult, float]:
        self.asked.append(("classify", text))
        result, elapsed_s = await self._next("classify", self._results)
        assert result.text == text, (result.text, text)
        self._clock.advance(elapsed_s)
        return result, elapsed_s

    async def second_opinion(self, pcm: bytes, languages: Any) -> tuple[Transcript, IntentResult, float] | None:
        self.asked.append(("second_opinion", len(pcm) // FRAME_BYTES, list(languages)))
        if not self._opinions:
            return None
        opinion = self._opinions.popleft()
        self._clock.advance(opinion[0].elapsed_s)
        return opinion

    async def recognize_yes_no(self, pcm: bytes, language: str) -> AnswerResult:
        self.asked.append(("recognize_yes_no", len(pcm) // FRAME_BYTES, language))
        answer = await self._next("recognize_yes_no", self._answers)
        self._clock.advance(answer.elapsed_s)
        return answer

    def methods_asked(self) -> list[str]:
        return [a[0] for a in self.asked]

    async def _next(self, method: str, script: deque) -> Any:
        self.called.set()
        if method in self.gates:
            await self.gates[method].wait()
        if method in self.failures:
            raise self.failures[method]
        if not script:
            self.unscripted.append(method)
            raise AssertionError(f"the session asked for {method} that the test did not script")
        return script.popleft()


class BreakingStore:
    """A real store whose disk fills up at ``breaks_at`` (e.g. ``"calls.record_decision"``): that
    operation and every later one of ``calls`` and ``consents`` raise ``StoreError``."""

    FULL = "OperationalError: database or disk is full"

    def __init__(self, store: Store, breaks_at: str) -> None:
        self._store = store
        self.breaks_at = breaks_at
        self.broken = False
        self.calls = _BreakingRepository(self, "calls", store.calls)
        self.consents = _BreakingRepository(self, "consents", store.consents)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _BreakingRepository:
    def __init__(self, owner: BreakingStore, name: str, repository: Any) -> None:
        self._owner, self._name, self._repository = owner, name, repository

    def __getattr__(self, method: str) -> Any:
        real = getattr(self._repository, method)

        async def operation(*args: Any, **kwargs: Any) -> Any:
            if f"{self._name}.{method}" == self._owner.breaks_at:
                self._owner.broken = True
            if self._owner.broken:
                raise StoreError(BreakingStore.FULL)
            return await real(*args, **kwargs)

        return operation


class _Inbox(asyncio.Queue):
    """The session's inbox; ``idle`` is set while its one consumer waits on it with nothing left to take."""

    def __init__(self) -> None:
        super().__init__()
        self.idle = asyncio.Event()

    def put_nowait(self, item: object) -> None:
        self.idle.clear()
        super().put_nowait(item)

    async def get(self) -> object:
        if self.empty():
            self.idle.set()
        return await super().get()


async def first_of(*events: asyncio.Event, what: str) -> None:
    """Wait (bounded) until one of ``events`` is set."""
    if any(e.is_set() for e in events):
        return
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(waits, timeout=SETTLE_S, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    if not done:
        raise AssertionError(f"{what}: nothing after {SETTLE_S} s")


class Call:
    """One call through a ``CallSession``, driven like the SIP edge and the caller would."""

    def __init__(self, session: CallSession, telephony: FakeTelephony, speech: ScriptedSpeech, store: Store,
                 clock: FakeClock) -> None:
        self.session = session
        self.queue: Dispatcher | None = None  # with queues configured: the distributor, its agents' phones, its timers
        self.phones = FakeAgentPhones()
        self.timers = FakeTimers(clock)
        self.journal = QueueJournal()
        self.telephony = telephony
        self.speech = speech
        self.store = store  # the real one, also when the session writes to a BreakingStore
        self.clock = clock
        self._frame = 0
        self._inbox = _Inbox()  # the same queue, telling when the session has handled all of it
        session.inbox = self._inbox
        telephony.emit = session.post

    # --- what the SIP edge reports --------------------------------------------------------

    async def connect(self) -> None:
        """Media is up: the gateway greets the caller."""
        await self.post(CallMediaReady(self.call_id))

    async def prompt_ends(self) -> None:
        """The prompt now playing finishes."""
        assert self.telephony.playing is not None, f"no prompt is playing (played: {self.prompts})"
        await self.post(PlaybackFinished(self.call_id, self.telephony.playing))

    async def press(self, digit: str, method: str = "rfc4733") -> None:
        await self.post(DtmfReceived(self.call_id, digit, method))

    async def transfer_reports(self, status_code: int, *, final: bool = True) -> None:
        await self.post(TransferUpdate(self.call_id, status_code, final=final))

    async def hang_up(self) -> None:
        await self.post(CallEnded(self.call_id, by="remote", reason="Normal call clearing", sip_status=200))

    async def gateway_stops(self) -> None:
        await self.post(CallEnded(self.call_id, by="local", reason="gateway shutting down", sip_status=503))

    # --- what the caller does ---------------------------------------------------------------

    async def say(self, text: str, intent: str | None = None, confidence: float = 0.93, *, language: str = "es",
                  speech_ms: int = 1000, transcription_s: float = 0.25, classification_s: float = 0.004,
                  settle: bool = True) -> int:
        """Speak for ``speech_ms``, then keep quiet until the gateway acts on it; Whisper hears ``text``
        (``""``: noise it drops) and, for any text, the intent model says ``intent``. Returns the
        milliseconds of silence the gateway waited before taking the utterance."""
        self.speech.will_hear(text, language=language, elapsed_s=transcription_s)
        if text:
            self.speech.will_classify(text, intent or "out_of_scope", confidence, elapsed_s=classification_s)
        return await self._utter(speech_ms, settle=settle)

    async def answer(self, choice: str | None, *, speech_ms: int = 400) -> int:
        """Answer the consent question aloud; the yes/no recogniser hears ``choice`` (None: unclear)."""
        self.speech.will_answer(choice)
        return await self._utter(speech_ms, settle=True)

    async def start_speaking(self, ms: int, *, heard: str = "", language: str = "es") -> None:
        """Speak for ``ms`` and not stop (yet); ``heard`` is what Whisper makes of it if the call ends now."""
        self.speech.will_hear(heard, language=language, elapsed_s=0.2)
        for _ in range(ms // FRAME_MS):
            self._send(VOICED)
        await self.settle()

    async def voice(self, ms: int) -> None:
        """Speak for ``ms``; what Whisper hears of it is the test's to script."""
        for _ in range(ms // FRAME_MS):
            self._send(VOICED)
        await self.settle()

    async def silence(self, ms: int) -> None:
        for _ in range(ms // FRAME_MS):
            self._send(SILENT)
            await self.settle()

    async def stay_silent(self, *, at_most_ms: int = 30_000) -> int:
        """Keep quiet until the gateway does something; returns how long that took (ms)."""
        state, commands = self.state, len(self.telephony.commands)
        for n in range(1, at_most_ms // FRAME_MS + 1):
            self._send(SILENT)
            await self.settle()
            if self.state is not state or len(self.telephony.commands) != commands:
                return n * FRAME_MS
        raise AssertionError(f"nothing happened in {at_most_ms} ms of silence (state {self.state.value})")

    # --- waiting and reading ---------------------------------------------------------------

    async def post(self, item: object) -> None:
        self.session.post(item)
        await self.settle()

    async def settle(self) -> None:
        """Wait until the session has handled everything posted (or has ended), including what its background
        work posts back (a speculative transcription, unless held: it runs within a loop turn of being started)."""
        while True:
            await first_of(self._inbox.idle, self.session.done, what=f"the session is still busy (state {self.state.value})")
            await asyncio.sleep(0)
            if self.session.done.is_set() or self._inbox.idle.is_set():
                return

    async def until(self, condition: Callable[[], bool], timeout_s: float = SETTLE_S, *, settle: bool = True) -> None:
        """Wait for something the session does on its own (a timer); ``settle=False`` while it is meant to stay busy."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                await asyncio.sleep(0.001)
        if settle:
            await self.settle()

    async def over(self) -> None:
        """Wait for the session to end."""
        async with asyncio.timeout(SETTLE_S):
            await self.session.done.wait()

    async def ended(self) -> dict[str, Any]:
        """The call's record once the session is over."""
        await self.over()
        return await self.record()

    async def record(self) -> dict[str, Any]:
        if self.queue is not None:
            await self.journal.flush()
        record = await self.store.calls.get(self.call_id)
        assert record is not None, "the call was never recorded"
        return record

    async def events(self, type_: str) -> list[dict[str, Any]]:
        return [e["data"] for e in (await self.record())["events"] if e["type"] == type_]

    @property
    def call_id(self) -> str:
        return self.session.call_id

    @property
    def state(self) -> CallState:
        return self.session.state

    @property
    def prompts(self) -> list[str]:
        """The prompts played so far, by name (``call.telephony.prompts`` has their language too)."""
        return [p.split("/")[1] for p in self.telephony.prompts]

    # --- internals -----------------------------------------------------------------------

    def _send(self, pcm: bytes) -> None:
        self.clock.advance(FRAME_MS / 1000)
        self.session.post(FrameIn(AudioFrame(pcm, self._frame), self.clock.now))
        self._frame += 1

    async def _utter(self, speech_ms: int, *, settle: bool) -> int:
        for _ in range(speech_ms // FRAME_MS):
            self._send(VOICED)
        await self.settle()
        state, commands = self.state, len(self.telephony.commands)

        def took() -> bool:
            return self.session.done.is_set() or self.state is not state or len(self.telephony.commands) != commands

        for n in range(1, 3000 // FRAME_MS + 1):
            self._send(SILENT)
            if settle:
                await self.settle()
            else:  # the gateway is meant to stay busy: wait until it has handled the frame, or has moved on
                await self.until(lambda: self._inbox.idle.is_set() or took(), settle=False)
            if took():
                return n * FRAME_MS
        raise AssertionError(f"the gateway never took the utterance (state {self.state.value})")

    async def pause_then_say(self, first: str, rest: str, *, pause_ms: int, intent: str | None = None,
                             confidence: float = 0.93, first_intent: str | None = None, first_confidence: float = 0.93,
                             language: str = "es", speech_ms: int = 1000) -> int:
        """Say ``first``, pause ``pause_ms`` (long enough for a speculation on it, shorter than the end of
        speech), then say ``rest``: Whisper hears ``first`` at the pause and ``first + rest`` at the end."""
        self.speech.will_hear(first, language=language, elapsed_s=0.2)
        self.speech.will_classify(first, first_intent or "out_of_scope", first_confidence, elapsed_s=0.004)
        for _ in range(speech_ms // FRAME_MS):
            self._send(VOICED)
        await self.settle()
        await self.silence(pause_ms)
        return await self.say(f"{first} {rest}", intent, confidence, language=language, speech_ms=speech_ms)


@contextlib.asynccontextmanager
async def placed_call(
    db_path: Path,
    *,
    line: str = "es",
    caller: CallerNumber = CALLER,
    settings: dict[str, Any] | None = None,
    store_breaks_at: str | None = None,
    policy: RoutingPolicy | None = None,
    whatsapp: AccountHealth | None = None,
    on_record: Callable[[dict[str, Any] | None], None] | None = None,
) -> AsyncIterator[Call]:
    """A session for one incoming call, running until the block ends; ``whatsapp`` is what Meta said about
    the account (by default: nothing yet); ``on_record`` gets the call's record (or ``None`` when nothing
    was recorded) once the block is over."""
    store = Store(f"sqlite:///{db_path}")
    clock = FakeClock()
    config = load_settings(environ={}, overrides=settings or {})
    telephony, speech = FakeTelephony(), ScriptedSpeech(clock)
    phones, timers, journal = FakeAgentPhones(), FakeTimers(clock), QueueJournal()
    dispatcher = None
    if config.queues:
        journal.start()
        dispatcher = Dispatcher(config.queues, telephony=phones, store=store, journal=journal, schedule=timers, clock=clock)
        phones.deliver = dispatcher.on_leg_event
        phones.on_bridge = telephony.stop_playback  # the bridge takes the caller off their prompt
    deps = SessionDeps(
        settings=config, telephony=telephony,
        store=BreakingStore(store, store_breaks_at) if store_breaks_at else store,  # type: ignore[arg-type]
        speech=speech,  # type: ignore[arg-type]
        policy=policy or RoutingPolicy(config.routing), prompts=PromptLibrary(config.languages),
        endpointer=Endpointer(AnyNonSilence(), config.endpointer_config()),
        whatsapp=whatsapp or fresh_account(**(settings or {})), clock=clock,
        queues=dispatcher, context_url=lambda call_id: f"http://puente.test/v1/calls/{call_id}/context",
        announcer=Announcer(db_path.parent / "announcements"),
    )
    incoming = IncomingCall(
        call_id=str(uuid.uuid4()), sip_call_id=f"{uuid.uuid4().hex[:12]}@pbx.test",
        from_uri=f"sip:{caller.e164 or 'anonymous'}@carrier.test", to_uri=f"sip:{line}@puente.test", to_user=line,
        remote_address="192.0.2.10:5060",
    )
    session = CallSession(incoming, caller, deps)
    call = Call(session, telephony, speech, store, clock)
    call.queue, call.phones, call.timers, call.journal = dispatcher, phones, timers, journal
    task = asyncio.create_task(session.run())
    try:
        await call.settle()
        yield call
        assert not speech.unscripted, f"the session asked for what the test did not script: {speech.unscripted}"
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await journal.stop()
        if on_record is not None:
            on_record(await store.calls.get(incoming.call_id))
        store.close()
