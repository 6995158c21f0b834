"""Early commit on a recording, offline: would it decide sooner, and would it cut the caller off?

Not for production: ``benchmarks/endpointing.py`` and the tests run it over real recordings with
pauses. One clip is one caller turn. The real endpointer (webrtcvad) walks the clip's frames on
their own clock, as the call session would, and the session's rule decides
(:func:`gateway.call.session.not_early`): at each ``UtterancePaused`` the words so far are
transcribed and classified by ``understand`` (real Whisper and the intent model in the benchmark);
the result is ready ``compute_scale`` × the time that took later on the call clock (1: this
machine; 0: an infinitely fast one, which commits at every complete pause and so is the worst
case for cut-offs); if the caller spoke again before that, it is dropped, as the session drops it.

A caller is **cut off** when the utterance decided on ends before the clip's last speech (found by
the endpointer with early commit off, whose own 600 ms end can split a turn too: that is the
baseline's cut-off).
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from gateway.call.session import not_early
from models import (
    Endpointer,
    EndpointerConfig,
    SpeechResumed,
    Transcript,
    UtteranceEnded,
    UtterancePaused,
    WebRtcVad,
    frames_from_pcm,
)
from nlu import IntentResult


@dataclass(frozen=True)
class Heard:
    """What the gateway makes of some audio, and the seconds it took (transcription + classification)."""

    transcript: Transcript
    result: IntentResult | None
    elapsed_s: float


@dataclass(frozen=True)
class Outcome:
    """The first decision of one turn in one mode."""

    decided: bool
    early: bool  # committed at a pause, before the full end-of-speech silence
    cut_off: bool  # the utterance decided on ends before the caller's last speech in the clip
    speech_end_ms: int | None  # where the decided utterance's speech ended
    decision_ms: float | None  # when the decision was made, on the call clock
    text: str
    intent: str | None
    pauses: int  # UtterancePaused events before the decision (speculative runs)
    why_not: list[str]  # for each pause not committed: why

    @property
    def latency_ms(self) -> float | None:
        """End of the decided utterance's speech → decision."""
        if self.decision_ms is None or self.speech_end_ms is None:
            return None
        return self.decision_ms - self.speech_end_ms


class Understander:
    """``understand`` with a cache: the same audio is transcribed once whatever the mode."""

    def __init__(self, transcribe: Callable[[bytes], Transcript], classify: Callable[[str], IntentResult]) -> None:
        self._transcribe, self._classify = transcribe, classify
        self._seen: dict[str, Heard] = {}

    def __call__(self, pcm: bytes) -> Heard:
        key = hashlib.sha1(pcm).hexdigest()
        if key not in self._seen:
            started = time.perf_counter()
            transcript = self._transcribe(pcm)
            result = self._classify(transcript.text) if transcript.text else None
            self._seen[key] = Heard(transcript, result, time.perf_counter() - started)
        return self._seen[key]


def speech_end_of_turn(pcm: bytes, config: EndpointerConfig, vad_aggressiveness: int = 2) -> tuple[int, int]:
    """(the clip's last speech end in ms, how many utterances the full-silence endpointer finds in it)."""
    endpointer = Endpointer(WebRtcVad(vad_aggressiveness), replace(config, early_silence_ms=None, no_input_ms=None))
    ends = [e.speech_end_ms for f in frames_from_pcm(pcm) for e in endpointer.push(f) if isinstance(e, UtteranceEnded)]
    tail = endpointer.flush()
    if tail is not None:
        ends.append(tail.speech_end_ms)
    return (ends[-1] if ends else 0), len(ends)


def simulate(pcm: bytes, understand: Callable[[bytes], Heard], *, config: EndpointerConfig, min_confidence: float,
             commit_silence_ms: int = 0, compute_scale: float = 1.0, compute_s: float | None = None,
             vad_aggressiveness: int = 2) -> Outcome:
    """The turn's first decision with ``config`` (early commit on when its ``early_silence_ms`` is set), committing
    no sooner than ``commit_silence_ms`` of pause; ``compute_s`` replaces the measured time of understanding."""
    turn_end_ms, _ = speech_end_of_turn(pcm, config, vad_aggressiveness)
    endpointer = Endpointer(WebRtcVad(vad_aggressiveness), replace(config, no_input_ms=None))
    pending: tuple[UtterancePaused, Heard, float, str | None] | None = None  # paused, heard, ready at, why not
    checked = False
    pauses, why_not = 0, []

    def outcome(ended: UtteranceEnded, heard: Heard, decided_at: float, early: bool) -> Outcome:
        return Outcome(
            decided=True, early=early, cut_off=ended.speech_end_ms < turn_end_ms, speech_end_ms=ended.speech_end_ms,
            decision_ms=decided_at, text=heard.transcript.text, intent=heard.result.intent if heard.result else None,
            pauses=pauses, why_not=why_not,
        )

    for frame in frames_from_pcm(pcm):
        if pending is not None and not checked and pending[2] <= frame.start_ms:
            checked = True  # SpeculationDone reaches the session after the frames before it
            paused, heard, ready, why = pending
            if why is None:
                ended = endpointer.commit(paused.speech_end_ms)
                if ended is not None:
                    return outcome(ended, heard, ready, early=True)
            why_not.append(why or "")
        for event in endpointer.push(frame):
            if isinstance(event, UtterancePaused):
                pauses += 1
                heard = understand(event.pcm)
                why = "no words" if heard.result is None else not_early(heard.transcript, heard.result,
                                                                         min_confidence=min_confidence)
                ready = event.detected_ms + _compute_ms(heard, compute_scale, compute_s)
                if why is None:
                    ready = max(ready, event.speech_end_ms + commit_silence_ms)
                pending, checked = (event, heard, ready, why), False
            elif isinstance(event, SpeechResumed):
                if pending is not None and not checked:
                    why_not.append("speech resumed before the result")
                pending = None
            elif isinstance(event, UtteranceEnded):
                if pending is not None and (pending[0].start_ms, pending[0].speech_end_ms) == (event.start_ms, event.speech_end_ms):
                    done_at = pending[0].detected_ms + _compute_ms(pending[1], compute_scale, compute_s)
                    return outcome(event, pending[1], max(float(event.detected_ms), done_at), early=False)  # reused
                heard = understand(event.pcm)
                return outcome(event, heard, event.detected_ms + _compute_ms(heard, compute_scale, compute_s), early=False)
    return Outcome(False, False, False, None, None, "", None, pauses, why_not)


def _compute_ms(heard: Heard, scale: float, fixed_s: float | None) -> float:
    return (heard.elapsed_s if fixed_s is None else fixed_s) * 1000 * scale
