"""Synthetic speakers for tests, ASR augmentation and benchmarks: espeak-ng and Kokoro-82M.

Every voice is text in, 16 kHz float32 mono out (:class:`Voice`); :class:`PhoneChannel` puts it
through a SIP codec; :class:`CachedVoice` keeps renderings on disk. Knows nothing of SIP or intents::

    from models.voices import PhoneChannel, VoiceLibrary

    voices = VoiceLibrary()                              # Kokoro loads at the first kokoro voice
    dora = voices.voice("kokoro:ef_dora")                # or "kokoro:em_santa@1.1", "espeak:es-419"
    audio = PhoneChannel("pcmu")(dora.synthesize("quiero pagar mi factura"))
"""
from models.voices.base import ENGINES, Voice, VoiceError, VoiceSpec, parse_voice_spec, read_wav, write_wav
from models.voices.cache import CachedVoice
from models.voices.channel import CODECS, Codec, PhoneChannel
from models.voices.espeak import ESPEAK_VOICES, EspeakVoice
from models.voices.kokoro import KokoroConfig, KokoroEngine, KokoroVoice
from models.voices.library import VoiceLibrary, VoicesConfig, default_speech_cache_dir

__all__ = [
    "CODECS", "ENGINES", "ESPEAK_VOICES", "CachedVoice", "Codec", "EspeakVoice", "KokoroConfig", "KokoroEngine",
    "KokoroVoice", "PhoneChannel", "Voice", "VoiceError", "VoiceLibrary", "VoiceSpec", "VoicesConfig",
    "default_speech_cache_dir", "parse_voice_spec", "read_wav", "write_wav",
]
