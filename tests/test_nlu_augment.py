"""augment(): speakers, caching, reproducibility, the TSV it writes; one real Whisper run (asr).

The speakers are real (espeak-ng on a µ-law line, built from ``models.voices`` as the CLI does);
only the transcriber is a stand-in in the caching tests.
"""

import shutil

import numpy as np
import pytest

from models.voices import EspeakVoice, PhoneChannel
from nlu.augment import AugmentedExample, Speaker, augment, subsample, write_tsv
from nlu.dataset import Example, load_examples

pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("sox")), reason="needs espeak-ng and sox")


def espeak_speaker(voice: str, codec: str = "pcmu") -> Speaker:
    spoken, line = EspeakVoice(voice), PhoneChannel(codec)
    return Speaker(f"espeak:{voice} {codec}", spoken.language, lambda text: line(spoken.synthesize(text)), voice)


@pytest.fixture(scope="module")
def speakers():
    return [espeak_speaker("en-us"), espeak_speaker("es-419")]

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
        word = ("alpha", "bravo", "charlie", "delta", "echo")[len(self.calls) - 1]
        return f"{language} {word} {len(audio) / 16000:.1f} seconds"


def test_transcripts_are_cached_and_reproducible(tmp_path, speakers):
    first = CountingTranscriber()
    out = augment(EXAMPLES, first, tmp_path / "cache", speakers=speakers, asr_model="fake")
    assert first.calls == ["en", "en", "es"]
    assert [(e.intent, e.language, e.source, e.line) for e in out] == [
        (e.intent, e.language, e.source, e.line) for e in EXAMPLES]
    assert [e.text.split()[:2] for e in out] == [["en", "alpha"], ["en", "bravo"], ["es", "charlie"]]

    again = CountingTranscriber()
    assert augment(EXAMPLES, again, tmp_path / "cache", speakers=speakers, asr_model="fake") == out
    assert again.calls == []  # all from the cache

    other = CountingTranscriber()
    augment(EXAMPLES[:1], other, tmp_path / "cache", speakers=speakers, asr_model="another-model")
    assert other.calls == ["en"]  # the ASR model is part of the cache key

    alaw = CountingTranscriber()
    augment(EXAMPLES[:1], alaw, tmp_path / "cache", speakers=[espeak_speaker("en-us", "pcma")], asr_model="fake")
    assert alaw.calls == []  # the same cache key, so the same transcript...
    keyed = CountingTranscriber()
    augment(EXAMPLES[:1], keyed, tmp_path / "cache", asr_model="fake",
            speakers=[Speaker("espeak:en-us pcma", "en", speakers[0].speak, "espeak:en-us|pcma")])
    assert keyed.calls == ["en"]  # ...unless the key names the line (the CLI's key does)

    tsv = write_tsv(out, tmp_path / "asr.tsv")
    assert [(e.intent, e.text, e.language) for e in load_examples([tsv])] == [(e.intent, e.text, e.language) for e in out]


def test_every_speaker_says_the_examples_of_its_language_and_is_recorded(tmp_path, speakers):
    two_english = [speakers[0], espeak_speaker("en-us+f3"), speakers[1]]
    out = augment(EXAMPLES, CountingTranscriber(), tmp_path, speakers=two_english, asr_model="fake")
    assert [(e.speaker, e.intent) for e in out] == [
        ("espeak:en-us pcmu", "order_status"), ("espeak:en-us pcmu", "payment"),
        ("espeak:en-us+f3 pcmu", "order_status"), ("espeak:en-us+f3 pcmu", "payment"),
        ("espeak:es-419 pcmu", "payment")]
    assert all(isinstance(e, AugmentedExample) and isinstance(e, Example) for e in out)
    tsv = write_tsv(out, tmp_path / "asr.tsv").read_text().splitlines()
    assert [line for line in tsv if line.startswith("#")] == [
        "# speaker: espeak:en-us pcmu", "# speaker: espeak:en-us+f3 pcmu", "# speaker: espeak:es-419 pcmu"]
    assert len(load_examples([tmp_path / "asr.tsv"])) == 5  # the dataset reader skips the speaker lines

    skipped = []
    assert len(augment(EXAMPLES, CountingTranscriber(), tmp_path / "b", speakers=speakers[:1], asr_model="fake",
                       progress=skipped.append)) == 2
    assert "no voice for 1 example(s) in ['es']: skipped" in skipped[0]


def test_empty_transcripts_are_left_out(tmp_path, speakers):
    assert augment(EXAMPLES[:1], lambda audio, lang: "  ", tmp_path, speakers=speakers, asr_model="silent") == []


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
    out = augment(EXAMPLES[:2], lambda audio, lang: transcriber.transcribe(audio).text, tmp_path,
                  speakers=[espeak_speaker("en-us")], asr_model="tiny.en")
    assert len(out) == 2
    assert "order" in out[0].text.lower() and "bill" in out[1].text.lower()
