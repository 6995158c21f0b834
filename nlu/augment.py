"""ASR augmentation: what Whisper hears on a phone line, as training and evaluation data.

For each example, each :class:`Speaker` of its language speaks the text through a phone channel
(``speak``, injected: the CLI builds speakers from ``models.voices`` — espeak-ng or Kokoro, then
G.711 µ-law/A-law — since ``nlu/`` never imports ``models/``), and ``transcribe`` (injected too:
:class:`models.transcribe.Transcriber`) turns the audio into text. The transcript becomes a new
example with the same intent, tagged with the speaker that said it.

Every transcript is cached in ``cache_dir`` under the sha256 of (text, speaker's ``cache_key``,
ASR model name), so a rerun is instant and gives the same file; delete the cache to re-transcribe.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from .dataset import Example

__all__ = ["AugmentError", "AugmentedExample", "Speaker", "augment", "subsample", "write_tsv"]

Transcribe = Callable[[np.ndarray, str], str]


class AugmentError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Speaker:
    """One voice on one phone line, as augmentation sees it.

    Attributes:
      name: what the output says made a row, e.g. ``"kokoro:ef_dora pcmu"``.
      language: the examples it speaks (``"es"``, ``"en"``).
      speak: text → what Whisper hears (16 kHz float32 mono, the phone line already applied).
        Raise :class:`AugmentError` when the text cannot be spoken.
      cache_key: what identifies its audio in the transcript cache (engine, voice, speed, model
        hash, codec); ``name`` when empty. espeak-ng es-419/en-us on µ-law keep the keys they had
        before voices could be chosen ("es-419", "en-us"), so older caches still answer.
    """

    name: str
    language: str
    speak: Callable[[str], np.ndarray]
    cache_key: str = ""


@dataclass(frozen=True, slots=True)
class AugmentedExample(Example):
    """A transcript as an example (``source``/``line`` point at the text it was spoken from), and who spoke it."""

    speaker: str = ""


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
    speakers: Sequence[Speaker],
    asr_model: str,
    limit: int | None = None,
    seed: int = 0,
    default_language: str = "es",
    progress: Callable[[str], None] | None = None,
) -> list[AugmentedExample]:
    """ASR transcripts of ``examples`` (subsampled to ``limit`` per intent and language), once per
    speaker of the example's language (unlabelled examples count as ``default_language``).

    ``transcribe(audio_16k_float32, language) -> text``. Empty transcripts (Whisper heard
    nothing usable) are left out. The result runs speaker by speaker, in the order given.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    chosen = subsample(examples, limit, seed=seed)
    spoken = {s.language for s in speakers}
    unspoken = sum(1 for e in chosen if (e.language or default_language) not in spoken)
    if unspoken and progress:
        progress(f"no voice for {unspoken} example(s) in {sorted({e.language or default_language for e in chosen} - spoken)}: skipped")
    work = [(s, e) for s in speakers for e in chosen if (e.language or default_language) == s.language]
    out: list[AugmentedExample] = []
    fresh = 0
    for n, (speaker, e) in enumerate(work, start=1):
        key = hashlib.sha256("\0".join((e.text, speaker.cache_key or speaker.name, asr_model)).encode("utf-8")).hexdigest()
        entry = cache / key[:2] / f"{key}.json"
        if entry.is_file():
            transcript = json.loads(entry.read_text(encoding="utf-8"))["transcript"]
        else:
            transcript = str(transcribe(speaker.speak(e.text), speaker.language)).strip()
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_suffix(".tmp")
            tmp.write_text(json.dumps(
                {"text": e.text, "voice": speaker.name, "asr_model": asr_model, "transcript": transcript},
                ensure_ascii=False,
            ), encoding="utf-8")
            os.replace(tmp, entry)
            fresh += 1
        transcript = " ".join(transcript.split())
        if transcript:
            out.append(AugmentedExample(transcript, e.intent, speaker.language, e.source, e.line, speaker.name))
        if progress and (n % 25 == 0 or n == len(work)):
            progress(f"{n}/{len(work)} spoken ({fresh} transcribed now, {n - fresh} from cache)")
    return out


def write_tsv(examples: Iterable[Example], path: str | PathLike[str]) -> Path:
    """``intent<TAB>text<TAB>language`` lines, readable by :func:`nlu.dataset.load_examples`.

    Rows of :class:`AugmentedExample` are headed by a ``# speaker: NAME`` comment line wherever the
    speaker changes: the dataset reader skips comments, a person reading the file sees who spoke.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines, speaker = [], ""
    for e in examples:
        if getattr(e, "speaker", "") and e.speaker != speaker:
            speaker = e.speaker
            lines.append(f"# speaker: {speaker}")
        lines.append(f"{e.intent}\t{' '.join(e.text.split())}\t{e.language or ''}")
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return path
