"""Right route through real SIP calls: hidden caller sentences, per voice and per codec.

    .venv/bin/python -m benchmarks.routing [--voices espeak,kokoro] [--codecs pcmu,g722] [--concurrent 2]
                                          [--limit N] [--no-bias]

The sentences are ``benchmarks/data/callers.tsv``: 60 (two per intent and language), written for
this benchmark; none shares 70 % of its words with a training example (checked before the first call). Each voice set speaks
every sentence of its languages (rendered once and cached, as ``puente nlu augment`` does); each
rendering is played into a real SIP call (``puente call --wav … --codec …``) to a gateway with the
default settings: the bundled model, Whisper base int8, biasing on (``--no-bias``: off). The first
decision of a call counts:

* **right route**: the route the routing policy gives the sentence's true intent (``whatsapp`` or
  ``voice``; for ``out_of_scope``, ``reprompt``): what the caller needed;
* **right intent**: the decision's intent is the sentence's;
* **reprompted**: an in-scope caller was asked again (low confidence or heard as out of scope).

Prints one row per voice set and codec with the targets (right route ≥ 97 % with neural voices,
≥ 90 % with espeak-ng), and writes ``benchmarks/results/routing.json`` with every call.
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
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from gateway.config import Settings  # noqa: E402
from gateway.dev.harness import RunningGateway, start_gateway  # noqa: E402
from models.voices import VoiceLibrary, VoicesConfig, write_wav  # noqa: E402
from nlu import bundled_asr_paths, bundled_data_paths  # noqa: E402
from nlu.augment import subsample  # noqa: E402
from nlu.dataset import Example, read_examples  # noqa: E402
from nlu.text import tokens  # noqa: E402

CALLERS = REPO_ROOT / "benchmarks" / "data" / "callers.tsv"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "routing.json"
VOICE_SETS = {  # name → voice per language
    "espeak": {"es": "espeak:es-419", "en": "espeak:en-us"},
    "kokoro": {"es": "kokoro:em_santa", "en": "kokoro:af_heart"},
    "kokoro2": {"es": "kokoro:ef_dora", "en": "kokoro:am_michael"},
}
TARGETS = {"espeak": 90.0, "kokoro": 97.0, "kokoro2": 97.0}


# A sentence sharing this share of its words with a training example is a paraphrase of it, not hidden.
MAX_WORD_OVERLAP = 0.7


def hidden_sentences(limit: int | None) -> list[Example]:
    sentences = read_examples([CALLERS])
    trained = [set(tokens(e.text, drop_fillers=True)) for e in read_examples([*bundled_data_paths(), *bundled_asr_paths()])]
    leaked = []
    for e in sentences:
        words = set(tokens(e.text, drop_fillers=True))
        if max(len(words & t) / len(words | t) for t in trained) >= MAX_WORD_OVERLAP:
            leaked.append(e.text)
    if leaked:
        sys.exit(f"{CALLERS} is not hidden: {leaked} (nearly) repeat training examples")
    return subsample(sentences, limit, seed=0)


def render(sentences: list[Example], voice_set: str, workdir: Path) -> list[dict]:
    """Each sentence as a WAV in its language's voice (the speech cache makes reruns instant)."""
    library = VoiceLibrary(VoicesConfig())
    clips = []
    for i, e in enumerate(sentences):
        spec = VOICE_SETS[voice_set][e.language or "es"]
        audio = library.voice(spec).synthesize(e.text)
        wav = write_wav(audio, workdir / f"{voice_set}-{i}.wav")
        clips.append({"text": e.text, "intent": e.intent, "lang": e.language, "voice": spec, "wav": wav,
                      "duration_s": len(audio) / 16000})
    return clips


def expected_route(intent: str, settings: Settings) -> str:
    return "reprompt" if intent == "out_of_scope" else settings.routing.routes.get(intent, "voice")


def place(gateway: RunningGateway, clip: dict, codec: str, settings: Settings) -> dict:
    row = {k: clip[k] for k in ("text", "intent", "lang", "voice")} | {"codec": codec,
                                                                      "expected_route": expected_route(clip["intent"], settings)}
    hangup_after = clip["duration_s"] + 5.0  # the greeting, the sentence, the decision; what follows does not count
    try:
        result = gateway.call(clip["lang"], "--wav", str(clip["wav"]), "--codec", codec,
                              "--hangup-after", f"{hangup_after:.1f}", timeout=120)
    except Exception as exc:  # a failed call is reported, not fatal to the benchmark
        return row | {"error": str(exc)[:300]}
    if "error" in result:
        return row | {"error": str(result["error"])[:300]}
    decisions = result["record"].get("decisions") or []
    if not decisions:
        return row | {"error": "no decision", "transcript": result.get("transcript")}
    first = decisions[0]
    return row | {
        "transcript": result.get("transcript"), "negotiated": (result.get("caller") or {}).get("codec"),
        "route": first["route"], "decided_intent": first["intent"],
        "right_route": first["route"] == row["expected_route"], "right_intent": first["intent"] == clip["intent"],
        "reprompted": first["route"] == "reprompt" and clip["intent"] != "out_of_scope",
    }


def summarise(rows: list[dict]) -> dict:
    done = [r for r in rows if "error" not in r]
    n = len(rows)

    def share(key: str) -> float:
        return round(100 * sum(1 for r in done if r.get(key)) / n, 1) if n else 0.0

    return {"calls": n, "failed": n - len(done), "right_route": share("right_route"),
            "right_intent": share("right_intent"), "reprompted": share("reprompted")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voices", default="espeak,kokoro", help=f"voice sets, of {', '.join(VOICE_SETS)} (default %(default)s)")
    parser.add_argument("--codecs", default="pcmu,g722", help="codecs the caller offers, one per run (default %(default)s)")
    parser.add_argument("--concurrent", type=int, default=2, help="calls at once (default %(default)s)")
    parser.add_argument("--limit", type=int, help="at most N sentences per intent and language")
    parser.add_argument("--no-bias", action="store_true", help="the gateway does not bias Whisper (asr.biasing.enabled false)")
    args = parser.parse_args()
    sentences = hidden_sentences(args.limit)
    voice_sets = args.voices.split(",")
    codecs = args.codecs.split(",")
    settings = Settings()
    rows: list[dict] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="puente-routing-") as tmp:
        workdir = Path(tmp)
        clips = {v: render(sentences, v, workdir) for v in voice_sets}
        # Consent is its own turn, asked once per number: measure the routing decision alone.
        gateway = start_gateway(workdir, endpointing={"no_input_ms": 5000}, whatsapp={"consent": {"required": False}},
                                asr={"biasing": {"enabled": not args.no_bias}})
        try:
            with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
                for voice_set in voice_sets:
                    for codec in codecs:
                        batch = list(pool.map(lambda c: place(gateway, c, codec, settings), clips[voice_set]))
                        rows += [r | {"voice_set": voice_set} for r in batch]
                        s = summarise(batch)
                        print(f"  {voice_set:8} {codec:5} right route {s['right_route']:5.1f} %  ({s['failed']} failed)",
                              file=sys.stderr, flush=True)
        finally:
            gateway.stop()

    table = {f"{v}/{c}": summarise([r for r in rows if r["voice_set"] == v and r["codec"] == c])
             for v in voice_sets for c in codecs}
    # A run of some voice sets and codecs replaces those in the results file and keeps the others.
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if previous.get("settings", {}).get("biasing") == (not args.no_bias):
        rerun = set(table)
        table = {**{k: v for k, v in previous.get("results", {}).items() if k not in rerun}, **table}
        rows = [r for r in previous.get("calls", []) if f"{r['voice_set']}/{r['codec']}" not in rerun] + rows
    report = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "settings": {"asr_model": "base", "compute_type": "int8", "biasing": not args.no_bias,
                     "sentences": len(sentences), "concurrent": args.concurrent},
        "voice_sets": {v: VOICE_SETS[v] for v in sorted({k.split("/")[0] for k in table})}, "targets": TARGETS,
        "wall_s": round(time.time() - started), "results": table, "calls": rows,
    }
    print(f"\nRight route through real SIP calls, {len(sentences)} hidden sentences per run "
          f"(biasing {'on' if not args.no_bias else 'off'}; {os.cpu_count()} cores)")
    print(f"  {'voices/codec':<16}{'right route':>12}{'right intent':>14}{'reprompted':>12}{'failed':>8}{'target':>8}")
    for key, s in table.items():
        target = TARGETS[key.split("/")[0]]
        print(f"  {key:<16}{s['right_route']:>11.1f}%{s['right_intent']:>13.1f}%{s['reprompted']:>11.1f}%"
              f"{s['failed']:>8}{target:>7.0f}%")
    misses = [r for r in rows if not r.get("right_route")]
    for r in misses[:40]:
        print(f"  miss {r['voice_set']}/{r['codec']} [{r['intent']} → {r.get('decided_intent')}/{r.get('route')}] "
              f"{r['text']!r} heard {r.get('transcript')!r} {r.get('error', '')}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
