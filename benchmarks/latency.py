"""Latency benchmark: end of the caller's speech → routing decision, over real SIP calls.

    .venv/bin/python benchmarks/latency.py [--calls 12] [--concurrent 10] [--early both|on|off]

Starts a gateway process (default settings: Whisper base int8, 600 ms endpointing) on free
loopback ports, then places real SIP calls with ``puente call``, first one at a time, then
``--concurrent`` at once; with ``--early both`` (the default) it does so twice, with early commit
(``endpointing.early_silence_ms``) off and then on, and reports the two side by side. Clips are real recordings (Debian asterisk-core-sounds, es and
en) and espeak-ng phrases of the taxonomy. For every call's first decision it reports:

* the gateway's split: endpointing wait (last voiced frame → endpoint fired), transcription,
  classification, routing, and their sum as measured by the gateway
  (``end_of_speech_to_decision_ms``, monotonic clock);
* the caller-observed figure: decision time − (moment the clip started playing + the
  clip's own end of speech, found by webrtcvad on the file), i.e. including RTP transit
  and jitter buffers.

Prints p50/p95 per part and writes ``benchmarks/results/latency.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from gateway.dev.caller import synthesize  # noqa: E402
from gateway.dev.harness import RunningGateway, start_gateway  # noqa: E402
from models.audio import float32_to_pcm16, frames_from_pcm, load_audio  # noqa: E402
from models.vad import WebRtcVad  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "latency.json"
SOUNDS = Path("/usr/share/asterisk/sounds")
GATEWAY_PARTS = ("endpointing_ms", "transcription_ms", "classification_ms", "second_opinion_ms", "routing_ms",
                 "end_of_speech_to_decision_ms")
GOAL_EARLY_P95_MS = 800.0
GOAL_P95_MS = 1000.0

REAL_CLIPS = [  # (language, asterisk prompt): real recorded speech, 8 kHz
    ("en", "vm-reachoper"), ("es", "vm-reachoper"), ("en", "queue-youarenext"), ("es", "queue-youarenext"),
    ("en", "vm-nobodyavail"), ("es", "vm-nobodyavail"), ("en", "agent-loggedoff"), ("es", "vm-dialout"),
]
SPOKEN = [  # (language, text): espeak-ng phrases from the taxonomy
    ("es", "Necesito una copia de mi factura del mes pasado"),
    ("es", "Me robaron la tarjeta de crédito"),
    ("es", "Quiero cancelar mi servicio de internet"),
    ("en", "Hi, I would like to know where my order is"),
    ("en", "What time do you open tomorrow"),
    ("en", "I want to speak to an agent please"),
]


def build_clips(workdir: Path) -> list[dict]:
    clips = []
    for lang, name in REAL_CLIPS:
        wav = SOUNDS / lang / f"{name}.wav"
        if wav.is_file():
            clips.append({"name": f"{lang}/{name}", "lang": lang, "wav": wav, "source": "recorded"})
    for i, (lang, text) in enumerate(SPOKEN):
        wav = synthesize(text, lang, workdir / f"spoken-{i}.wav")
        clips.append({"name": f"{lang}/espeak-{i}", "lang": lang, "wav": wav, "source": "espeak-ng"})
    vad = WebRtcVad(2)
    for clip in clips:
        pcm = float32_to_pcm16(load_audio(str(clip["wav"])))
        voiced = [f.end_ms for f in frames_from_pcm(pcm) if vad.is_speech(f)]
        clip["speech_end_s"] = (voiced[-1] if voiced else 0) / 1000
        clip["duration_s"] = len(pcm) / 2 / 16000
    return clips


def place(gateway: RunningGateway, clip: dict) -> dict:
    # Hang up a little after the decision must have been made: the prompts after it don't matter here.
    hangup_after = 1.0 + clip["duration_s"] + 3.0
    started = time.time()
    try:
        record = gateway.call(clip["lang"], "--wav", str(clip["wav"]), "--hangup-after", f"{hangup_after:.1f}", timeout=120)
    except Exception as exc:  # a failed call is reported, not fatal to the benchmark
        return {"clip": clip["name"], "error": str(exc)}
    if "error" in record:
        return {"clip": clip["name"], "error": record["error"]}
    full = record["record"]
    decisions = full.get("decisions") or []
    if not decisions:
        return {"clip": clip["name"], "error": "no decision", "transcript": record.get("transcript")}
    first = decisions[0]
    speech_start = (record.get("caller") or {}).get("speech_started_at")
    observed = None
    if speech_start:
        decided_at = datetime.fromisoformat(first["created_at"]).timestamp()
        observed = (decided_at - (speech_start + clip["speech_end_s"])) * 1000
    return {
        "clip": clip["name"], "source": clip["source"], "route": first["route"], "intent": first["intent"],
        "transcript": record.get("transcript"), "wall_s": round(time.time() - started, 2),
        **{part: first["timings"].get(part) for part in GATEWAY_PARTS},
        "early_commit": first["timings"].get("early_commit"),
        "caller_observed_ms": round(observed, 1) if observed is not None else None,
    }


def _percentiles(values: list[float]) -> dict:
    return {"p50": round(float(np.percentile(values, 50)), 1), "p95": round(float(np.percentile(values, 95)), 1), "n": len(values)}


def summarize(rows: list[dict]) -> dict:
    ok = [r for r in rows if "error" not in r]
    out = {"calls": len(rows), "failed": len(rows) - len(ok), "early_commits": sum(bool(r.get("early_commit")) for r in ok)}
    for part in (*GATEWAY_PARTS, "caller_observed_ms"):
        values = [r[part] for r in ok if r.get(part) is not None]
        if values:
            out[part] = _percentiles(values)
    # A reprompt (an unsure reading: the second opinion ran, no early commit) and a decision the
    # caller acts on wait differently; both are reported.
    for name, keep in (("acted_on", lambda r: r.get("route") != "reprompt"), ("reprompted", lambda r: r.get("route") == "reprompt")):
        values = [r["end_of_speech_to_decision_ms"] for r in ok if keep(r) and r.get("end_of_speech_to_decision_ms") is not None]
        if values:
            out[f"end_of_speech_to_decision_ms_{name}"] = _percentiles(values)
    return out


def print_table(name: str, summary: dict) -> None:
    print(f"\n{name}: {summary['calls']} calls, {summary['failed']} failed, {summary['early_commits']} committed early")
    print(f"  {'part':<32}{'p50 ms':>10}{'p95 ms':>10}{'n':>5}")
    for part in (*GATEWAY_PARTS, "end_of_speech_to_decision_ms_acted_on", "end_of_speech_to_decision_ms_reprompted",
                 "caller_observed_ms"):
        if part in summary:
            s = summary[part]
            print(f"  {part:<32}{s['p50']:>10.1f}{s['p95']:>10.1f}{s['n']:>5}")


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=0, help="sequential calls (default: every clip once)")
    parser.add_argument("--concurrent", type=int, default=10, help="calls placed at once in the second run (0: none)")
    parser.add_argument("--early", choices=("both", "on", "off"), default="both",
                        help="early commit off, on (the default early_silence_ms), or each in turn")
    args = parser.parse_args()

    modes = ["off", "on"] if args.early == "both" else [args.early]
    report: dict = {
        "machine": machine(),
        "settings": {"asr_model": "base", "compute_type": "int8", "end_silence_ms": 600},
        "goal": {"p95_end_of_speech_to_decision_ms_one_call": GOAL_P95_MS, "with_early_commit": GOAL_EARLY_P95_MS},
        "early_commit": {},
    }
    with tempfile.TemporaryDirectory(prefix="puente-bench-") as tmp:
        workdir = Path(tmp)
        clips = build_clips(workdir)
        for mode in modes:
            # Consent is asked once per number and is a separate turn: measure the routing decision alone.
            endpointing = {"no_input_ms": 5000, **({"early_silence_ms": 0} if mode == "off" else {})}
            (workdir / mode).mkdir()
            gateway = start_gateway(workdir / mode, endpointing=endpointing, whatsapp={"consent": {"required": False}})
            try:
                sequential_clips = [clips[i % len(clips)] for i in range(args.calls or len(clips))]
                sequential = [place(gateway, clip) for clip in sequential_clips]
                batch = [clips[i % len(clips)] for i in range(args.concurrent)]
                concurrent = []
                if batch:
                    with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
                        concurrent = list(pool.map(lambda c: place(gateway, c), batch))
            finally:
                gateway.stop()
            report["early_commit"][mode] = {
                "sequential": {"summary": summarize(sequential), "calls": sequential},
                "concurrent": {"summary": summarize(concurrent), "calls": concurrent, "at_once": args.concurrent},
            }
    print(f"machine: {report['machine']['cores']} cores, {report['machine']['cpu']}")
    for mode, runs in report["early_commit"].items():
        print_table(f"early commit {mode}, one call at a time", runs["sequential"]["summary"])
        if runs["concurrent"]["calls"]:
            print_table(f"early commit {mode}, {args.concurrent} calls at once", runs["concurrent"]["summary"])
    print()
    for mode, runs in report["early_commit"].items():
        part = runs["sequential"]["summary"].get("end_of_speech_to_decision_ms", {})
        if part:
            goal = GOAL_EARLY_P95_MS if mode == "on" else GOAL_P95_MS
            verdict = "meets" if part["p95"] <= goal else "misses"
            print(f"early commit {mode}, one call: end of speech → decision p50 {part['p50']:.0f} ms, p95 {part['p95']:.0f} ms"
                  f" — {verdict} the {goal:.0f} ms goal")
        for row in runs["sequential"]["calls"] + runs["concurrent"]["calls"]:
            if "error" in row:
                print(f"  failed ({mode}): {row['clip']}: {row['error'][:200]}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwrote {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
