"""Early-commit benchmark: time saved at the end of a turn, and callers cut off, on real audio with pauses.

    .venv/bin/python benchmarks/endpointing.py [--per-language 20] [--early-ms 300] [--min-confidence 0.8]

Runs the real endpointer (webrtcvad), real Whisper base (int8, CPU) and the bundled intent model,
offline, over caller turns with pauses (``gateway.dev.early_commit``, the session's own rule):

* ``asterisk``: Debian asterisk-core-sounds prompts, es and en (8 kHz recordings; their own
  commas and breaths are the pauses);
* ``pairs``: two asterisk prompts joined with a 350–500 ms pause (one turn, two sentences);
* ``requests``: espeak-ng contact-center requests split mid-sentence by a 350–500 ms pause
  ("Quiero saber el estado de mi" … "pedido"), some whose first half is already a request;
* ``numbers``: "mi número de pedido es" / "my order number is" (espeak-ng) and three FSDD digits
  (real speakers) with 400–700 ms pauses between them;
* ``jfk``: JFK's sentence (natural pauses);
* ``slow``: the pairs, requests and numbers at sox ``tempo 0.8``.

Each turn runs with early commit off (the 600 ms end of speech) and on, three ways: with this
machine's compute time as measured now (a result is ready when Whisper and the intent model finish,
so a caller who resumes before that is never cut off), with a fixed ``--typical-ms`` (250: the
gateway's median on one unloaded call), and with zero compute time (every complete pause commits as
soon as ``early_commit_silence_ms`` allows: the worst case for cut-offs, a much faster server; also
swept over several ``early_commit_silence_ms``). For each it reports whether early commit fired,
whether the caller was cut off (decided on words that end before their last speech), and the time
saved (end of speech → decision, off − on, for turns both modes decide on the same words). Prints a
table and writes ``benchmarks/results/endpointing.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import wave
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from gateway.call.announcements import speak  # noqa: E402
from gateway.config import Settings  # noqa: E402
from gateway.dev.early_commit import Outcome, Understander, simulate  # noqa: E402
from models.audio import SAMPLE_RATE, float32_to_pcm16, load_audio  # noqa: E402
from models.corpora import JFK_FLAC, SHARED_DATA, asterisk_clips, select_clips  # noqa: E402
from models.transcribe import Transcriber, TranscriberConfig  # noqa: E402
from nlu import default_cache_dir, load_or_train_default  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "endpointing.json"
FSDD = SHARED_DATA / "speech" / "fsdd"
PAUSES_MS = (350, 400, 450, 500)
REQUESTS = [  # (language, first part, rest): one turn, paused between the two
    ("es", "Quiero saber el estado de mi", "pedido"),
    ("es", "Necesito una copia de", "mi factura del mes pasado"),
    ("es", "Me cobraron dos veces", "la factura de este mes"),
    ("es", "Quiero cancelar mi servicio", "de internet porque me voy a mudar"),
    ("es", "Quiero saber dónde está mi pedido", "lo compré hace una semana"),
    ("es", "Me robaron la tarjeta de crédito", "y necesito bloquearla"),
    ("es", "Hola, buenas tardes, eh", "quería pedir una cita para el lunes"),
    ("es", "Quiero hablar con", "una persona por favor"),
    ("en", "I would like to know where my", "order is"),
    ("en", "I want to cancel my", "internet subscription"),
    ("en", "I was charged twice", "on my last bill"),
    ("en", "I need to speak with", "an agent please"),
    ("en", "My credit card was stolen", "and I need to block it"),
    ("en", "Hi, um", "what time do you open tomorrow"),
    ("en", "I'd like to make an appointment for", "next Monday"),
    ("en", "Where is my order", "I bought it a week ago"),
]
SWEEP_MS = (300, 400, 460, 500, 560)  # early_commit_silence_ms values tried in the worst case
NUMBER_PREFIX = {"es": "mi número de pedido es", "en": "my order number is"}


def _silence(ms: int) -> np.ndarray:
    return np.zeros(SAMPLE_RATE * ms // 1000, dtype=np.float32)


def _trimmed(audio: np.ndarray, threshold: float = 0.01, margin_ms: int = 30) -> np.ndarray:
    """``audio`` without its leading and trailing silence (10 ms windows under -40 dBFS), so that the pause
    put between two parts is the pause the caller makes (espeak-ng and the prompts carry their own)."""
    win = SAMPLE_RATE // 100
    rms = np.sqrt(np.mean(audio[: len(audio) // win * win].reshape(-1, win) ** 2, axis=1))
    loud = np.flatnonzero(rms > threshold)
    if not len(loud):
        return audio
    margin = SAMPLE_RATE * margin_ms // 1000
    return audio[max(0, loud[0] * win - margin): min(len(audio), (loud[-1] + 1) * win + margin)]


def _turn(*parts: np.ndarray) -> np.ndarray:
    """A caller turn: 0.5 s of line before, 1.5 s after (the end of speech must be found)."""
    return np.concatenate([_silence(500), *parts, _silence(1500)])


def _spoken(text: str, lang: str, workdir: Path) -> np.ndarray:
    out = workdir / f"espeak-{lang}-{abs(hash(text))}.wav"
    return _trimmed(load_audio(speak(text, lang, out)))


def _recorded(path: Path) -> np.ndarray:
    return _trimmed(load_audio(path))


def _slower(audio: np.ndarray, workdir: Path, name: str) -> np.ndarray:
    raw, slow = workdir / f"{name}.wav", workdir / f"{name}-slow.wav"
    with wave.open(str(raw), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(SAMPLE_RATE)
        w.writeframes(float32_to_pcm16(audio))
    subprocess.run(["sox", str(raw), str(slow), "tempo", "0.8"], check=True, capture_output=True)
    return load_audio(slow)


def build_clips(per_language: int, workdir: Path) -> list[dict]:
    clips: list[dict] = []
    for lang in ("es", "en"):
        prompts = select_clips(asterisk_clips(lang), per_language * 2, min_words=4)
        singles, others = prompts[0::2], prompts[1::2]
        for c in singles:
            clips.append({"group": "asterisk", "name": f"{lang}/{c.name}", "lang": lang, "audio": _turn(_recorded(c.path))})
        for i, (a, b) in enumerate(zip(singles[: per_language // 2], others[: per_language // 2])):
            pause = PAUSES_MS[i % len(PAUSES_MS)]
            audio = _turn(_recorded(a.path), _silence(pause), _recorded(b.path))
            clips.append({"group": "pairs", "name": f"{lang}/{a.name}+{pause}+{b.name}", "lang": lang, "audio": audio})
    for i, (lang, first, rest) in enumerate(REQUESTS):
        pause = PAUSES_MS[i % len(PAUSES_MS)]
        audio = _turn(_spoken(first, lang, workdir), _silence(pause), _spoken(rest, lang, workdir))
        clips.append({"group": "requests", "name": f"{lang}/{first} … {pause} … {rest}", "lang": lang, "audio": audio})
    speakers = sorted({p.name.split("_")[1] for p in FSDD.glob("*_*_0.wav")})
    for i, speaker in enumerate(speakers[:4]):
        for lang in ("es", "en"):
            digits = [(3 * i + k * 4 + (lang == "en")) % 10 for k in range(3)]
            parts: list[np.ndarray] = [_spoken(NUMBER_PREFIX[lang], lang, workdir)]
            for k, d in enumerate(digits):
                parts += [_silence(400 + 100 * ((i + k) % 4)), _recorded(FSDD / f"{d}_{speaker}_{k % 5}.wav")]
            name = f"{lang}/{NUMBER_PREFIX[lang]} {' '.join(map(str, digits))} ({speaker})"
            clips.append({"group": "numbers", "name": name, "lang": lang, "audio": _turn(*parts)})
    if JFK_FLAC.is_file():
        clips.append({"group": "jfk", "name": "en/jfk", "lang": "en", "audio": _turn(_recorded(JFK_FLAC))})
    for i, clip in enumerate([c for c in clips if c["group"] in ("pairs", "requests", "numbers")]):
        inner = clip["audio"][SAMPLE_RATE // 2 : -SAMPLE_RATE * 3 // 2]
        clips.append({"group": "slow", "name": f"{clip['name']} @0.8", "lang": clip["lang"],
                      "audio": _turn(_slower(inner, workdir, f"slow-{i}"))})
    return clips


def _saved(off: Outcome, on: Outcome) -> float | None:
    """End of speech → decision, off − on, when both decided on the same words."""
    if off.speech_end_ms != on.speech_end_ms or off.latency_ms is None or on.latency_ms is None:
        return None
    return round(off.latency_ms - on.latency_ms, 1)


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarize(rows: list[dict]) -> dict:
    n = len(rows)
    saved = [r["saved_ms"] for r in rows if r["saved_ms"] is not None]
    on_lat = [r["on"]["latency_ms"] for r in rows if r["on"]["latency_ms"] is not None]
    off_lat = [r["off"]["latency_ms"] for r in rows if r["off"]["latency_ms"] is not None]
    saved_t = [r["saved_typical_ms"] for r in rows if r["saved_typical_ms"] is not None]
    on_t = [r["typical"]["latency_ms"] for r in rows if r["typical"]["latency_ms"] is not None]
    off_t = [r["off_typical"]["latency_ms"] for r in rows if r["off_typical"]["latency_ms"] is not None]
    return {
        "typical": {
            "early_fired": sum(r["typical"]["early"] for r in rows), "cut_off_on": sum(r["typical"]["cut_off"] for r in rows),
            "saved_ms": {"p50": _pct(saved_t, 50), "p95": _pct(saved_t, 95)},
            "latency_on_ms": {"p50": _pct(on_t, 50), "p95": _pct(on_t, 95)},
            "latency_off_ms": {"p50": _pct(off_t, 50), "p95": _pct(off_t, 95)},
        },
        "cut_off_instant_by_commit_silence": {ms: sum(r["cut_off_instant_by_commit_silence"][ms] for r in rows) for ms in SWEEP_MS},
        "turns": n,
        "early_fired": sum(r["on"]["early"] for r in rows),
        "cut_off_off": sum(r["off"]["cut_off"] for r in rows),
        "cut_off_on": sum(r["on"]["cut_off"] for r in rows),
        "cut_off_on_instant": sum(r["instant"]["cut_off"] for r in rows),
        "early_fired_instant": sum(r["instant"]["early"] for r in rows),
        "saved_ms": {"p50": _pct(saved, 50), "p95": _pct(saved, 95), "mean": round(float(np.mean(saved)), 1) if saved else None},
        "latency_on_ms": {"p50": _pct(on_lat, 50), "p95": _pct(on_lat, 95)},
        "latency_off_ms": {"p50": _pct(off_lat, 50), "p95": _pct(off_lat, 95)},
    }


def print_table(summaries: dict[str, dict], typical_ms: int) -> None:
    def pair(d: dict) -> str:
        return f"{d['p50'] or 0:.0f}/{d['p95'] or 0:.0f}"

    print(f"{'':<10}{'':>6}{'--- measured compute (this machine, now) ---':^62}{f'--- {typical_ms} ms compute ---':^40}{'0 ms':>9}")
    print(f"{'group':<10}{'turns':>6}{'cut off':>8}{'early':>7}{'cut on':>8}{'saved':>11}{'off p50/p95':>14}{'on p50/p95':>14}"
          f"{'early':>7}{'cut on':>8}{'saved':>11}{'off/on p95':>14}{'cut on':>9}")
    for group, s in summaries.items():
        t = s["typical"]
        print(f"{group:<10}{s['turns']:>6}{s['cut_off_off']:>8}{s['early_fired']:>7}{s['cut_off_on']:>8}{pair(s['saved_ms']):>11}"
              f"{pair(s['latency_off_ms']):>14}{pair(s['latency_on_ms']):>14}"
              f"{t['early_fired']:>7}{t['cut_off_on']:>8}{pair(t['saved_ms']):>11}"
              f"{(t['latency_off_ms']['p95'] or 0):>7.0f}/{(t['latency_on_ms']['p95'] or 0):<6.0f}{s['cut_off_on_instant']:>9}")
    print("cut off: callers cut off with early commit off (the 600 ms end splits their turn); early: turns committed at a"
          " pause; cut on: cut off with early commit on; saved (p50/p95) and latency: end of speech → decision, ms;"
          " 0 ms: understanding takes no time (every complete pause commits as soon as allowed: the worst case)")
    print("worst-case cut-offs (0 ms) by early_commit_silence_ms: "
          + ", ".join(f"{ms}: {n}" for ms, n in summaries["all"]["cut_off_instant_by_commit_silence"].items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-language", type=int, default=20, help="asterisk prompts per language (and half as many pairs)")
    parser.add_argument("--early-ms", type=int, default=None, help="early_silence_ms (default: the gateway's)")
    parser.add_argument("--commit-ms", type=int, default=None, help="early_commit_silence_ms (default: the gateway's)")
    parser.add_argument("--typical-ms", type=int, default=250,
                        help="a fixed time of understanding for the second set of columns (250: the gateway's median "
                        "transcription + classification, one call, unloaded)")
    parser.add_argument("--min-confidence", type=float, default=None, help="early_commit_min_confidence (default: the gateway's)")
    args = parser.parse_args()

    settings = Settings()
    off = replace(settings.endpointer_config(), early_silence_ms=None)
    on = replace(off, early_silence_ms=args.early_ms or settings.endpointing.early_silence_ms)
    floor = settings.endpointing.early_commit_min_confidence if args.min_confidence is None else args.min_confidence
    commit_ms = settings.endpointing.early_commit_silence_ms if args.commit_ms is None else args.commit_ms
    transcriber = Transcriber(TranscriberConfig(model="base", languages=("es", "en")))
    classifier = load_or_train_default(default_cache_dir())
    rows = []
    with tempfile.TemporaryDirectory(prefix="puente-endpointing-") as tmp:
        clips = build_clips(args.per_language, Path(tmp))
        print(f"{len(clips)} turns; early_silence_ms={on.early_silence_ms}, end_silence_ms={on.end_silence_ms}, "
              f"early_commit_silence_ms={commit_ms}, min confidence {floor}", flush=True)
        for clip in clips:
            lang = clip["lang"]
            understand = Understander(lambda pcm, lang=lang: transcriber.transcribe(pcm, language=lang), classifier.parse)
            pcm = float32_to_pcm16(clip["audio"])
            common = {"min_confidence": floor, "commit_silence_ms": commit_ms}
            results: dict[str, Outcome] = {
                "off": simulate(pcm, understand, config=off, **common),
                "on": simulate(pcm, understand, config=on, **common),
                "off_typical": simulate(pcm, understand, config=off, **common, compute_s=args.typical_ms / 1000),
                "typical": simulate(pcm, understand, config=on, **common, compute_s=args.typical_ms / 1000),
                "instant": simulate(pcm, understand, config=on, **common, compute_scale=0.0),
            }
            sweep = {ms: simulate(pcm, understand, config=on, min_confidence=floor, commit_silence_ms=ms,
                                  compute_scale=0.0).cut_off for ms in SWEEP_MS}
            row = {
                "group": clip["group"], "name": clip["name"], "lang": lang,
                **{mode: {**asdict(o), "latency_ms": o.latency_ms} for mode, o in results.items()},
                "saved_ms": _saved(results["off"], results["on"]),
                "saved_typical_ms": _saved(results["off_typical"], results["typical"]),
                "cut_off_instant_by_commit_silence": sweep,
            }
            rows.append(row)
            flags = "".join(f" {m}:{'EARLY' if o.early else '-'}{'/CUT' if o.cut_off else ''}" for m, o in results.items())
            print(f"  {clip['group']:<9}{clip['name'][:60]:<61}{flags}  {results['on'].text[:50]!r}", flush=True)
    groups = sorted({r["group"] for r in rows}, key=["asterisk", "pairs", "requests", "numbers", "jfk", "slow"].index)
    summaries = {g: summarize([r for r in rows if r["group"] == g]) for g in groups}
    summaries["all"] = summarize(rows)
    print()
    print_table(summaries, args.typical_ms)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    report = {
        "machine": {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
                    "note": "2 cores shared with other work while measured: compute times are this machine's"},
        "settings": {"asr_model": "base", "compute_type": "int8", "end_silence_ms": on.end_silence_ms,
                     "early_silence_ms": on.early_silence_ms, "early_commit_silence_ms": commit_ms,
                     "early_commit_min_confidence": floor, "typical_compute_ms": args.typical_ms},
        "summary": summaries,
        "turns": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwrote {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
