"""ASR augmentation: what Whisper hears on a phone line, as training and evaluation data.

For each example: espeak-ng speaks the text (``es-419`` / ``en-us``), sox squeezes it through
a telephone channel (8 kHz, G.711 µ-law) and back to 16 kHz, and ``transcribe`` (injected:
the CLI passes :class:`models.transcribe.Transcriber`; ``nlu/`` never imports ``models/``)
turns it into text. The transcript becomes a new example with the same intent.

Every transcript is cached in ``cache_dir`` under the sha256 of (text, voice, ASR model
name), so a rerun is instant and gives the same file; delete the cache to re-transcribe.
Needs the ``espeak-ng`` and ``sox`` programs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from .dataset import Example

__all__ = ["VOICES", "AugmentError", "augment", "phone_channel_speech", "subsample", "write_tsv"]

VOICES = {"es": "es-419", "en": "en-us"}
SAMPLE_RATE = 16000
Transcribe = Callable[[np.ndarray, str], str]


class AugmentError(RuntimeError):
    pass


def phone_channel_speech(text: str, voice: str) -> np.ndarray:
    """espeak-ng -> 8 kHz µ-law -> 16 kHz float32 mono in [-1, 1]."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise AugmentError(f"{tool} is not installed (apt-get install {tool})")
    with tempfile.TemporaryDirectory(prefix="puente-augment-") as tmp:
        raw, phone = Path(tmp) / "tts.wav", Path(tmp) / "phone.wav"
        # The text goes on stdin: a text that starts with '-' must not be read as an option.
        _run(["espeak-ng", "-v", voice, "-w", str(raw)], text.encode("utf-8"))
        _run(["sox", str(raw), "-r", "8000", "-c", "1", "-e", "mu-law", "-b", "8", str(phone)])
        pcm = _run(["sox", str(phone), "-t", "raw", "-r", str(SAMPLE_RATE), "-c", "1", "-e", "signed", "-b", "16", "-"])
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def subsample(examples: Sequence[Example], limit: int | None, *, seed: int = 0) -> list[Example]:
    """At most ``limit`` examples per (intent, language), chosen by a seeded hash of the text."""
    if limit is None:
        return list(examples)
    groups: dict[tuple[str, str], list[Example]] = defaultdict(list)
    for e in examples:
        groups[(e.intent, e.language or "?")].append(e)
    out: list[Example] = []
    for key in sorted(groups):
        ranked = sorted(groups[key], key=lambda e: hashlib.sha256(f"{seed}\0{e.text}".encode()).hexdigest())
        out.extend(ranked[:limit])
    return out


def augment(
    examples: Sequence[Example],
    transcribe: Transcribe,
    cache_dir: str | PathLike[str],
    *,
    asr_model: str,
    limit: int | None = None,
    seed: int = 0,
    default_language: str = "es",
    progress: Callable[[str], None] | None = None,
) -> list[Example]:
    """ASR transcripts of ``examples`` (subsampled to ``limit`` per intent and language).

    ``transcribe(audio_16k_float32, language) -> text``. Empty transcripts (Whisper heard
    nothing usable) are left out. Each returned example keeps the intent and language and
    points (``source``, ``line``) at the example it was spoken from.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    chosen = subsample(examples, limit, seed=seed)
    out: list[Example] = []
    fresh = 0
    for n, e in enumerate(chosen, start=1):
        language = e.language if e.language in VOICES else default_language
        voice = VOICES[language]
        key = hashlib.sha256("\0".join((e.text, voice, asr_model)).encode("utf-8")).hexdigest()
        entry = cache / key[:2] / f"{key}.json"
        if entry.is_file():
            transcript = json.loads(entry.read_text(encoding="utf-8"))["transcript"]
        else:
            transcript = str(transcribe(phone_channel_speech(e.text, voice), language)).strip()
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_suffix(".tmp")
            tmp.write_text(json.dumps(
                {"text": e.text, "voice": voice, "asr_model": asr_model, "transcript": transcript},
                ensure_ascii=False,
            ), encoding="utf-8")
            os.replace(tmp, entry)
            fresh += 1
        transcript = " ".join(transcript.split())
        if transcript:
            out.append(Example(transcript, e.intent, language, e.source, e.line))
        if progress and (n % 25 == 0 or n == len(chosen)):
            progress(f"{n}/{len(chosen)} examples ({fresh} transcribed now, {n - fresh} from cache)")
    return out


def write_tsv(examples: Iterable[Example], path: str | PathLike[str]) -> Path:
    """``intent<TAB>text<TAB>language`` lines, readable by :func:`nlu.dataset.load_examples`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{e.intent}\t{' '.join(e.text.split())}\t{e.language or ''}" for e in examples]
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return path


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, check=True, timeout=60)
    except subprocess.CalledProcessError as exc:
        raise AugmentError(f"{cmd[0]} failed: {exc.stderr.decode(errors='replace').strip()}") from exc
    return done.stdout
