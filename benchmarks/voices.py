"""Synthesis speed of the test voices: real-time factor (seconds to render / seconds of speech).

    .venv/bin/python -m benchmarks.voices [--voice SPEC]... [--threads N] [--repeat N]

Renders the same three sentences per language with each voice (no speech cache; one warm-up
rendering first, not counted), and reports RTF per voice: below 1 is faster than real time.
The machine is shared, so the load average before and after is recorded with the numbers.
Prints a table and writes ``benchmarks/results/voices.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from models.voices import KokoroConfig, VoiceLibrary, VoicesConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS = REPO_ROOT / "benchmarks" / "results" / "voices.json"
VOICES = ("espeak:es-419", "espeak:en-us", "kokoro:ef_dora", "kokoro:em_alex", "kokoro:em_santa",
          "kokoro:af_heart", "kokoro:am_michael", "kokoro:bf_emma")
SENTENCES = {
    "es": ("Hola, quiero pagar mi factura de este mes.",
           "Me robaron la tarjeta ayer en la noche y necesito bloquearla cuanto antes, por favor.",
           "¿Dónde está mi pedido? Lo compré la semana pasada."),
    "en": ("Hi, I would like to pay my bill for this month.",
           "My card was stolen last night and I need to block it as soon as possible, please.",
           "Where is my order? I bought it last week."),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voice", action="append", metavar="SPEC", help=f"voices to time (default: {', '.join(VOICES)})")
    parser.add_argument("--threads", type=int, default=0, help="Kokoro's onnxruntime threads (default: one per core)")
    parser.add_argument("--repeat", type=int, default=1, help="times each sentence is rendered (default %(default)s)")
    args = parser.parse_args()

    library = VoiceLibrary(VoicesConfig(kokoro=KokoroConfig(threads=args.threads), speech_cache=None))
    load_before = os.getloadavg()
    rows = []
    for spec in args.voice or VOICES:
        voice = library.voice(spec)
        sentences = SENTENCES.get(voice.language, SENTENCES["en"])
        voice.synthesize(sentences[0])  # warm-up: first-run allocations and caches
        spent = spoken = 0.0
        for _ in range(args.repeat):
            for text in sentences:
                start = time.perf_counter()
                audio = voice.synthesize(text)
                spent += time.perf_counter() - start
                spoken += len(audio) / 16000
        rows.append({"voice": voice.name, "language": voice.language, "audio_s": round(spoken, 2),
                     "synth_s": round(spent, 2), "rtf": round(spent / spoken, 3)})
        print(f"{voice.name:22} {voice.language}  {spoken:6.1f} s of speech in {spent:6.1f} s  RTF {spent / spoken:.3f}", flush=True)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads or "default",
               "load_average_before": [round(x, 2) for x in load_before],
               "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine, "voices": rows}, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)} (load average {machine['load_average_before']} → {machine['load_average_after']})")


if __name__ == "__main__":
    main()
