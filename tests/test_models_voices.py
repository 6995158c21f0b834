"""Synthetic voices (``models.voices``): specs, espeak-ng, Kokoro-82M, the phone channel and the speech cache.

Real parts only: real espeak-ng and sox, the real Kokoro model from its PyPI parts and npm voices,
real libavcodec codecs, and (``asr``) the real Whisper base model listening to Kokoro.
"""
from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import wave

import numpy as np
import pytest

from models.errors import ModelCorruptError, ModelNotFoundError
from models.evaluation import word_error_rate
from models.voices import (
    CachedVoice,
    EspeakVoice,
    KokoroConfig,
    KokoroEngine,
    PhoneChannel,
    Voice,
    VoiceError,
    VoiceLibrary,
    VoicesConfig,
    VoiceSpec,
    parse_voice_spec,
    read_wav,
)
from models.voices.kokoro import KOKORO_MODEL_SHA256, default_voices_tarball, installed_kokoro_source, pack_voices

HAS_ESPEAK = bool(shutil.which("espeak-ng") and shutil.which("sox"))
needs_espeak = pytest.mark.skipif(not HAS_ESPEAK, reason="needs espeak-ng and sox (apt-get install espeak-ng sox)")


@pytest.fixture(scope="module")
def kokoro(tmp_path_factory) -> KokoroEngine:
    """The real Kokoro model, joined from its four PyPI parts into a fresh cache (so the assembly runs)."""
    try:
        return KokoroEngine(KokoroConfig(cache_dir=tmp_path_factory.mktemp("kokoro")))
    except ModelNotFoundError as exc:
        pytest.skip(f"Kokoro not installed (scripts/setup.sh installs it): {exc}")


class CountingVoice(Voice):
    """A real voice that counts how often it is asked to speak (not a stand-in: it speaks)."""

    def __init__(self, voice: Voice) -> None:
        self.inner, self.spec, self.language, self.calls = voice, voice.spec, voice.language, 0

    @property
    def identity(self) -> str:
        return self.inner.identity

    def synthesize(self, text: str) -> np.ndarray:
        self.calls += 1
        return self.inner.synthesize(text)


def tone(*hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return sum(0.2 * np.sin(2 * np.pi * f * t) for f in hz).astype(np.float32)


def band_energy(audio: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / 16000)
    return float(spectrum[(freqs >= lo) & (freqs <= hi)].sum() / spectrum.sum())


# --- specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, spec", [
    ("kokoro:ef_dora", VoiceSpec("kokoro", "ef_dora", 1.0)),
    ("kokoro:em_santa@1.1", VoiceSpec("kokoro", "em_santa", 1.1)),
    (" espeak:es-419 ", VoiceSpec("espeak", "es-419", 1.0)),
    ("espeak:en-us+f3@.8", VoiceSpec("espeak", "en-us+f3", 0.8)),
])
def test_a_spec_names_engine_voice_and_speed(text, spec):
    assert parse_voice_spec(text) == spec
    assert parse_voice_spec(str(spec)) == spec  # str() is the spec again


@pytest.mark.parametrize("text, message", [
    ("ef_dora", "expected ENGINE:VOICE"),
    ("kokoro:", "expected ENGINE:VOICE"),
    ("kokoro:ef dora", "expected ENGINE:VOICE"),
    ("piper:es_MX", "unknown engine 'piper'"),
    ("kokoro:ef_dora@3", "outside 0.5–2"),
    ("kokoro:ef_dora@fast", "expected ENGINE:VOICE"),
])
def test_a_bad_spec_says_what_is_wrong(text, message):
    with pytest.raises(VoiceError, match=message):
        parse_voice_spec(text)


@needs_espeak
def test_an_unknown_espeak_voice_is_refused_with_the_near_ones():
    with pytest.raises(VoiceError, match=r"no voice 'es-999'.*es-419"):
        VoiceLibrary(VoicesConfig(speech_cache=None)).voice("espeak:es-999")


def test_an_unknown_kokoro_voice_is_refused_with_the_voices_of_its_language(kokoro):
    with pytest.raises(VoiceError, match=r"no voice 'ef_nadie'.*ef_dora, em_alex, em_santa"):
        VoiceLibrary(VoicesConfig(speech_cache=None), kokoro=kokoro).voice("kokoro:ef_nadie")
    with pytest.raises(VoiceError, match="no voice 'jf_alpha'"):  # Japanese needs a G2P we do not ship
        kokoro.voice("jf_alpha")


# --- espeak-ng -----------------------------------------------------------------------------


@needs_espeak
def test_espeak_speaks_16k_float_audio_and_reads_a_leading_dash_as_text():
    voice = EspeakVoice("en-us")
    audio = voice.synthesize("-hello there")
    assert (voice.name, voice.language) == ("espeak:en-us", "en")
    assert audio.dtype == np.float32 and 0.5 < len(audio) / 16000 < 5 and np.abs(audio).max() > 0.05
    faster = EspeakVoice.from_spec(parse_voice_spec("espeak:en-us@1.5"))
    assert faster.words_per_minute == 262 and len(faster.synthesize("-hello there")) < len(audio)


# --- Kokoro --------------------------------------------------------------------------------


def test_kokoro_speaks_spanish_at_16k(kokoro):
    voice = kokoro.voice("ef_dora")
    audio = voice.synthesize("Hola, buenos días.")
    assert (voice.name, voice.language) == ("kokoro:ef_dora", "es")
    assert audio.dtype == np.float32 and audio.ndim == 1 and 0.5 < len(audio) / 16000 < 4
    assert 0.05 < np.abs(audio).max() <= 1.0
    assert kokoro.model_path.name == "kokoro-v1.0.int8.onnx"
    assert {"ef_dora", "em_alex", "em_santa", "af_heart", "am_michael", "bf_emma"} <= set(kokoro.voices)


@pytest.mark.asr
@pytest.mark.parametrize("voice, codec, text", [
    ("em_santa", "pcmu", "Hola, quiero pagar mi factura de este mes con la tarjeta."),
    ("af_heart", None, "Hi, I would like to know where my order is."),
])
def test_whisper_hears_what_kokoro_says(kokoro, transcriber, voice, codec, text):
    speaker = kokoro.voice(voice)
    audio = speaker.synthesize(text)
    if codec:
        audio = PhoneChannel(codec)(audio)
    heard = transcriber.transcribe(audio, language=speaker.language).text
    assert word_error_rate([text], [heard]).wer <= 0.25, heard


def test_a_corrupted_model_part_is_refused_with_a_clear_error(tmp_path):
    try:
        installed = installed_kokoro_source()
    except ModelNotFoundError as exc:
        pytest.skip(f"Kokoro's model parts are not installed: {exc}")
    parts = []
    for n, part in enumerate(installed.parts, start=1):
        copy = tmp_path / f"part{n}.bin"
        if n == 3:  # one flipped byte in the middle of one part
            data = bytearray(part.read_bytes())
            data[len(data) // 2] ^= 0xFF
            copy.write_bytes(bytes(data))
        else:
            copy.symlink_to(part)
        parts.append(copy)
    source = type(installed)(parts=tuple(parts), assets_dir=tmp_path, sha256=KOKORO_MODEL_SHA256,
                             assets=(), filename=installed.filename)
    with pytest.raises(ModelCorruptError, match=f"expected {KOKORO_MODEL_SHA256}: a part is damaged"):
        KokoroEngine(KokoroConfig(cache_dir=tmp_path / "cache", model_source=source))
    assert not (tmp_path / "cache" / "kokoro-82m-int8" / installed.filename).exists()  # nothing half-joined left


def test_the_voices_tarball_is_checked_and_packed_once(tmp_path):
    voice = np.arange(510 * 256, dtype="<f4").reshape(510, 1, 256)
    tarball = tmp_path / "kokoro-js.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in {"package/voices/xf_test.bin": voice.tobytes(), "package/README.md": b"readme"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    sha = hashlib.sha256(tarball.read_bytes()).hexdigest()
    packed = pack_voices(tarball, sha, tmp_path / "voices")
    assert np.array_equal(np.load(packed)["xf_test"], voice) and list(np.load(packed)) == ["xf_test"]
    mtime = packed.stat().st_mtime_ns
    assert pack_voices(tarball, sha, tmp_path / "voices").stat().st_mtime_ns == mtime  # not packed again

    with pytest.raises(ModelCorruptError, match="does not match sha256 0000.*run scripts/setup.sh"):
        pack_voices(tarball, "0" * 64, tmp_path / "other")
    with pytest.raises(ModelNotFoundError, match="npm pack kokoro-js@1.2.1"):
        pack_voices(tmp_path / "absent.tgz", sha, tmp_path / "absent")
    assert default_voices_tarball().name == "kokoro-js-1.2.1.tgz"


# --- the phone channel -----------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["pcmu", "pcma"])
def test_g711_is_narrowband_and_lossy_but_keeps_length_and_rate(codec):
    audio = tone(440, 5000)  # speech band + a partial only wideband keeps
    heard = PhoneChannel(codec)(audio)
    assert heard.dtype == np.float32 and len(heard) == len(audio)  # still 16 kHz: same length
    assert not np.array_equal(heard, audio)
    assert band_energy(audio, 4800, 5200) > 0.4 and band_energy(heard, 4800, 5200) < 0.001  # 8 kHz: nothing above 4 kHz
    assert band_energy(heard, 400, 480) > 0.9


def test_g722_is_wideband():
    audio = tone(440, 5000)
    heard = PhoneChannel("g722")(audio)
    assert len(heard) == len(audio) and not np.array_equal(heard, audio)
    assert band_energy(heard, 4800, 5200) > 0.3


def test_mu_law_and_a_law_differ():
    audio = tone(300, 1200) * np.linspace(0.05, 1, 16000, dtype=np.float32)
    assert not np.array_equal(PhoneChannel("pcmu")(audio), PhoneChannel("pcma")(audio))
    with pytest.raises(ValueError, match="unknown codec 'opus'"):
        PhoneChannel("opus")  # type: ignore[arg-type]


# --- the speech cache ------------------------------------------------------------------------


@needs_espeak
def test_a_rendering_is_read_back_from_the_cache(tmp_path):
    counting = CountingVoice(EspeakVoice("es-419"))
    cached = CachedVoice(counting, tmp_path)
    first = cached.synthesize("quiero pagar mi factura")
    second = cached.synthesize("quiero pagar mi factura")
    assert counting.calls == 1 and np.array_equal(first, second)
    path = cached.path_for("quiero pagar mi factura")
    assert path.is_file() and np.array_equal(read_wav(path), second)
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
    cached.synthesize("otra cosa")
    assert counting.calls == 2  # another text, another rendering


def test_speed_voice_and_model_are_part_of_the_key(kokoro, tmp_path):
    normal = CachedVoice(kokoro.voice("em_santa"), tmp_path)
    faster = CachedVoice(kokoro.voice("em_santa", 1.1), tmp_path)
    other = CachedVoice(kokoro.voice("em_alex"), tmp_path)
    keys = {v.path_for("hola") for v in (normal, faster, other)}
    assert len(keys) == 3
    assert KOKORO_MODEL_SHA256 in normal.identity  # another model file, other keys
    audio = faster.synthesize("hola")
    assert faster.path_for("hola").is_file() and not normal.path_for("hola").exists()
    assert np.array_equal(faster.synthesize("hola"), audio)


def test_the_library_caches_what_it_opens(kokoro, tmp_path):
    library = VoiceLibrary(VoicesConfig(speech_cache=tmp_path), kokoro=kokoro)
    voice = library.voice("kokoro:em_santa@1.1")
    assert isinstance(voice, CachedVoice) and voice.name == "kokoro:em_santa@1.1" and voice.language == "es"
