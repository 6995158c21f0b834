"""ASR benchmark: accuracy (WER) and per-utterance latency, short window vs 30 s window.

    .venv/bin/python -m benchmarks.asr [--per-language 20] [--cache-dir DIR]

Clips: ~20 Asterisk core prompts per language (8 kHz telephone recordings with their
official transcripts, chosen deterministically) plus JFK. For each model:

* ``short``: :class:`models.transcribe.Transcriber` (window = utterance + padding).
* ``30s``: :meth:`Transcriber.transcribe_full_window`, faster-whisper's own decoding on the
  same model (every input padded to 30 s), greedy, language forced, no conditioning on
  previous text: the baseline.
* ``bias``: the short window with the gateway's default biasing prompt (``asr.biasing``): the
  clips are general speech, not the contact center's, so WER must not rise beyond noise.
* ``nbest3`` / ``bias+nbest3``: three hypotheses from a beam of three (what ``asr.second_opinion``
  asks for when a first reading is unsure): the time it costs (the WER is the best hypothesis's).

A last table counts the words biasing makes Whisper invent over silence and noise (must be 0).

Both are given the reference language (so WER compares decoding, not detection); the short
path is also run undirected to report how often it picks the right language. Prints a
table and writes ``benchmarks/results/asr.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from gateway.config import Settings  # noqa: E402
from models.audio import load_audio  # noqa: E402
from models.corpora import JFK_FLAC, JFK_TEXT, Clip, asterisk_clips, select_clips  # noqa: E402
from models.evaluation import word_error_rate  # noqa: E402
from models.transcribe import Transcriber, TranscriberConfig, default_cache_dir  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "asr.json"


def clip_set(per_language: int) -> list[Clip]:
    clips = select_clips(asterisk_clips("en"), per_language) + select_clips(asterisk_clips("es"), per_language)
    if JFK_FLAC.is_file():
        clips.append(Clip("jfk", JFK_FLAC, JFK_TEXT, "en"))
    return clips


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_short(transcriber: Transcriber, audio: list[np.ndarray], clips: list[Clip], prompt=None,
              alternatives: int = 1, detect: bool = True) -> dict:
    hyps, latencies, dropped = [], [], 0
    for a, c in zip(audio, clips):
        t = transcriber.transcribe(a, language=c.language, prompt=prompt, alternatives=alternatives)
        hyps.append(t.text)
        latencies.append(t.elapsed_s)
        dropped += t.dropped is not None
    accuracy = None
    if detect and transcriber.multilingual:
        detected = [transcriber.transcribe(a, prompt=prompt).language == c.language for a, c in zip(audio, clips)]
        accuracy = sum(detected) / len(detected)
    return {"hyps": hyps, "latencies": latencies, "dropped": dropped, "language_accuracy": accuracy}


def invented_words(transcriber: Transcriber, prompt) -> dict:
    """Words transcribed from 2 s of silence and of white/pink noise at three levels, per language,
    through the speech gate and without it (a given speech end): anything but 0 is a hallucination."""
    rng = np.random.default_rng(11)
    signals = {"silence": np.zeros(2 * 16000, np.float32)}
    for level in (0.003, 0.03, 0.1):
        signals[f"white {level}"] = np.clip(rng.standard_normal(2 * 16000) * level, -1, 1).astype(np.float32)
        pink = np.fft.irfft(np.fft.rfft(rng.standard_normal(2 * 16000)) / np.sqrt(np.maximum(np.arange(16001), 1)), 2 * 16000)
        signals[f"pink {level}"] = np.clip(pink / np.std(pink) * level, -1, 1).astype(np.float32)
    words, texts = 0, []
    for name, signal in signals.items():
        for language in ("es", "en"):
            for speech_end_s in (None, 2.0):
                text = transcriber.transcribe(signal, language=language, prompt=prompt, speech_end_s=speech_end_s).text
                words += len(text.split())
                if text:
                    texts.append(f"{name}/{language}/{'forced' if speech_end_s else 'gated'}: {text}")
    return {"signals": len(signals) * 4, "words": words, "texts": texts}


def run_30s(transcriber: Transcriber, audio: list[np.ndarray], clips: list[Clip]) -> dict:
    hyps, latencies = [], []
    for a, c in zip(audio, clips):
        started = time.perf_counter()
        hyps.append(transcriber.transcribe_full_window(a, language=c.language))
        latencies.append(time.perf_counter() - started)
    return {"hyps": hyps, "latencies": latencies, "dropped": sum(not h for h in hyps), "language_accuracy": None}


def summarise(model: str, mode: str, result: dict, clips: list[Clip]) -> list[dict]:
    rows = []
    for language in ("en", "es"):
        idx = [i for i, c in enumerate(clips) if c.language == language]
        if not idx:
            continue
        wer = word_error_rate([clips[i].text for i in idx], [result["hyps"][i] for i in idx])
        lat = [result["latencies"][i] for i in idx]
        dur = sum(len(load_audio(clips[i].path)) for i in idx) / 16000
        rows.append({
            "model": model, "mode": mode, "language": language, "clips": len(idx),
            "wer": round(wer.wer, 4), "word_errors": wer.errors, "reference_words": wer.reference_words,
            "latency_median_s": round(statistics.median(lat), 3), "latency_p95_s": round(percentile(lat, 95), 3),
            "rtf": round(sum(lat) / dur, 4), "dropped": sum(1 for i in idx if not result["hyps"][i]),
            "language_accuracy": result["language_accuracy"],
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-language", type=int, default=20)
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    args = parser.parse_args()

    clips = clip_set(args.per_language)
    if not clips:
        sys.exit("no benchmark audio: install asterisk-core-sounds-{en,es}-wav and -{en,es}, or mount ../shared/data")
    audio = [load_audio(c.path) for c in clips]
    prompts = Settings().asr.biasing.prompts()
    rows, details, invented = [], {}, {}
    for model in ("base", "tiny.en"):
        model_clips = [c for c in clips if model == "base" or c.language == "en"]
        model_audio = [a for a, c in zip(audio, clips) if c in model_clips]
        transcriber = Transcriber(TranscriberConfig(model=model, cache_dir=args.cache_dir))
        transcriber.transcribe(model_audio[0])  # warm-up: first call allocates
        modes = {
            "short": lambda: run_short(transcriber, model_audio, model_clips),
            "bias": lambda: run_short(transcriber, model_audio, model_clips, prompts),
            "nbest3": lambda: run_short(transcriber, model_audio, model_clips, alternatives=3, detect=False),
            "bias+nbest3": lambda: run_short(transcriber, model_audio, model_clips, prompts, alternatives=3, detect=False),
            "30s": lambda: run_30s(transcriber, model_audio, model_clips),
        }
        for mode, runner in modes.items():
            result = runner()
            rows += summarise(model, mode, result, model_clips)
            details[f"{model}/{mode}"] = [
                {"clip": c.name, "language": c.language, "reference": c.text, "hypothesis": h, "latency_s": round(t, 3)}
                for c, h, t in zip(model_clips, result["hyps"], result["latencies"])]
        if transcriber.multilingual:
            invented = {"off": invented_words(transcriber, None), "bias": invented_words(transcriber, prompts)}

    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
               "python": platform.python_version()}
    header = f"{'model':8} {'mode':6} {'lang':4} {'n':>3} {'WER':>6} {'med s':>6} {'p95 s':>6} {'RTF':>6} {'drop':>4} {'lang acc':>8}"
    print(f"ASR benchmark on {machine['cpus']} CPU core(s), {machine['platform']}; int8, greedy (nbest3: beam 3), language given")
    print(header)
    print("-" * len(header))
    for r in rows:
        acc = "" if r["language_accuracy"] is None else f"{r['language_accuracy']:.2f}"
        print(f"{r['model']:8} {r['mode']:6} {r['language']:4} {r['clips']:3d} {r['wer']:6.3f} "
              f"{r['latency_median_s']:6.3f} {r['latency_p95_s']:6.3f} {r['rtf']:6.3f} {r['dropped']:4d} {acc:>8}")
    for name, result in invented.items():
        print(f"invented over silence/noise, biasing {name}: {result['words']} word(s) in {result['signals']} signals"
              + "".join(f"\n    {t}" for t in result["texts"]))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine, "prompts": prompts, "rows": rows, "invented": invented,
                                   "details": details}, indent=2, ensure_ascii=False))
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
