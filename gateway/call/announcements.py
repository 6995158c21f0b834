"""What a waiting caller hears between the hold music: their place in the queue and the expected wait.

The words change with every caller, so they are spoken with espeak-ng (the engine of the bundled
prompts, installed by setup) at the moment, into a small cache of 16 kHz WAVs keyed by their text:
"you are next" is rendered once per language, not once per caller.
"""
from __future__ import annotations

import hashlib
import math
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

#: espeak-ng voices per language, as the bundled prompts were rendered.
VOICES = {"es": "es-419", "en": "en-us"}
#: The speaking rate of the bundled prompts (scripts/render_prompts.sh renders them with ``speak``) and of the announcements.
PROMPT_WORDS_PER_MINUTE = 165
Announce = Literal["position", "wait", "both"]


class AnnouncementError(Exception):
    """espeak-ng or sox failed; the caller simply keeps hearing the hold music."""


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
    voice = VOICES.get(language.split("_")[0])
    if voice is None:
        raise AnnouncementError(f"no voice for language {language!r}")
    rate = ["-s", str(words_per_minute)] if words_per_minute else []
    partial = out.with_name(out.name + ".part.wav")
    with tempfile.NamedTemporaryFile(suffix=".wav", dir=out.parent) as raw:
        try:
            subprocess.run(["espeak-ng", "-v", voice, *rate, "-w", raw.name, text], check=True, capture_output=True, timeout=10)
            subprocess.run(["sox", raw.name, "-r", "16000", "-c", "1", "-b", "16", str(partial)],
                           check=True, capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            raise AnnouncementError(f"cannot speak {text!r}: {exc}") from exc
    return partial.replace(out)


class Announcer:
    """Renders announcements into ``directory`` (a temporary one by default); blocking: call it off the event loop."""

    def __init__(self, directory: Path | None = None) -> None:
        self._tmp = None if directory else tempfile.TemporaryDirectory(prefix="puente-announcements-")
        self.directory = Path(directory or self._tmp.name)

    def render(self, language: str, text: str) -> Path:
        if language.split("_")[0] not in VOICES:
            raise AnnouncementError(f"no voice for language {language!r}")
        out = self.directory / language.split("_")[0] / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.wav"
        if out.is_file():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        return speak(text, language, out, words_per_minute=PROMPT_WORDS_PER_MINUTE)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
