"""The understanding half of a call: transcribe an utterance, then classify its text.

Both run in a worker pool (CTranslate2 and numpy release the GIL), sharing one
Whisper model and one intent model across all calls.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from models import YES_NO, AnswerRecognizer, AnswerResult, Transcriber, Transcript
from nlu import IntentClassifier, IntentResult


class SpeechPipeline:
    def __init__(self, transcriber: Transcriber, classifier: IntentClassifier, *, workers: int = 1) -> None:
        self.transcriber = transcriber
        self.classifier = classifier
        self.answers = AnswerRecognizer(transcriber)  # shares the transcriber's model
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="puente-asr")

    @property
    def asr_model(self) -> str:
        return self.transcriber.model_name

    @property
    def nlu_version(self) -> str:
        return self.classifier.version

    async def transcribe(self, pcm: bytes, languages: Sequence[str]) -> Transcript:
        """The utterance goes through the transcriber's own speech gate, a fresh webrtcvad: the call's
        VAD adapts to the line and lets steady noise start an utterance, which Whisper would put into
        words (tests/test_call_flow.py::test_noise_produces_no_transcript_text)."""
        languages = list(languages)
        forced = languages[0] if len(languages) == 1 else None
        return await asyncio.get_running_loop().run_in_executor(
            self._executor,
            lambda: self.transcriber.transcribe(pcm, language=forced, languages=None if forced else languages),
        )

    async def recognize_yes_no(self, pcm: bytes, language: str) -> AnswerResult:
        """A constrained yes/no recogniser: free transcription is weak on one-word answers."""

        def recognize() -> AnswerResult:
            try:
                return self.answers.recognize(pcm, YES_NO[language], language)
            except ValueError as exc:  # e.g. a whole sentence instead of an answer
                return AnswerResult(None, float("-inf"), 0.0, {}, 0.0, reason=str(exc))

        return await asyncio.get_running_loop().run_in_executor(self._executor, recognize)

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
