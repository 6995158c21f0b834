"""Speech to measure the models on: Debian asterisk-core-sounds, pocketsphinx-testdata,
``../shared/data`` and espeak-ng. Used by the tests and by ``benchmarks/``.

Every source is optional on a developer machine: when one is absent its finder returns
nothing (an empty list, ``None``, a path that is not a file) instead of raising, so a test
can skip with a reason that names the missing package or folder.
"""
from __future__ import annotations

import gzip
import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
JFK_FLAC = SHARED_DATA / "speech" / "misc" / "jfk.flac"
JFK_TEXT = (
    "And so my fellow Americans ask not what your country can do for you, "
    "ask what you can do for your country."
)
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds")
ASTERISK_DOCS = Path("/usr/share/doc")
POCKETSPHINX_LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")

# A prompt's transcript is "[...]" when it is a tone, not speech.
_NOT_SPEECH = re.compile(r"^\s*\[.*\]\s*$")


@dataclass(frozen=True, slots=True)
class Clip:
    """One recording and what is said in it."""

    name: str
    path: Path
    text: str
    language: str


def asterisk_clips(language: str) -> list[Clip]:
    """All top-level Asterisk core prompts in ``language`` ("en"/"es") that have speech.

    Empty when ``asterisk-core-sounds-<lang>-wav`` or its transcripts package is absent.
    """
    transcripts = ASTERISK_DOCS / f"asterisk-core-sounds-{language}" / f"core-sounds-{language}.txt.gz"
    sounds = ASTERISK_SOUNDS / language
    if not transcripts.is_file() or not sounds.is_dir():
        return []
    clips = []
    with gzip.open(transcripts, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ":" not in line:
                continue
            name, text = (part.strip() for part in line.split(":", 1))
            path = sounds / f"{name}.wav"
            if "/" in name or not text or _NOT_SPEECH.match(text) or not path.is_file():
                continue
            clips.append(Clip(name=name, path=path, text=text, language=language))
    return sorted(clips, key=lambda c: c.name)


def select_clips(clips: list[Clip], count: int, *, min_words: int = 3, max_words: int = 25) -> list[Clip]:
    """A deterministic, evenly spread subset: prompts of a sentence or so, every k-th by name."""
    eligible = [c for c in clips if min_words <= len(c.text.split()) <= max_words]
    if len(eligible) <= count:
        return eligible
    step = len(eligible) / count
    return [eligible[int(i * step)] for i in range(count)]


def librivox_clips() -> list[Clip]:
    """The five LibriVox sentences shipped by ``pocketsphinx-testdata`` (16 kHz, English)."""
    transcription = POCKETSPHINX_LIBRIVOX / "transcription"
    if not transcription.is_file():
        return []
    clips = []
    for line in transcription.read_text().splitlines():
        match = re.match(r"<s>(.*)</s>\s*\((.+)\)", line.strip())
        if match and (POCKETSPHINX_LIBRIVOX / f"{match[2]}.wav").is_file():
            clips.append(Clip(match[2], POCKETSPHINX_LIBRIVOX / f"{match[2]}.wav", match[1].strip(), "en"))
    return clips


def espeak(text: str, voice: str, out_dir: Path) -> Path | None:
    """Synthesise ``text`` with espeak-ng into a 16 kHz WAV; ``None`` when espeak-ng or sox is absent."""
    from models.voices import EspeakVoice, write_wav  # lazy: the corpora finders need none of it

    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        return None
    out = out_dir / f"espeak-{voice}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.wav"
    return write_wav(EspeakVoice(voice).synthesize(text), out)
