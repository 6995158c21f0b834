"""espeak-ng: the formant synthesiser of the bundled prompts, and the robotic worst case for tests.

The one espeak-ng + sox pipeline of the project: the announcements, the test caller, the prompt
renderer and ``puente nlu augment`` all speak through :class:`EspeakVoice`.
Needs the ``espeak-ng`` and ``sox`` programs (Debian packages of the same names).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import cached_property
from pathlib import Path

import numpy as np

from models.audio import SAMPLE_RATE, pcm16_to_float32
from models.voices.base import Voice, VoiceError, VoiceSpec

#: The espeak-ng voice for each language Puente speaks: the voices the bundled prompts were rendered with.
ESPEAK_VOICES = {"es": "es-419", "en": "en-us"}
#: espeak-ng's own rate; a spec's speed scales it (``espeak:es-419@1.2`` is 210 words per minute).
DEFAULT_WORDS_PER_MINUTE = 175


class EspeakVoice(Voice):
    """An espeak-ng voice (``es-419``, ``en-us``, ``en-us+f3`` …) resampled by sox to 16 kHz."""

    def __init__(self, voice: str, *, words_per_minute: int | None = None) -> None:
        for tool in ("espeak-ng", "sox"):
            if shutil.which(tool) is None:
                raise VoiceError(f"{tool} is not installed (apt-get install {tool})")
        known = _installed_voices()
        if voice.split("+")[0] not in known:
            near = sorted(v for v in known if v.split("-")[0] == voice.split("-")[0])
            raise VoiceError(f"espeak-ng has no voice {voice!r}" + (f" (did you mean {', '.join(near)}?)" if near else ""))
        self.voice = voice
        self.words_per_minute = words_per_minute
        speed = 1.0 if words_per_minute is None else words_per_minute / DEFAULT_WORDS_PER_MINUTE
        self.spec = VoiceSpec("espeak", voice, speed)
        self.language = voice.split("+")[0].split("-")[0].lower()

    @classmethod
    def from_spec(cls, spec: VoiceSpec) -> EspeakVoice:
        return cls(spec.voice, words_per_minute=None if spec.speed == 1.0 else round(DEFAULT_WORDS_PER_MINUTE * spec.speed))

    @cached_property
    def identity(self) -> str:
        # The version is part of it: another espeak-ng release pronounces differently.
        version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=False).stdout.strip()
        return "\0".join(("espeak", self.voice, str(self.words_per_minute or DEFAULT_WORDS_PER_MINUTE), version))

    def synthesize(self, text: str) -> np.ndarray:
        rate = ["-s", str(self.words_per_minute)] if self.words_per_minute else []
        with tempfile.TemporaryDirectory(prefix="puente-espeak-") as tmp:
            raw = Path(tmp) / "espeak.wav"
            # The text goes on stdin: a text that starts with '-' must not be read as an option.
            _run(["espeak-ng", "-v", self.voice, *rate, "-w", str(raw)], text.encode("utf-8"))
            pcm = _run(["sox", str(raw), "-t", "raw", "-r", str(SAMPLE_RATE), "-c", "1", "-e", "signed", "-b", "16", "-"])
        return pcm16_to_float32(pcm)


def _installed_voices() -> set[str]:
    """The language names and voice files espeak-ng answers to (``es-419``, ``en-us``, ``roa/es-419`` …)."""
    listing = _run(["espeak-ng", "--voices"]).decode("utf-8", errors="replace").splitlines()[1:]
    names = set()
    for line in listing:
        columns = line.split()
        if len(columns) >= 5:
            names.update((columns[1], columns[4], columns[4].rsplit("/", 1)[-1].lower()))
    return names


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, check=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        raise VoiceError(f"{cmd[0]} failed: {exc.stderr.decode(errors='replace').strip()}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VoiceError(f"{cmd[0]} failed: {exc}") from exc
    return done.stdout
