"""What a waiting caller hears between the hold music: their place in the queue and the expected wait.

The words change with every caller, so they are spoken at the moment — by espeak-ng, the engine of
the bundled prompts, unless the gateway hands the announcer other voices — into a small cache of
16 kHz WAVs keyed by voice and text: "you are next" is rendered once per language, not once per caller.
"""
from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from models.voices import ESPEAK_VOICES, EspeakVoice, Voice, VoiceError, write_wav

#: The speaking rate of the bundled prompts (scripts/render_prompts.sh renders them with ``speak``) and of the announcements.
PROMPT_WORDS_PER_MINUTE = 165
Announce = Literal["position", "wait", "both"]


class AnnouncementError(Exception):
    """No voice for the language, or the voice failed; the caller simply keeps hearing the hold music."""


def announcement_text(language: str, *, position: int | None, wait_s: float | None, announce: Announce) -> str | None:
    """The words for a caller ``position`` callers from the front (0: next) expecting ``wait_s``; None when
    there is nothing worth saying (no position, no finite estimate)."""
    es = language.split("_")[0] == "es"
    parts = []
    if announce in ("position", "both") and position is not None:
        if position == 0:
            parts.append("Eres la siguiente persona en ser atendida." if es else "You are next in line.")
        elif position == 1:
            parts.append("Hay una persona antes que tú." if es else "There is one caller ahead of you.")
        else:
            parts.append(f"Hay {position} personas antes que tú." if es else f"There are {position} callers ahead of you.")
    if announce in ("wait", "both") and wait_s is not None and math.isfinite(wait_s) and wait_s > 0:
        minutes = max(1, math.ceil(wait_s / 60))
        if minutes > 60:
            parts.append("Tu espera estimada es de más de una hora." if es else "Your estimated wait is over an hour.")
        elif minutes == 1:
            parts.append("Tu espera estimada es de un minuto." if es else "Your estimated wait is about one minute.")
        else:
            parts.append(f"Tu espera estimada es de unos {minutes} minutos." if es else f"Your estimated wait is about {minutes} minutes.")
    return " ".join(parts) or None


def speak(text: str, language: str, out: Path, *, words_per_minute: int | None = None) -> Path:
    """``text`` spoken by espeak-ng in ``language`` into ``out``, a 16 kHz mono 16-bit WAV (written whole,
    under a temporary name first, so a concurrent reader never sees half of one)."""
    return _speak_with(_espeak_voice(language, words_per_minute), text, out)


def _espeak_voice(language: str, words_per_minute: int | None) -> Voice:
    voice = ESPEAK_VOICES.get(language.split("_")[0])
    if voice is None:
        raise AnnouncementError(f"no voice for language {language!r}")
    try:
        return EspeakVoice(voice, words_per_minute=words_per_minute)
    except VoiceError as exc:
        raise AnnouncementError(str(exc)) from exc


def _speak_with(voice: Voice, text: str, out: Path) -> Path:
    try:
        return write_wav(voice.synthesize(text), out)
    except (OSError, VoiceError) as exc:
        raise AnnouncementError(f"cannot speak {text!r}: {exc}") from exc


class Announcer:
    """Renders announcements into ``directory`` (a temporary one by default); blocking: call it off the event loop.

    ``voices``: the voice for each language (``"es"``, ``"en"``); espeak-ng at the prompts' rate by default.
    """

    def __init__(self, directory: Path | None = None, *, voices: Mapping[str, Voice] | None = None) -> None:
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="puente-announcements-")
        self.directory = Path(directory or self._tmp.name)
        self._voices = dict(voices) if voices is not None else None

    def voice_for(self, language: str) -> Voice:
        language = language.split("_")[0]
        if self._voices is None and language in ESPEAK_VOICES:  # made once, at the first announcement
            self._voices = {lang: _espeak_voice(lang, PROMPT_WORDS_PER_MINUTE) for lang in ESPEAK_VOICES}
        if not self._voices or language not in self._voices:
            raise AnnouncementError(f"no voice for language {language!r}")
        return self._voices[language]

    def render(self, language: str, text: str) -> Path:
        voice = self.voice_for(language)
        key = hashlib.sha256("\0".join((voice.identity, text)).encode()).hexdigest()[:16]
        out = self.directory / language.split("_")[0] / f"{key}.wav"
        if out.is_file():
            return out
        return _speak_with(voice, text, out)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
