"""SpeechPipeline bounds the wait for Whisper: an utterance that would wait longer than
``max_wait_s`` behind the others (at the recent time per utterance) is refused at once
(AsrSaturated) instead of queueing, and room frees as utterances finish."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest

from gateway.call.speech import AsrSaturated, SpeechPipeline


class GatedTranscriber:
    """Transcribes nothing until ``release`` is set, like a worker busy on a long utterance."""

    model_name = "gated"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = 0

    def transcribe(self, pcm: bytes, **_: object) -> str:
        self.started += 1
        self.release.wait(10)
        return f"{len(pcm)} bytes"


@contextlib.contextmanager
def pipeline(max_wait_s: float | None) -> Iterator[tuple[SpeechPipeline, GatedTranscriber]]:
    """One worker over a gated transcriber; released and closed however the test ends."""
    transcriber = GatedTranscriber()
    speech = SpeechPipeline(transcriber, classifier=None, workers=1, max_wait_s=max_wait_s)  # type: ignore[arg-type]
    try:
        yield speech, transcriber
    finally:
        transcriber.release.set()
        speech.close()


async def _timed_once(speech: SpeechPipeline, transcriber: GatedTranscriber, seconds: float) -> None:
    """One utterance that takes ``seconds`` on the worker: the pipeline's first timing."""
    task = asyncio.create_task(speech.transcribe(b"warm", ["es"]))
    await asyncio.sleep(seconds)
    transcriber.release.set()
    await task
    transcriber.release.clear()


def test_an_utterance_that_would_wait_too_long_is_refused_at_once_and_room_frees_as_work_finishes() -> None:
    async def go() -> None:
        with pipeline(max_wait_s=0.5) as (speech, transcriber):
            await _timed_once(speech, transcriber, 0.2)  # about 0.2 s per utterance from now on
            running = [asyncio.create_task(speech.transcribe(b"x" * n, ["es"])) for n in (1, 2)]
            await asyncio.sleep(0.05)
            # One on the worker, one waiting: a third would wait for two, about 0.4 s; a fourth, 0.6 s.
            assert speech.backlog == 1
            assert speech.expected_wait_s == pytest.approx(0.4, abs=0.08)
            running.append(asyncio.create_task(speech.transcribe(b"xxx", ["es"])))
            await asyncio.sleep(0.05)
            with pytest.raises(AsrSaturated) as refused:
                await speech.transcribe(b"late", ["es"])
            assert refused.value.waiting == 2
            assert refused.value.expected_wait_s == pytest.approx(0.6, abs=0.12)
            assert str(refused.value).startswith("speech recognition is saturated (2 utterances waiting, about 0.")

            transcriber.release.set()
            assert await asyncio.gather(*running) == ["1 bytes", "2 bytes", "3 bytes"]
            assert (speech.backlog, speech.expected_wait_s) == (0, 0.0)
            assert await speech.transcribe(b"next", ["es"]) == "4 bytes"
            assert transcriber.started == 5  # the refused one never reached Whisper

    asyncio.run(go())


def test_nothing_is_refused_before_the_first_utterance_is_timed() -> None:
    async def go() -> None:
        with pipeline(max_wait_s=0.0) as (speech, transcriber):
            running = [asyncio.create_task(speech.transcribe(b"x", ["es"])) for _ in range(3)]
            await asyncio.sleep(0.05)
            assert speech.backlog == 2 and speech.expected_wait_s == 0.0
            transcriber.release.set()
            assert len(await asyncio.gather(*running)) == 3

    asyncio.run(go())


def test_without_a_bound_every_utterance_waits_its_turn() -> None:
    async def go() -> None:
        with pipeline(max_wait_s=None) as (speech, transcriber):
            await _timed_once(speech, transcriber, 0.1)
            running = [asyncio.create_task(speech.transcribe(b"x", ["es"])) for _ in range(6)]
            await asyncio.sleep(0.05)
            assert speech.backlog == 5 and speech.expected_wait_s > 0.5
            transcriber.release.set()
            assert len(await asyncio.gather(*running)) == 6

    asyncio.run(go())


# --- biasing and the second opinion -----------------------------------------------------------------


class HeardTwice:
    """A transcriber that hears one thing plainly and, asked for alternatives, three hypotheses."""

    model_name = "scripted"

    def __init__(self) -> None:
        self.asked: list[dict] = []

    def transcribe(self, pcm: bytes, **options):
        from models.transcribe import Alternative, Transcript

        self.asked.append(options)
        alternatives = (Alternative("me cobraron de más", -0.2), Alternative("me colaron de más", -0.6),
                        Alternative("", -0.9)) if options["alternatives"] > 1 else ()
        text = alternatives[0].text if alternatives else "me colaron de mas"
        return Transcript(text, "es", 1.0, 0.02, -0.3, 1.0, 0.2, alternatives=alternatives)


class ByWords:
    """A classifier that knows one phrase."""

    version = "by-words"

    def parse(self, text: str):
        from nlu import IntentResult, IntentScore

        sure = "cobraron" in text
        ranking = (IntentScore("billing_dispute", 0.9 if sure else 0.3), IntentScore("complaint", 0.1))
        return IntentResult(text, "billing_dispute", ranking[0].confidence, ranking)


PROMPTS = {"es": "factura, cobro, cargo."}


def test_the_first_pass_is_unbiased_and_the_second_opinion_biased_with_three_hypotheses() -> None:
    async def go() -> None:
        transcriber = HeardTwice()
        speech = SpeechPipeline(transcriber, ByWords(), prompts=PROMPTS, second_opinion=3)  # type: ignore[arg-type]
        try:
            first = await speech.transcribe(b"pcm", ["es"])
            opinion = await speech.second_opinion(b"pcm", ["es"])
        finally:
            speech.close()
        assert first.text == "me colaron de mas"
        assert [(a["prompt"], a["alternatives"], a["language"]) for a in transcriber.asked] == [
            (None, 1, "es"), (PROMPTS, 3, "es")]
        assert opinion is not None
        transcript, result, _ = opinion
        assert len(transcript.alternatives) == 3  # the empty hypothesis is not classified
        assert result.intent == "billing_dispute" and 0.3 < result.confidence < 0.9
        assert result.text == "me cobraron de más"
    asyncio.run(go())


def test_a_biased_first_pass_and_no_second_opinion_when_configured_so() -> None:
    async def go() -> None:
        transcriber = HeardTwice()
        speech = SpeechPipeline(transcriber, ByWords(), prompts=PROMPTS, bias_first_pass=True)  # type: ignore[arg-type]
        try:
            await speech.transcribe(b"pcm", ["es"])
            assert await speech.second_opinion(b"pcm", ["es"]) is None
        finally:
            speech.close()
        assert [a["prompt"] for a in transcriber.asked] == [PROMPTS]
    asyncio.run(go())
