"""The understanding half of a call: transcribe an utterance, then classify its text.

Both run in a worker pool (CTranslate2 and numpy release the GIL), sharing one
Whisper model and one intent model across all calls.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from models import YES_NO, AnswerRecognizer, AnswerResult, Transcriber, Transcript
from nlu import IntentClassifier, IntentResult, combine_readings

T = TypeVar("T")


class AsrSaturated(Exception):
    """Whisper is too far behind: this utterance was not queued (the call decides without it)."""

    def __init__(self, waiting: int, expected_wait_s: float) -> None:
        super().__init__(
            f"speech recognition is saturated ({waiting} utterances waiting, about {expected_wait_s:.1f} s)"
        )
        self.waiting = waiting
        self.expected_wait_s = expected_wait_s


class SpeechPipeline:
    """Transcription and classification for every call, on one shared worker pool.

    ``max_wait_s`` bounds how long a new utterance may expect to wait for a free worker (None:
    unbounded). On CPU, Whisper is the first thing a busy node runs out of; when the utterances
    already waiting would keep a new one longer than that, it raises :class:`AsrSaturated` at
    once rather than joining a queue no caller would sit through. The expected wait is the time
    for the ones ahead, and one more, to finish on ``workers`` workers, at the recent time per
    utterance (a moving average; nothing is refused before the first one is timed).

    ``prompts`` (language → the vocabulary prompt, :func:`models.biasing.biasing_prompt`) bias the
    second opinion toward the deployment's words, and the first transcription too with
    ``bias_first_pass`` (measured to cost WER on other speech, so off by default: README, Benchmarks).
    ``second_opinion`` is how many hypotheses a second opinion asks for (below 2: none is given).
    """

    def __init__(self, transcriber: Transcriber, classifier: IntentClassifier, *, workers: int = 1,
                 max_wait_s: float | None = None, prompts: Mapping[str, str] | None = None,
                 bias_first_pass: bool = False, second_opinion: int = 0) -> None:
        self.transcriber = transcriber
        self.prompts = dict(prompts or {})
        self.bias_first_pass = bias_first_pass
        self.second_opinion_hypotheses = second_opinion
        self.classifier = classifier
        self.answers = AnswerRecognizer(transcriber)  # shares the transcriber's model
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="puente-asr")
        self._workers = workers
        self._max_wait_s = max_wait_s
        self._in_flight = 0  # utterances running or waiting; event-loop thread only
        self._job_s: float | None = None  # moving average of one utterance's time on a worker

    @property
    def backlog(self) -> int:
        """Utterances waiting for a free worker now."""
        return max(0, self._in_flight - self._workers)

    @property
    def expected_wait_s(self) -> float:
        """How long an utterance arriving now would wait for a worker (0 while one is free)."""
        if self._in_flight < self._workers or self._job_s is None:
            return 0.0
        return (self.backlog + 1) * self._job_s / self._workers

    @property
    def asr_model(self) -> str:
        return self.transcriber.model_name

    @property
    def nlu_version(self) -> str:
        return self.classifier.version

    async def transcribe(self, pcm: bytes, languages: Sequence[str]) -> Transcript:
        """The caller's reason (biased with ``prompts`` only with ``bias_first_pass``).

        The utterance goes through the transcriber's own speech gate, a fresh webrtcvad: the call's
        VAD adapts to the line and lets steady noise start an utterance, which Whisper would put into
        words (tests/test_call_flow.py::test_noise_produces_no_transcript_text)."""
        return await self._run(self._transcription(pcm, languages, biased=self.bias_first_pass))

    async def second_opinion(self, pcm: bytes, languages: Sequence[str]) -> tuple[Transcript, IntentResult, float] | None:
        """Decode the utterance again, biased with ``prompts``, with ``second_opinion`` hypotheses, and
        classify them together (:func:`nlu.combine_readings`): for a first reading that was unsure. None when switched off
        or when Whisper heard nothing this time. Returns the transcript, the result and the seconds
        classification took."""
        if self.second_opinion_hypotheses < 2:
            return None
        transcript = await self._run(self._transcription(pcm, languages, biased=True,
                                                         alternatives=self.second_opinion_hypotheses))
        hypotheses = [a for a in transcript.alternatives if a.text]
        if not hypotheses:
            return None
        classified = [await self.classify(a.text) for a in hypotheses]  # (result, seconds) each
        result = combine_readings([(r, a.avg_logprob) for (r, _), a in zip(classified, hypotheses)])
        return transcript, result, sum(seconds for _, seconds in classified)

    def _transcription(self, pcm: bytes, languages: Sequence[str], *, biased: bool,
                       alternatives: int = 1) -> Callable[[], Transcript]:
        """The transcriber's work for the caller's reason: the line's languages, and the prompts if ``biased``."""
        languages = list(languages)
        forced = languages[0] if len(languages) == 1 else None
        prompt = self.prompts if biased and self.prompts else None
        return lambda: self.transcriber.transcribe(
            pcm, language=forced, languages=None if forced else languages, prompt=prompt, alternatives=alternatives)

    async def recognize_yes_no(self, pcm: bytes, language: str) -> AnswerResult:
        """A constrained yes/no recogniser: free transcription is weak on one-word answers."""

        def recognize() -> AnswerResult:
            try:
                return self.answers.recognize(pcm, YES_NO[language], language)
            except ValueError as exc:  # e.g. a whole sentence instead of an answer
                return AnswerResult(None, float("-inf"), 0.0, {}, 0.0, reason=str(exc))

        return await self._run(recognize)

    async def _run(self, work: Callable[[], T]) -> T:
        """Run on the ASR pool, unless the wait for it is over ``max_wait_s`` (AsrSaturated)."""
        wait_s = self.expected_wait_s
        if self._max_wait_s is not None and wait_s > self._max_wait_s:
            raise AsrSaturated(self.backlog, wait_s)
        self._in_flight += 1
        try:
            result, job_s = await asyncio.get_running_loop().run_in_executor(self._executor, _timed, work)
        finally:
            self._in_flight -= 1
        self._job_s = job_s if self._job_s is None else 0.8 * self._job_s + 0.2 * job_s
        return result

    async def classify(self, text: str) -> tuple[IntentResult, float]:
        """The result and the seconds it took. On its own thread, not the ASR pool: the embedded model takes
        milliseconds, but a Rasa backend waits on the network, and neither may stall the event loop."""
        classifier = self.classifier  # the model of this utterance, even if a reload swaps it meanwhile

        def parse() -> tuple[IntentResult, float]:
            started = time.perf_counter()
            return classifier.parse(text), time.perf_counter() - started

        return await asyncio.to_thread(parse)

    def swap_classifier(self, classifier: IntentClassifier) -> IntentClassifier:
        """Serve ``classifier`` from the next utterance on; returns the one it replaces.

        One attribute assignment: an utterance being classified finishes on the old model.
        """
        previous, self.classifier = self.classifier, classifier
        return previous

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _timed(work: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    return work(), time.perf_counter() - started
