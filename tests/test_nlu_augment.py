"""augment(): phone-channel speech, caching, reproducibility; one real Whisper run (asr)."""

import shutil

import numpy as np
import pytest

from nlu.augment import augment, phone_channel_speech, subsample, write_tsv
from nlu.dataset import Example, load_examples

pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")), reason="needs espeak-ng and sox")

EXAMPLES = [
    Example("where is my order", "order_status", "en", "en.yml", 3),
    Example("i want to pay my bill", "payment", "en", "en.yml", 9),
    Example("quiero pagar mi factura", "payment", "es", "es.yml", 4),
]


class CountingTranscriber:
    """Not ASR: a deterministic stand-in that describes the audio it got, to test caching."""

    def __init__(self):
        self.calls = []

    def __call__(self, audio: np.ndarray, language: str) -> str:
        self.calls.append(language)
        assert audio.dtype == np.float32 and audio.ndim == 1 and np.abs(audio).max() <= 1.0
        word = ("alpha", "bravo", "charlie", "delta")[len(self.calls) - 1]
        return f"{language} {word} {len(audio) / 16000:.1f} seconds"


def test_phone_channel_speech_is_16k_float_audio():
    audio = phone_channel_speech("-hello there", "en-us")  # a leading dash is text, not an option
    assert audio.dtype == np.float32 and 0.5 < len(audio) / 16000 < 5 and np.abs(audio).max() > 0.05


def test_transcripts_are_cached_and_reproducible(tmp_path):
    first = CountingTranscriber()
    out = augment(EXAMPLES, first, tmp_path / "cache", asr_model="fake")
    assert first.calls == ["en", "en", "es"]
    assert [(e.intent, e.language, e.source, e.line) for e in out] == [
        (e.intent, e.language, e.source, e.line) for e in EXAMPLES]
    assert [e.text.split()[:2] for e in out] == [["en", "alpha"], ["en", "bravo"], ["es", "charlie"]]

    again = CountingTranscriber()
    assert augment(EXAMPLES, again, tmp_path / "cache", asr_model="fake") == out
    assert again.calls == []  # all from the cache

    other = CountingTranscriber()
    augment(EXAMPLES[:1], other, tmp_path / "cache", asr_model="another-model")
    assert other.calls == ["en"]  # the ASR model is part of the cache key

    tsv = write_tsv(out, tmp_path / "asr.tsv")
    assert [(e.intent, e.text, e.language) for e in load_examples([tsv])] == [(e.intent, e.text, e.language) for e in out]


def test_empty_transcripts_are_left_out(tmp_path):
    assert augment(EXAMPLES[:1], lambda audio, lang: "  ", tmp_path, asr_model="silent") == []


def test_subsample_limits_per_intent_and_language_deterministically():
    many = [Example(f"text {i}", "payment" if i % 2 else "order_status", "es" if i % 3 else "en", "f", i) for i in range(60)]
    picked = subsample(many, 4, seed=1)
    counts = {}
    for e in picked:
        counts[(e.intent, e.language)] = counts.get((e.intent, e.language), 0) + 1
    assert set(counts.values()) == {4} and len(counts) == 4
    assert subsample(list(reversed(many)), 4, seed=1) == picked
    assert subsample(many, None) == many


@pytest.mark.asr
def test_real_whisper_tiny_en_hears_the_phone_channel_speech(tmp_path):
    from models.transcribe import Transcriber, TranscriberConfig  # test wiring only; nlu/ never imports models/

    try:
        transcriber = Transcriber(TranscriberConfig(model="tiny.en"))
    except Exception as exc:  # model package not installed here
        pytest.skip(f"Whisper tiny.en unavailable: {exc}")
    out = augment(EXAMPLES[:2], lambda audio, lang: transcriber.transcribe(audio).text, tmp_path, asr_model="tiny.en")
    assert len(out) == 2
    assert "order" in out[0].text.lower() and "bill" in out[1].text.lower()
