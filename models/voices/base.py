"""What every synthetic voice is: a name, a language, and text in, 16 kHz float32 mono out.

A voice is named by a spec string, ``ENGINE:VOICE[@SPEED]``::

    espeak:es-419          espeak-ng's Latin-American Spanish (the robotic worst case)
    kokoro:ef_dora         Kokoro-82M's Spanish female voice
    kokoro:em_santa@1.1    the same model, another voice, 10 % faster

:func:`parse_voice_spec` checks the syntax only; whether the voice exists is checked by the engine
that opens it (``VoiceLibrary.voice``), which knows its voices and names them in the error.
"""
from __future__ import annotations

import re
import wave
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from models.audio import SAMPLE_RATE, float32_to_pcm16, pcm16_to_float32
from models.errors import ModelError

Engine = Literal["espeak", "kokoro"]
ENGINES: tuple[Engine, ...] = ("espeak", "kokoro")
#: The speeds both engines accept (kokoro-onnx refuses anything outside it).
MIN_SPEED, MAX_SPEED = 0.5, 2.0

_SPEC_RE = re.compile(r"^(?P<engine>[a-z]+):(?P<voice>[A-Za-z0-9_+\-]+)(?:@(?P<speed>[0-9]*\.?[0-9]+))?$")


class VoiceError(ModelError):
    """A voice spec that does not parse, a voice its engine does not have, or a synthesis that failed."""


@dataclass(frozen=True, slots=True)
class VoiceSpec:
    """One voice, as named on a command line: ``kokoro:em_santa@1.1``."""

    engine: Engine
    voice: str
    speed: float = 1.0

    def __str__(self) -> str:
        return f"{self.engine}:{self.voice}" + ("" if self.speed == 1.0 else f"@{self.speed:g}")


def parse_voice_spec(text: str) -> VoiceSpec:
    """``"kokoro:ef_dora@1.1"`` → ``VoiceSpec("kokoro", "ef_dora", 1.1)``; :class:`VoiceError` says what is wrong."""
    match = _SPEC_RE.match(text.strip())
    if match is None:
        raise VoiceError(f"bad voice {text!r}: expected ENGINE:VOICE[@SPEED], e.g. kokoro:ef_dora or espeak:es-419@1.2")
    engine = match["engine"]
    if engine not in ENGINES:
        raise VoiceError(f"bad voice {text!r}: unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    speed = float(match["speed"]) if match["speed"] else 1.0
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise VoiceError(f"bad voice {text!r}: speed {speed:g} is outside {MIN_SPEED:g}–{MAX_SPEED:g}")
    return VoiceSpec(engine, match["voice"], speed)  # type: ignore[arg-type]  # checked against ENGINES


class Voice(ABC):
    """A synthetic speaker. Blocking and CPU-bound: call it off the event loop."""

    #: What ``str(spec)`` names on the command line and in the rows a voice produced.
    spec: VoiceSpec
    #: ISO 639-1 (``"es"``, ``"en"``): what Whisper is told and what the NLU data is labelled with.
    language: str

    @property
    def name(self) -> str:
        return str(self.spec)

    @property
    @abstractmethod
    def identity(self) -> str:
        """Everything that changes the audio for a given text (engine, voice, speed, model version):
        the rendered-speech cache is keyed by it, so it must change whenever the audio would."""

    @abstractmethod
    def synthesize(self, text: str) -> np.ndarray:
        """``text`` spoken: float32 mono at 16 kHz (:data:`models.audio.SAMPLE_RATE`), in [-1, 1]."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ({self.language})>"


def write_wav(audio: np.ndarray, out: Path) -> Path:
    """16 kHz mono 16-bit WAV, written whole under a temporary name first (a concurrent reader never
    sees half of one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part.wav")
    with wave.open(str(partial), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(float32_to_pcm16(audio))
    return partial.replace(out)


def read_wav(path: Path) -> np.ndarray:
    """What :func:`write_wav` wrote, back as float32 (no resampling: use ``models.load_audio`` for other files)."""
    with wave.open(str(path), "rb") as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            raise VoiceError(f"{path} is not a 16 kHz mono 16-bit WAV")
        return pcm16_to_float32(wav.readframes(wav.getnframes()))
