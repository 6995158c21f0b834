"""Endpointing: where an utterance starts and ends, frame-exact.

Driven only by the frames pushed (their ``index`` is the clock), never by wall time, so
the same audio always gives the same events, in tests and on a loaded server alike.

One :class:`Endpointer` per call. A *turn* is one listening period (after a prompt);
within it the endpointer reports::

    SpeechStarted     the caller began speaking (also the barge-in signal)
    UtterancePaused   tentative: ``early_silence_ms`` of trailing silence, the utterance goes on
    SpeechResumed     the caller spoke again after an UtterancePaused: that one is stale
    UtteranceEnded    the caller stopped: enough trailing silence, too long, or hung up
    NoInput           nothing was said within ``no_input_ms`` of the turn's start

and then keeps listening, so two sentences separated by a pause give two utterances.

*Early commit*: an ``UtterancePaused`` lets the consumer start transcribing while it waits for
the full ``end_silence_ms``. If what it heard is a complete request it calls :meth:`Endpointer.commit`,
which ends the utterance there (reason ``"early"``) so it is not reported again; if the caller
speaks again first, ``SpeechResumed`` says so (and the paused ``speech_end_ms`` no longer matches
the utterance's), and at the full silence ``UtteranceEnded`` comes as it would have anyway.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal

from models.audio import FRAME_BYTES, FRAME_MS, AudioFrame
from models.vad import VoiceActivityDetector

EndReason = Literal["silence", "max_length", "flush", "early"]


@dataclass(frozen=True, slots=True)
class EndpointerConfig:
    """When an utterance starts and ends. All times in milliseconds of call audio.

    Attributes:
      speech_start_ms: window in which speech must dominate to declare a start.
      speech_start_ratio: share of voiced frames needed in that window; below 1.0 a
        one-frame VAD dropout inside a word does not delay the start.
      end_silence_ms: trailing silence that ends an utterance. Paid on every turn, the
        largest fixed part of the caller-perceived latency: shorten it for yes/no turns.
      early_silence_ms: trailing silence at which a tentative :class:`UtterancePaused` is
        reported (once per pause) while the endpointer keeps listening, so the consumer can
        start on the words so far and :meth:`Endpointer.commit` them early. Must be shorter
        than ``end_silence_ms``; ``None`` (or 0) disables it.
      max_utterance_ms: an utterance is cut here (reason ``"max_length"``); Whisper's
        window is 30 s, and a caller talking this long is not answering a question.
      no_input_ms: no speech start within this time after the turn begins → NoInput.
        ``None`` never reports NoInput.
      pre_roll_ms: audio kept before the detected start; the VAD fires a little after
        the first phoneme, and Whisper needs it.
      tail_ms: silence kept after the last voiced frame (the rest of the trailing
        silence is trimmed): a clean word ending without paying for the whole wait.
    """

    speech_start_ms: int = 100
    speech_start_ratio: float = 0.8
    end_silence_ms: int = 600
    early_silence_ms: int | None = 300
    max_utterance_ms: int = 15_000
    no_input_ms: int | None = 5_000
    pre_roll_ms: int = 300
    tail_ms: int = 200

    def __post_init__(self) -> None:
        if self.speech_start_ms < FRAME_MS:
            raise ValueError(f"speech_start_ms must be ≥ one frame ({FRAME_MS} ms), got {self.speech_start_ms}")
        if not 0.0 < self.speech_start_ratio <= 1.0:
            raise ValueError(f"speech_start_ratio must be in (0, 1], got {self.speech_start_ratio}")
        if self.end_silence_ms < FRAME_MS:
            raise ValueError(f"end_silence_ms must be ≥ {FRAME_MS}, got {self.end_silence_ms}")
        if self.early_silence_ms and not FRAME_MS <= self.early_silence_ms < self.end_silence_ms:
            raise ValueError(
                f"early_silence_ms must be ≥ {FRAME_MS} and shorter than end_silence_ms ({self.end_silence_ms}), "
                f"got {self.early_silence_ms} (None or 0 disables early commit)"
            )
        if self.max_utterance_ms <= self.speech_start_ms:
            raise ValueError("max_utterance_ms must be longer than speech_start_ms")
        if self.no_input_ms is not None and self.no_input_ms <= 0:
            raise ValueError(f"no_input_ms must be positive or None, got {self.no_input_ms}")
        if self.pre_roll_ms < 0 or self.tail_ms < 0:
            raise ValueError("pre_roll_ms and tail_ms must be ≥ 0")

    @property
    def early(self) -> bool:
        """Whether this config reports :class:`UtterancePaused`."""
        return bool(self.early_silence_ms)

    @property
    def start_window_frames(self) -> int:
        return math.ceil(self.speech_start_ms / FRAME_MS)

    @property
    def start_voiced_frames(self) -> int:
        return math.ceil(self.start_window_frames * self.speech_start_ratio)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started speaking; ``start_ms`` is the start of the first voiced frame."""

    start_ms: int


@dataclass(frozen=True, slots=True)
class _Utterance:
    """The audio and times of an utterance, as far as the endpointer has it (see UtteranceEnded)."""

    pcm: bytes
    start_ms: int
    speech_end_ms: int
    detected_ms: int
    pcm_start_ms: int

    @property
    def endpointing_wait_ms(self) -> int:
        return self.detected_ms - self.speech_end_ms

    @property
    def speech_end_in_pcm_s(self) -> float:
        """Where the speech ends inside ``pcm``, in seconds from its first sample (the
        ``speech_end_s`` that :meth:`models.transcribe.Transcriber.transcribe` takes)."""
        return (self.speech_end_ms - self.pcm_start_ms) / 1000


@dataclass(frozen=True, slots=True)
class UtteranceEnded(_Utterance):
    """One utterance, ready for transcription.

    All ``*_ms`` fields are on the call's frame clock (``AudioFrame.start_ms``). ``pcm``
    (16 kHz PCM16, whole frames) starts at ``pcm_start_ms``: ``start_ms`` minus
    ``pre_roll_ms`` rounded up to whole frames, or later when fewer frames had arrived
    since the turn began or the previous utterance ended. Frames lost inside it are
    zeros, so call time ``t`` is at sample ``(t - pcm_start_ms) * 16`` of ``pcm``, and
    the speech ends at :attr:`speech_end_in_pcm_s` into it. ``pcm`` ends ``tail_ms``
    (rounded up to a whole frame) after ``speech_end_ms``, or at ``detected_ms`` if that
    comes first. ``detected_ms - speech_end_ms`` is the time spent waiting for the end
    (``endpointing_wait_ms``; == ``end_silence_ms`` for reason ``"silence"``).
    """

    reason: EndReason


@dataclass(frozen=True, slots=True)
class UtterancePaused(_Utterance):
    """Tentative: ``early_silence_ms`` of trailing silence, and the endpointer keeps listening.

    The same fields as :class:`UtteranceEnded` but its reason (``pcm`` is the utterance so far, trimmed
    the same way; ``detected_ms`` is when the pause was reported). It is stale once a later event of the
    same utterance has another ``speech_end_ms`` (the caller spoke again: :class:`SpeechResumed`); while
    it is not, :meth:`Endpointer.commit` ends the utterance here.
    """


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """The caller spoke again after the :class:`UtterancePaused` that ended speech at ``paused_speech_end_ms``;
    ``at_ms`` is the start of the voiced frame. The utterance goes on."""

    at_ms: int
    paused_speech_end_ms: int


@dataclass(frozen=True, slots=True)
class NoInput:
    """Nothing was said within ``no_input_ms`` of the turn's start; ``at_ms`` is when that ran out."""

    at_ms: int


EndpointEvent = SpeechStarted | UtterancePaused | SpeechResumed | UtteranceEnded | NoInput


class Endpointer:
    """Turns a call's frames into utterances (see the module docstring).

    A turn starts at the first frame pushed, or wherever :meth:`begin_turn` says. Not
    thread-safe: feed it from the one consumer of a call's frames.
    """

    def __init__(self, vad: VoiceActivityDetector, config: EndpointerConfig | None = None) -> None:
        self._vad = vad
        self.config = config or EndpointerConfig()
        self._turn_config = self.config
        self._turn_start_ms: int | None = None
        self._no_input_pending = True
        self._last_index: int | None = None
        # Waiting for speech: the recent frames (pre-roll + start window), and the indices of the
        # voiced ones among the start window's.
        self._recent: deque[AudioFrame] = deque()
        self._voiced_recently: deque[int] = deque()
        # Inside an utterance:
        self._speaking = False
        self._pcm: list[bytes] = []
        self._pcm_start_index = 0
        self._start_ms = 0
        self._speech_end_ms = 0
        self._paused_at: int | None = None  # speech_end_ms of the pause reported (UtterancePaused)

    def begin_turn(self, at_frame_index: int, config: EndpointerConfig | None = None) -> None:
        """Start a new listening turn at frame ``at_frame_index``, with its own config.

        Audio of an unfinished utterance is discarded (the caller is being re-prompted);
        call :meth:`flush` first to keep it. The NoInput timer restarts from this frame.
        """
        self._turn_config = config or self.config
        self._turn_start_ms = at_frame_index * FRAME_MS
        self._no_input_pending = self._turn_config.no_input_ms is not None
        self._reset_utterance()

    def push(self, frame: AudioFrame) -> list[EndpointEvent]:
        """Consume the next frame; return the events it caused (usually none)."""
        if len(frame.pcm) != FRAME_BYTES:
            raise ValueError(f"expected a {FRAME_BYTES}-byte frame, got {len(frame.pcm)}")
        if self._last_index is not None and frame.index <= self._last_index:
            raise ValueError(f"frame {frame.index} is not after frame {self._last_index}")
        gap = 0 if self._last_index is None else frame.index - self._last_index - 1
        self._last_index = frame.index
        if self._turn_start_ms is None:
            self.begin_turn(frame.index, self._turn_config)
        if frame.start_ms < (self._turn_start_ms or 0):
            return []  # before the turn begins (begin_turn was given a future frame)

        voiced = self._vad.is_speech(frame)
        events: list[EndpointEvent] = []
        if self._speaking:
            # Lost frames count as silence so pcm stays aligned with the ms fields.
            self._pcm.extend([bytes(FRAME_BYTES)] * gap)
            self._pcm.append(frame.pcm)
            if voiced:
                if self._paused_at is not None:
                    events.append(SpeechResumed(at_ms=frame.start_ms, paused_speech_end_ms=self._paused_at))
                    self._paused_at = None
                self._speech_end_ms = frame.end_ms
            ended = self._check_end(frame)
            if ended is not None:
                events.append(ended)
            elif self._paused_at is None and self._turn_config.early:
                if frame.end_ms - self._speech_end_ms >= (self._turn_config.early_silence_ms or 0):
                    self._paused_at = self._speech_end_ms
                    events.append(UtterancePaused(**self._so_far(frame.end_ms)))
        else:
            started = self._check_start(frame, voiced)
            if started is not None:
                events.append(started)
        if self._no_input_pending and not self._speaking:
            deadline = (self._turn_start_ms or 0) + (self._turn_config.no_input_ms or 0)
            if frame.end_ms >= deadline:
                self._no_input_pending = False
                events.append(NoInput(at_ms=deadline))
        return events

    def flush(self) -> UtteranceEnded | None:
        """The audio stops (hang-up): return the utterance in progress, if any."""
        if not self._speaking or self._last_index is None:
            return None
        return self._finish("flush", detected_ms=(self._last_index + 1) * FRAME_MS)

    def commit(self, speech_end_ms: int) -> UtteranceEnded | None:
        """End the utterance now (reason ``"early"``), if it still ends its speech at ``speech_end_ms``
        (that of the :class:`UtterancePaused` acted on); None when the caller spoke again since, or the
        utterance already ended. It is not reported again; the endpointer listens for the next one."""
        if not self._speaking or self._last_index is None or self._speech_end_ms != speech_end_ms:
            return None
        return self._finish("early", detected_ms=(self._last_index + 1) * FRAME_MS)

    @property
    def utterance_speech_end_ms(self) -> int | None:
        """Where the utterance in progress last had speech (call ms), or None between utterances."""
        return self._speech_end_ms if self._speaking else None

    # --- internals -----------------------------------------------------------------------

    def _check_start(self, frame: AudioFrame, voiced: bool) -> SpeechStarted | None:
        cfg = self._turn_config
        pre_roll_frames = math.ceil(cfg.pre_roll_ms / FRAME_MS)
        window_frames = cfg.start_window_frames
        self._recent.append(frame)
        while len(self._recent) > pre_roll_frames + window_frames:
            self._recent.popleft()
        # The voiced frames of the start window, kept as it slides. Only frames within
        # window_frames of this one count, so a gap in the stream shrinks the window.
        if voiced:
            self._voiced_recently.append(frame.index)
        while self._voiced_recently and frame.index - self._voiced_recently[0] >= window_frames:
            self._voiced_recently.popleft()
        if len(self._voiced_recently) < cfg.start_voiced_frames:
            return None
        onset_index, last_voiced_index = self._voiced_recently[0], self._voiced_recently[-1]
        self._speaking = True
        self._no_input_pending = False
        self._start_ms = onset_index * FRAME_MS
        self._speech_end_ms = (last_voiced_index + 1) * FRAME_MS
        first_index = max(onset_index - pre_roll_frames, self._recent[0].index)
        self._pcm_start_index = first_index
        self._pcm = []
        expected = first_index
        for f in self._recent:
            if f.index < first_index:
                continue
            self._pcm.extend([bytes(FRAME_BYTES)] * (f.index - expected))
            self._pcm.append(f.pcm)
            expected = f.index + 1
        self._recent.clear()
        self._voiced_recently.clear()
        return SpeechStarted(start_ms=self._start_ms)

    def _check_end(self, frame: AudioFrame) -> UtteranceEnded | None:
        cfg = self._turn_config
        if frame.end_ms - self._speech_end_ms >= cfg.end_silence_ms:
            return self._finish("silence", detected_ms=frame.end_ms)
        if frame.end_ms - self._start_ms >= cfg.max_utterance_ms:
            return self._finish("max_length", detected_ms=frame.end_ms)
        return None

    def _so_far(self, detected_ms: int) -> dict:
        """The fields shared by UtterancePaused and UtteranceEnded, for the utterance as it is now."""
        pcm_start_ms = self._pcm_start_index * FRAME_MS
        keep_until_ms = min(detected_ms, self._speech_end_ms + self._turn_config.tail_ms)
        keep_frames = math.ceil((keep_until_ms - pcm_start_ms) / FRAME_MS)
        return {
            "pcm": b"".join(self._pcm[:keep_frames]), "start_ms": self._start_ms, "speech_end_ms": self._speech_end_ms,
            "detected_ms": detected_ms, "pcm_start_ms": pcm_start_ms,
        }

    def _finish(self, reason: EndReason, detected_ms: int) -> UtteranceEnded:
        event = UtteranceEnded(reason=reason, **self._so_far(detected_ms))
        self._reset_utterance()
        return event

    def _reset_utterance(self) -> None:
        self._speaking = False
        self._paused_at = None
        self._pcm = []
        self._recent.clear()
        self._voiced_recently.clear()
