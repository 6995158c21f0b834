"""Short-answer benchmark: constrained recogniser (models.answers) vs free transcription.

    .venv/bin/python -m benchmarks.answers [--fsdd 300] [--cache-dir DIR] [--dump FILE]

Sets (what is real and what is synthetic is said in the table):

* ``fsdd``: Free Spoken Digit Dataset (``../shared/data/speech/fsdd``), real English
  recordings of one digit, 8 kHz; grammar ``DIGITS["en"]``. The headline number.
* ``ast-digits-en`` / ``ast-digits-es``: Debian asterisk-core-sounds ``digits/0..9.wav``,
  real recordings of one professional voice each; ``DIGITS["en"|"es"]``.
* ``ast-no-en`` / ``ast-no-es``: asterisk ``vm-no.wav`` ("no"): the only real one-word
  yes/no recordings on this machine; ``YES_NO``.
* ``espeak-yesno-en`` / ``-es``: **synthetic** espeak-ng yes/no phrases, several voices,
  speeds and pitches, through an 8 kHz µ-law phone channel (sox); ``YES_NO``.
* negatives (must be ``unclear``): silence, white/pink noise at two levels, and
  unrelated real sentences (asterisk prompts, en and es, including "No more messages" /
  "No hay mensajes", which start like "no").

Modes: ``constrained`` (:class:`models.answers.AnswerRecognizer`); ``free``
(:meth:`Transcriber.transcribe` as the gateway runs it, language given, then keyword
matching of the normalised text against the grammar's phrases; unmatched or dropped →
unclear); ``free-nogate``: the same without the transcriber's VAD gate (the whole clip is
declared speech with ``speech_end_s``; webrtcvad drops some quiet sub-second FSDD clips
before Whisper runs; the constrained path gates at 60 ms of speech instead of 100), so the
comparison of decoders is fair.
Prints a table and writes ``benchmarks/results/answers.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from models.answers import DIGITS, YES_NO, AnswerRecognizer, Grammar  # noqa: E402
from models.audio import SAMPLE_RATE, load_audio  # noqa: E402
from models.corpora import SHARED_DATA, asterisk_clips, select_clips  # noqa: E402
from models.evaluation import normalize_text  # noqa: E402
from models.transcribe import Transcriber, TranscriberConfig, default_cache_dir  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "answers.json"
FSDD = SHARED_DATA / "speech" / "fsdd"
ASTERISK = Path("/usr/share/asterisk/sounds")

# espeak-ng phrase → expected choice, per language.
ESPEAK_YES_NO = {
    "es": [("sí", "yes"), ("sí, por favor", "yes"), ("claro", "yes"), ("no", "no"), ("no gracias", "no")],
    "en": [("yes", "yes"), ("yeah", "yes"), ("yes please", "yes"), ("no", "no"), ("nope", "no"),
           ("no thanks", "no")],
}
ESPEAK_VOICES = {"es": ("es-419", "es-419+f3", "es"), "en": ("en-us", "en-us+f3", "en-us+m3")}
ESPEAK_STYLES = ((150, 50), (120, 30), (190, 75))  # (-s words/min, -p pitch)
NEGATIVE_PROMPTS = {"en": ["vm-nomore"], "es": ["vm-nomore"]}
_ANSWER_WORD = re.compile(r"\b(yes|no|s[ií]|\d|zero|one|two|three|four|five|six|seven|eight|nine|"
                          r"cero|uno|dos|tres|cuatro|cinco|seis|siete|ocho|nueve)\b")


@dataclass(frozen=True, slots=True)
class Item:
    """One benchmark utterance: its audio, grammar, language and expected choice (None: unclear)."""

    set: str
    name: str
    audio: np.ndarray
    grammar: str  # "digits" | "yes_no"
    language: str
    expected: str | None
    synthetic: bool = False

    @property
    def grammar_obj(self) -> Grammar:
        return (DIGITS if self.grammar == "digits" else YES_NO)[self.language]


def fsdd_items(limit: int | None = None) -> list[Item]:
    """FSDD recordings ``{digit}_{speaker}_{n}.wav``; ``limit`` picks an even spread by name."""
    files = sorted(FSDD.glob("*.wav"))
    if limit is not None and limit < len(files):
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return [Item("fsdd", f.stem, load_audio(f), "digits", "en", f.stem.split("_")[0]) for f in files]


def asterisk_digit_items(language: str) -> list[Item]:
    paths = [ASTERISK / language / "digits" / f"{d}.wav" for d in range(10)]
    return [Item(f"ast-digits-{language}", p.stem, load_audio(p), "digits", language, p.stem)
            for p in paths if p.is_file()]


def asterisk_no_items() -> list[Item]:
    return [Item(f"ast-no-{lang}", "vm-no", load_audio(ASTERISK / lang / "vm-no.wav"), "yes_no", lang, "no")
            for lang in ("en", "es") if (ASTERISK / lang / "vm-no.wav").is_file()]


def phone_channel(wav: Path, out: Path) -> Path:
    """8 kHz µ-law, as a PSTN call delivers it (sox)."""
    subprocess.run(["sox", "-D", str(wav), "-r", "8000", "-c", "1", "-e", "mu-law", str(out)], check=True,
                   capture_output=True)
    return out


def espeak_items(language: str, work: Path, *, phrases=None, voices=None, styles=None) -> list[Item]:
    """Synthetic yes/no answers (espeak-ng → sox µ-law 8 kHz); empty if either tool is absent."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        return []
    items = []
    for phrase, expected in phrases or ESPEAK_YES_NO[language]:
        for voice in voices or ESPEAK_VOICES[language]:
            for speed, pitch in styles or ESPEAK_STYLES:
                stem = f"{voice}-s{speed}-p{pitch}-{normalize_text(phrase).replace(' ', '_')}"
                raw = work / f"{stem}.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(raw), phrase],
                               check=True, capture_output=True)
                audio = load_audio(phone_channel(raw, work / f"{stem}-ulaw.wav"))
                items.append(Item(f"espeak-yesno-{language}", stem, audio, "yes_no", language, expected, True))
    return items


def noise_items() -> list[Item]:
    """Silence and noise (1.5 s): white at -30/-20 dBFS, pink-ish (integrated white) at -25 dBFS."""
    rng = np.random.default_rng(7)
    n = int(1.5 * SAMPLE_RATE)
    white = rng.standard_normal(n).astype(np.float32)
    white /= np.sqrt(np.mean(white**2))
    pink = np.cumsum(rng.standard_normal(n)).astype(np.float32)
    pink -= np.convolve(pink, np.ones(400) / 400, mode="same")  # drop the random walk's drift
    pink /= np.sqrt(np.mean(pink**2))
    signals = {"silence": np.zeros(n, np.float32), "white-30dB": white * 10 ** (-30 / 20),
               "white-20dB": white * 10 ** (-20 / 20), "pink-25dB": pink * 10 ** (-25 / 20)}
    items = []
    for name, audio in signals.items():
        for grammar, language in (("digits", "en"), ("yes_no", "en"), ("yes_no", "es")):
            items.append(Item("noise", f"{name}/{grammar}-{language}", audio.astype(np.float32), grammar,
                              language, None, True))
    return items


def sentence_items(per_language: int) -> list[Item]:
    """Unrelated real sentences (asterisk prompts) against the yes/no and digit grammars."""
    items = []
    for language in ("en", "es"):
        clips = select_clips(asterisk_clips(language), per_language, min_words=2, max_words=12)
        clips += [c for c in asterisk_clips(language) if c.name in NEGATIVE_PROMPTS[language] and c not in clips]
        for c in clips:
            if _ANSWER_WORD.search(c.text.lower()) and c.name not in NEGATIVE_PROMPTS[language]:
                continue  # a prompt that contains an answer word is not an unrelated sentence
            audio = load_audio(c.path)
            items.append(Item(f"sentences-{language}", c.name, audio, "yes_no", language, None))
            if language == "en":
                items.append(Item("sentences-en-digits", c.name, audio, "digits", language, None))
    return items


# --- the two recognisers ---------------------------------------------------------------------


def free_choice(text: str, grammar: Grammar) -> str | None:
    """Keyword matching of a free transcript: the choice whose phrase is the whole text, else
    the only choice one of whose one-word phrases appears in it; otherwise unclear."""
    norm = normalize_text(text)
    if not norm:
        return None
    phrases = {normalize_text(p): c for c, ps in grammar.choices.items() for p in ps}
    if norm in phrases:
        return phrases[norm]
    words = set(norm.split())
    hits = {c for p, c in phrases.items() if " " not in p and p in words}
    return hits.pop() if len(hits) == 1 else None


def run(items: list[Item], transcriber: Transcriber, recognizer: AnswerRecognizer) -> list[dict]:
    rows = []
    for it in items:
        r = recognizer.recognize(it.audio, it.grammar_obj, it.language)
        t = transcriber.transcribe(it.audio, language=it.language)
        u = transcriber.transcribe(it.audio, language=it.language, speech_end_s=len(it.audio) / SAMPLE_RATE)
        rows.append({
            "set": it.set, "name": it.name, "grammar": it.grammar, "language": it.language, "expected": it.expected,
            "synthetic": it.synthetic,
            "constrained": r.choice, "best": r.best, "score": r.score, "margin": r.margin, "reason": r.reason,
            "scores": r.scores, "constrained_s": r.elapsed_s,
            "free": free_choice(t.text, it.grammar_obj), "free_text": t.text, "free_s": t.elapsed_s,
            "free_dropped": t.dropped,
            "free-nogate": free_choice(u.text, it.grammar_obj), "free-nogate_text": u.text,
            "free-nogate_s": u.elapsed_s,
        })
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for name in dict.fromkeys(r["set"] for r in rows):
        sub = [r for r in rows if r["set"] == name]
        positive = sub[0]["expected"] is not None
        for mode in ("constrained", "free", "free-nogate"):
            choices = [r[mode] for r in sub]
            lat = [r[f"{mode}_s"] for r in sub]
            correct = sum(c == r["expected"] for c, r in zip(choices, sub))
            unclear = sum(c is None for c in choices)
            out.append({
                "set": name, "mode": mode, "n": len(sub), "synthetic": sub[0]["synthetic"],
                "accuracy": round(correct / len(sub), 4) if positive else None,
                "unclear_rate": round(unclear / len(sub), 4),
                "wrong_rate": round((len(sub) - correct - unclear) / len(sub), 4) if positive else None,
                "false_accept": None if positive else round((len(sub) - unclear) / len(sub), 4),
                "latency_p50_s": round(float(np.percentile(lat, 50)), 3),
                "latency_p95_s": round(float(np.percentile(lat, 95)), 3),
            })
    return out


def overall(rows: list[dict]) -> list[dict]:
    """Pooled: all positives (accuracy / wrong / unclear), all negatives (false accept)."""
    out = []
    for mode in ("constrained", "free", "free-nogate"):
        pos = [r for r in rows if r["expected"] is not None]
        neg = [r for r in rows if r["expected"] is None]
        real = [r for r in pos if not r["synthetic"]]
        out.append({
            "mode": mode,
            "accuracy_all": round(sum(r[mode] == r["expected"] for r in pos) / len(pos), 4),
            "accuracy_real": round(sum(r[mode] == r["expected"] for r in real) / len(real), 4),
            "wrong_all": round(sum(r[mode] not in (None, r["expected"]) for r in pos) / len(pos), 4),
            "unclear_all": round(sum(r[mode] is None for r in pos) / len(pos), 4),
            "false_accept": round(sum(r[mode] is not None for r in neg) / len(neg), 4) if neg else None,
            "n_positive": len(pos), "n_real": len(real), "n_negative": len(neg),
        })
    return out


def print_table(summary: list[dict]) -> None:
    head = f"{'set':22} {'mode':12} {'n':>4} {'acc':>6} {'wrong':>6} {'unclr':>6} {'FA':>6} {'p50 s':>6} {'p95 s':>6}"
    print(head)
    print("-" * len(head))
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for s in summary:
        tag = s["set"] + (" (syn)" if s["synthetic"] else "")
        print(f"{tag:22} {s['mode']:12} {s['n']:4d} {fmt(s['accuracy']):>6} {fmt(s['wrong_rate']):>6} "
              f"{s['unclear_rate']:6.3f} {fmt(s['false_accept']):>6} "
              f"{s['latency_p50_s']:6.3f} {s['latency_p95_s']:6.3f}")


def build_items(fsdd: int | None, sentences: int, work: Path) -> list[Item]:
    items = fsdd_items(fsdd) if FSDD.is_dir() else []
    items += asterisk_digit_items("en") + asterisk_digit_items("es") + asterisk_no_items()
    items += espeak_items("en", work) + espeak_items("es", work)
    items += noise_items() + sentence_items(sentences)
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fsdd", type=int, default=300, help="FSDD files (even spread); 300 = all")
    parser.add_argument("--sentences", type=int, default=12, help="unrelated asterisk prompts per language")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--min-score", type=float, default=None)
    parser.add_argument("--min-margin", type=float, default=None)
    args = parser.parse_args()

    transcriber = Transcriber(TranscriberConfig(model="base", cache_dir=args.cache_dir))
    kwargs = {k: v for k, v in (("min_score", args.min_score), ("min_margin", args.min_margin)) if v is not None}
    recognizer = AnswerRecognizer(transcriber, **kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        items = build_items(args.fsdd, args.sentences, Path(tmp))
    recognizer.recognize(items[0].audio, items[0].grammar_obj, items[0].language)  # warm-up
    rows = run(items, transcriber, recognizer)
    summary = summarise(rows)
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    print(f"Short answers on {machine['cpus']} CPU core(s); Whisper base int8; min_score={recognizer.min_score} "
          f"min_margin={recognizer.min_margin}. (syn) = synthetic speech; FA = false accept on negatives")
    print_table(summary)
    pooled = overall(rows)
    print()
    for o in pooled:
        print(f"{o['mode']:12} all answers ({o['n_positive']}): acc {o['accuracy_all']:.3f}, "
              f"wrong {o['wrong_all']:.3f}, "
              f"unclear {o['unclear_all']:.3f}; real only ({o['n_real']}): acc {o['accuracy_real']:.3f}; "
              f"negatives ({o['n_negative']}): false accept {o['false_accept']:.3f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine, "min_score": recognizer.min_score,
                                   "min_margin": recognizer.min_margin, "overall": pooled, "summary": summary,
                                   "rows": rows},
                                  indent=2, ensure_ascii=False, default=float))
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
