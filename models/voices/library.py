"""Voices by name: ``VoiceLibrary().voice("kokoro:ef_dora@1.1")``.

The library is what a tool holds (``puente call``, ``puente nlu augment``, a test session): it loads
the Kokoro model once, at the first Kokoro voice asked for, so an espeak-only run never pays for it.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from models.voices.base import Voice, VoiceSpec, parse_voice_spec
from models.voices.cache import CachedVoice
from models.voices.espeak import EspeakVoice
from models.voices.kokoro import KokoroConfig, KokoroEngine


def default_speech_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/puente/speech`` (``~/.cache/puente/speech``): rendered speech, by voice and text."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "puente" / "speech"


@dataclass(frozen=True, slots=True)
class VoicesConfig:
    """Attributes:
      kokoro: where Kokoro's model and voices are, and its threads.
      speech_cache: where renderings are kept (``models.voices.cache``); ``None`` renders every time.
    """

    kokoro: KokoroConfig = field(default_factory=KokoroConfig)
    speech_cache: Path | None = field(default_factory=default_speech_cache_dir)


class VoiceLibrary:
    def __init__(self, config: VoicesConfig | None = None, *, kokoro: KokoroEngine | None = None) -> None:
        self.config = config or VoicesConfig()
        self._kokoro = kokoro
        self._lock = threading.Lock()

    @property
    def kokoro(self) -> KokoroEngine:
        """The one Kokoro engine of this library, loaded on first use (``ModelNotFoundError`` if not installed)."""
        with self._lock:
            if self._kokoro is None:
                self._kokoro = KokoroEngine(self.config.kokoro)
            return self._kokoro

    def voice(self, spec: str | VoiceSpec) -> Voice:
        """The voice ``spec`` names; ``VoiceError`` for a bad spec or a voice its engine lacks."""
        spec = parse_voice_spec(spec) if isinstance(spec, str) else spec
        voice: Voice = EspeakVoice.from_spec(spec) if spec.engine == "espeak" else self.kokoro.voice(spec.voice, spec.speed)
        return CachedVoice(voice, self.config.speech_cache) if self.config.speech_cache is not None else voice
