"""Neural speech on real SIP calls: ``puente call --say TEXT --voice kokoro:…`` (gateway/dev/caller.py)."""
from __future__ import annotations

import wave

import pytest

from gateway.cli.main import main
from gateway.dev.caller import synthesize
from models.errors import ModelNotFoundError
from models.voices import KokoroConfig, VoiceLibrary, VoicesConfig
from models.voices.kokoro import default_voices_tarball


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> VoiceLibrary:
    library = VoiceLibrary(VoicesConfig(kokoro=KokoroConfig(cache_dir=tmp_path_factory.mktemp("kokoro")), speech_cache=None))
    try:
        library.kokoro
    except ModelNotFoundError as exc:
        pytest.skip(f"Kokoro not installed (scripts/setup.sh installs it): {exc}")
    return library


def test_the_test_caller_speaks_with_a_kokoro_voice(library, tmp_path):
    wav = synthesize("Hola, quiero pagar mi factura.", "es", tmp_path / "say.wav", library.voice("kokoro:ef_dora"))
    with wave.open(str(wav)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2) and w.getnframes() > 16000


def test_a_bad_voice_stops_puente_call_before_dialling(capfd):  # capfd: main() enables faulthandler on the real stderr
    assert main(["call", "sip:es@127.0.0.1:9", "--say", "hola", "--voice", "kokoro"]) == 2
    assert "expected ENGINE:VOICE" in capfd.readouterr().err


@pytest.mark.sip
@pytest.mark.asr
def test_a_real_call_carries_kokoro_speech_to_the_gateway(gateway, library):
    if not default_voices_tarball().is_file():  # puente call opens its voices from the default cache
        pytest.skip(f"{default_voices_tarball()} absent (scripts/setup.sh fetches it)")
    record = gateway.call("es", "--say", "Hola, me robaron la tarjeta y necesito bloquearla.", "--voice", "kokoro:em_santa",
                          "--dtmf", "1")
    assert record["_exit"] == 0, record
    heard = record["transcript"] or ""
    assert all(word in heard.lower() for word in ("robaron", "tarjeta", "bloquear")), record["record"]
    assert record["language"] == "es" and record["intent"] == "fraud_or_loss", record["record"]
