"""Capacity benchmark: how many concurrent calls one gateway holds, and where it bends.

    .venv/bin/python benchmarks/capacity.py [--levels 10,25,50,100,200,300] [--speakers 0.1]

Starts one real gateway (``start_gateway``: its own process, free loopback ports; ``sip.max_calls``
raised, ``routing.hold_timeout_s`` long so voice calls stay held) and drives it with SIPp
(Debian ``sip-tester``), level after level. At each level N:

* N − S **waiting callers** (one SIPp process) are placed at ``--cps`` and stay up, sending an
  unbroken RTP stream of µ-law silence (``play_pcap_audio``): they hear the greeting, say nothing,
  get the no-input prompt and the reprompt, are routed to voice and held (hold music) — the
  contact center's queue;
* once they are up, S = ``--speakers`` × N **speaking callers** (one SIPp process per clip) are
  placed over ``--speech-window`` seconds: silence while the greeting plays, then a real recorded
  Spanish sentence (Debian asterisk-core-sounds-es-wav), then silence. Their ends of speech are
  spread over that window, so they reach Whisper within the same few seconds.

The RTP is a pcap of RTP/PCMU packets built from the recordings (8 kHz µ-law, 20 ms, in a
temporary directory) by ``gateway.dev.sipp``, which also runs the SIPp processes.

Per level it prints one row and records in JSON: calls offered / answered / failed (SIPp's counts,
the SIP codes of failures from its error log), the most calls the gateway held at once
(``/healthz`` ``active_calls``), end of speech → decision p50/p95 from the gateway's own records
(``GET /v1/calls/{id}``: ``decisions[].timings``; the part not spent endpointing, in Whisper,
NLU or routing is shown as "wait": the ASR queue, the event loop and the store), how many speakers
were decided without Whisper because it was too far behind ("sat": the gateway's ``asr.max_wait_s``,
``--max-wait-s``; they take the voice route at once instead of queueing), frames received
vs expected (waiting callers: call-audio ms between their two no-input events over the wall time
between them; speaking callers: the utterance's ``speech_end_ms`` over where the clip's speech
ends in the stream) and the datagrams the kernel dropped at the gateway's own UDP sockets (RTP,
RTCP, SIP: /proc/net/udp, per socket), gateway CPU % (of one core; /proc/<pid>/stat) and RSS while the waiting
callers are held and while the speakers are heard, ``/healthz`` round trip p95 (the HTTP API
shares the gateway's event loop: a proxy for event-loop lag), and SIPp's own CPU (it shares the
machine). The cost per held call is the CPU and RSS above the idle gateway, divided by N. While
the speakers talk, ``--flood`` INVITEs arrive at once from one untrusted source (127.0.0.2, never
ACKing): the row's note says what they were answered (per-source admission: 503 + Retry-After
over the INVITE rate, 486 over the per-source cap) and how fast, while the legitimate callers'
failures are counted as before.

It stops after the last level, at the first level with failed calls, or past the knee (CPU
saturated, or p95 end of speech → decision over ``--max-p95-s``), and names the first limit
reached. Writes ``benchmarks/results/capacity.json``. All traffic is on 127.0.0.1; every SIPp run
has a global timeout and the whole run stops by itself.
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
import threading
import time
import wave
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from gateway.dev.flood import FLOOD_HOST, burst  # noqa: E402
from gateway.dev.harness import RunningGateway, start_gateway  # noqa: E402
from gateway.dev.sipp import Sipp, mulaw, write_rtp_pcap  # noqa: E402
from models.audio import float32_to_pcm16, frames_from_pcm, load_audio  # noqa: E402
from models.vad import WebRtcVad  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results" / "capacity.json"
SOUNDS = Path("/usr/share/asterisk/sounds/es")
CLIPS = ("vm-reachoper", "queue-youarenext", "vm-nobodyavail", "vm-dialout")  # real recorded Spanish speech
EXTENSION = "es"  # a Spanish-only line: Whisper is told the language
GREETING_S = 5.5  # the speakers stay silent while the greeting (4.9 s, es) plays, as callers do
SPEECH_TAIL_S = 20.0  # silence after the clip: the call waits this long for its decision
NO_INPUT_MS = 4000
MAX_CALLS = 320
SATURATED = "speech recognition is saturated"  # the reason of a decision taken without Whisper (gateway/call/speech.py)
GOALS = {"held_calls_zero_failures": 200, "speakers_at_once": 20, "p95_end_of_speech_to_decision_s": 1.5}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# --- RTP/PCMU pcap -------------------------------------------------------------------------


def read_wav_8k(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (8000, 1, 2):
            raise ValueError(f"{path}: need 8 kHz mono 16-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def speech_end_s(path: Path) -> float:
    """Where the clip's speech ends, by webrtcvad at the gateway's 16 kHz (as latency.py finds it)."""
    vad = WebRtcVad(2)
    voiced = [f.end_ms for f in frames_from_pcm(float32_to_pcm16(load_audio(str(path)))) if vad.is_speech(f)]
    return (voiced[-1] if voiced else 0) / 1000


def build_media(workdir: Path, hold_s: float) -> tuple[Path, list[dict]]:
    """The waiting callers' silence and the speakers' greeting-silence + clip + silence, as pcaps."""
    silence = workdir / "silence.pcap"
    write_rtp_pcap(silence, b"\xff" * int(hold_s * 8000), ssrc=0x5117E0CE)
    clips = []
    for i, name in enumerate(CLIPS):
        wav = SOUNDS / f"{name}.wav"
        if not wav.is_file():
            continue
        samples = read_wav_8k(wav)
        audio = (b"\xff" * int(GREETING_S * 8000) + mulaw(samples) + b"\xff" * int(SPEECH_TAIL_S * 8000))
        pcap = workdir / f"speech-{name}.pcap"
        write_rtp_pcap(pcap, audio, ssrc=0x5EEC0000 + i)
        clips.append({"name": f"es/{name}", "pcap": pcap, "clip_s": round(len(samples) / 8000, 2),
                      "expected_speech_end_ms": round((GREETING_S + speech_end_s(wav)) * 1000),
                      "call_s": GREETING_S + len(samples) / 8000 + SPEECH_TAIL_S})
    if not clips:
        raise SystemExit(f"no speech clips under {SOUNDS} (Debian asterisk-core-sounds-es-wav)")
    return silence, clips


def wait_all(sipps: list[Sipp], gateway: RunningGateway) -> None:
    """Until every SIPp has finished; if the gateway dies meanwhile, SIPp is stopped at once."""
    deadline = time.monotonic() + max(s.budget_s for s in sipps) + 15
    while time.monotonic() < deadline and any(s.proc.poll() is None for s in sipps):
        if gateway.process.poll() is not None:
            time.sleep(2)  # let SIPp see what it sees, then stop it
            break
        time.sleep(0.25)
    for sipp in sipps:
        sipp.stop()


# --- sampling the gateway -----------------------------------------------------------------


def proc_cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def machine_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK


def proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def udp_drops(pid: int) -> dict[int, int]:
    """Datagrams the kernel dropped at each of the process's UDP sockets (RTP, RTCP, SIP) because
    its receive buffer was full: socket inode → the ``drops`` column of /proc/net/udp{,6}."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except (FileNotFoundError, ProcessLookupError):
        return {}
    drops = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 13 and int(cols[9]) in inodes:
                drops[int(cols[9])] = int(cols[12])
    return drops


class Sampler(threading.Thread):
    """Every 0.5 s: the gateway's CPU seconds and RSS, ``/healthz`` round trip and ``active_calls``,
    and the kernel's drops at the gateway's UDP sockets (kept per socket: a call's RTP socket
    closes with the call, and its count with it)."""

    def __init__(self, gateway: RunningGateway) -> None:
        super().__init__(daemon=True)
        self.gateway, self.pid = gateway, gateway.process.pid
        self.samples: list[dict] = []
        self.watched: dict[int, float] = {}  # SIPp pids → their last CPU seconds seen
        self._drops: dict[int, int] = {}  # the gateway's UDP socket inode → drops seen there
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._halt.is_set():
                t = time.monotonic()
                active, rtt = None, None
                try:
                    health = client.get(self.gateway.api + "/healthz").json()
                    rtt = (time.monotonic() - t) * 1000
                    active = health.get("active_calls")
                except (httpx.HTTPError, ValueError):
                    pass
                for pid in list(self.watched):
                    cpu = proc_cpu_s(pid)
                    if cpu is not None:
                        self.watched[pid] = cpu
                self._drops.update(udp_drops(self.pid))
                self.samples.append({"t": t, "cpu_s": proc_cpu_s(self.pid), "rss_mb": proc_rss_mb(self.pid),
                                     "machine_busy_s": machine_busy_s(), "healthz_ms": rtt, "active": active,
                                     "udp_drops": sum(self._drops.values())})
                self._halt.wait(max(0.0, 0.5 - (time.monotonic() - t)))

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def window(self, start: float, end: float) -> dict:
        """CPU % (of one core) and mean RSS between two monotonic times; healthz p95; most calls up."""
        inside = [s for s in self.samples if start <= s["t"] <= end and s["cpu_s"] is not None and s["rss_mb"] is not None]
        out: dict = {"seconds": round(end - start, 1)}
        if len(inside) >= 2:
            first, last = inside[0], inside[-1]
            out["cpu_pct"] = round(100 * (last["cpu_s"] - first["cpu_s"]) / (last["t"] - first["t"]), 1)
            out["rss_mb"] = round(float(np.mean([s["rss_mb"] for s in inside])), 1)
            out["machine_cpu_pct"] = round(100 * (last["machine_busy_s"] - first["machine_busy_s"]) / (last["t"] - first["t"]), 1)
        rtts = [s["healthz_ms"] for s in inside if s["healthz_ms"] is not None]
        if rtts:
            out["healthz_p95_ms"] = round(float(np.percentile(rtts, 95)), 1)
        actives = [s["active"] for s in inside if s["active"] is not None]
        out["max_active"] = max(actives) if actives else None
        if len(inside) >= 2:
            out["udp_drops"] = inside[-1]["udp_drops"] - inside[0]["udp_drops"]
        return out

    def wait_active(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.samples and self.samples[-1]["active"] is not None and predicate(self.samples[-1]["active"]):
                return True
            time.sleep(0.25)
        return False


# --- the gateway's records ------------------------------------------------------------------


def records(gateway: RunningGateway, tags: list[str]) -> list[dict]:
    """Every call record whose SIP Call-ID starts with one of ``tags``."""
    rows = gateway.get("/v1/calls", limit=500)
    picked = [r for r in rows if any(r["sip_call_id"].startswith(f"{t}-") for t in tags)]
    with httpx.Client(timeout=30) as client:
        return [client.get(f"{gateway.api}/v1/calls/{r['call_id']}").raise_for_status().json() for r in picked]


def db_records(gateway: RunningGateway, tags: list[str]) -> list[dict]:
    """After a gateway crash: what its SQLite store holds of these calls (no events, utterances, decisions)."""
    import sqlite3

    with sqlite3.connect(gateway.db_path) as db:
        rows = db.execute("select id, sip_call_id, state, outcome from calls").fetchall()
    return [{"call_id": i, "sip_call_id": sid, "state": state, "outcome": outcome, "events": [], "utterances": [],
             "decisions": []} for i, sid, state, outcome in rows if any(sid.startswith(f"{t}-") for t in tags)]


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def frame_ratio_waiting(record: dict) -> float | None:
    """Call-audio ms between the two no-input events over the wall time between them (1.0: no gaps)."""
    events = [e for e in record["events"] if e["type"] == "no_input"]
    if len(events) < 2:
        return None
    audio_ms = events[1]["data"]["at_ms"] - events[0]["data"]["at_ms"]
    wall_ms = (_ts(events[1]["at"]) - _ts(events[0]["at"])) * 1000
    return audio_ms / wall_ms if wall_ms > 0 else None


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarize_speakers(recs: list[dict], expected_end_ms: dict[str, int]) -> dict:
    e2d, asr, wait, endpointing, ratios, routes = [], [], [], [], [], {}
    undecided = saturated = 0
    for rec in recs:
        decided = [d for d in rec["decisions"] if d["timings"].get("end_of_speech_to_decision_ms") is not None]
        if not decided:
            undecided += 1
        for d in decided[:1]:
            saturated += d["reason"].startswith(SATURATED)
            t = d["timings"]
            e2d.append(t["end_of_speech_to_decision_ms"])
            asr.append(t.get("transcription_ms", 0.0))
            endpointing.append(t.get("endpointing_ms", 0.0))
            parts = sum(t.get(k, 0.0) for k in ("endpointing_ms", "transcription_ms", "classification_ms", "routing_ms"))
            wait.append(max(0.0, t["end_of_speech_to_decision_ms"] - parts))
            routes[d["route"]] = routes.get(d["route"], 0) + 1
        tag = rec["sip_call_id"].split("-", 1)[0]
        if rec["utterances"] and tag in expected_end_ms:
            ratios.append(rec["utterances"][0]["speech_end_ms"] / expected_end_ms[tag])
    return {
        "calls": len(recs), "decided": len(e2d), "undecided": undecided, "routes": routes,
        "asr_saturated": saturated,  # decided without Whisper: it was too far behind (asr.max_wait_s)
        "end_of_speech_to_decision_ms": {"p50": pct(e2d, 50), "p95": pct(e2d, 95), "max": pct(e2d, 100)},
        "transcription_ms": {"p50": pct(asr, 50), "p95": pct(asr, 95)},
        "endpointing_ms": {"p50": pct(endpointing, 50), "p95": pct(endpointing, 95)},
        "wait_ms": {"p50": pct(wait, 50), "p95": pct(wait, 95)},
        "frames_at_speech_end_vs_expected": {"min": round(min(ratios), 3) if ratios else None,
                                             "median": round(float(np.median(ratios)), 3) if ratios else None,
                                             "n": len(ratios)},
    }


def summarize_waiting(recs: list[dict]) -> dict:
    ratios = [r for r in (frame_ratio_waiting(rec) for rec in recs) if r is not None]
    outcomes: dict[str, int] = {}
    for rec in recs:
        key = rec.get("outcome") or rec.get("state") or "?"
        outcomes[key] = outcomes.get(key, 0) + 1
    held = sum(1 for rec in recs if any(e["type"] == "hold" for e in rec["events"]))
    return {
        "calls": len(recs), "reached_hold": held, "outcomes": outcomes,
        "frames_vs_wall_between_no_inputs": {
            "min": round(min(ratios), 3) if ratios else None, "median": round(float(np.median(ratios)), 3) if ratios else None,
            "max": round(max(ratios), 3) if ratios else None, "n": len(ratios)},
    }


# --- one level ------------------------------------------------------------------------------


def run_level(index: int, level: int, args: argparse.Namespace, gateway: RunningGateway, sampler: Sampler,
              workdir: Path, silence: Path, clips: list[dict], idle: dict) -> dict:
    speakers = max(1, round(level * args.speakers)) if args.speakers > 0 else 0
    waiting = level - speakers
    ramp_s = waiting / args.cps
    speech_phase_s = args.speech_window + max(c["call_s"] for c in clips) + 2
    hold_s = ramp_s + args.settle + args.hold_window + speech_phase_s + 5
    print(f"\nlevel {level}: {waiting} waiting + {speakers} speaking callers", flush=True)
    sampler.watched.clear()

    before = sampler.window(time.monotonic() - 3, time.monotonic())  # RSS left by the levels before
    t0 = time.monotonic()
    waiters = Sipp(workdir / f"L{level}", gateway.sip_port, f"w{level}", silence, waiting, args.cps, hold_s,
                   f"551{index % 10}0", EXTENSION)
    sampler.watched[waiters.proc.pid] = 0.0
    all_up = sampler.wait_active(lambda n: n >= waiting, ramp_s + 20)
    time.sleep(args.settle)
    t_hold = time.monotonic()
    time.sleep(args.hold_window)
    t_speech = time.monotonic()
    talkers: list[Sipp] = []
    for i, clip in enumerate(clips if gateway.process.poll() is None else []):
        share = speakers // len(clips) + (1 if i < speakers % len(clips) else 0)
        if share:
            talker = Sipp(workdir / f"L{level}", gateway.sip_port, f"s{level}c{i}", clip["pcap"], share,
                          max(share / args.speech_window, 0.2), clip["call_s"], f"551{index % 10}{i + 1}", EXTENSION)
            talker.expected_speech_end_ms = clip["expected_speech_end_ms"]
            sampler.watched[talker.proc.pid] = 0.0
            talkers.append(talker)
    flood = flood_during_speech(gateway, args.flood) if args.flood and gateway.process.poll() is None else None
    if talkers:
        wait_all(talkers, gateway)
    t_speech_end = time.monotonic()
    wait_all([waiters], gateway)
    if gateway.process.poll() is None:
        sampler.wait_active(lambda n: n == 0, 30)
    t_end = time.monotonic()
    crashed = gateway.process.poll()

    hold = sampler.window(t_hold, t_speech)
    speech = sampler.window(t_speech, t_speech_end)
    whole = sampler.window(t0, t_end)
    sipp_counts = [waiters.counts()] + [t.counts() for t in talkers]
    offered = sum(c["offered"] for c in sipp_counts)
    failed = sum(c["offered"] - c.get("successful", 0) for c in sipp_counts)
    successful = sum(c.get("successful", 0) for c in sipp_counts)
    codes: dict[str, int] = {}
    for c in sipp_counts:
        for code, n in c["failure_codes"].items():
            codes[code] = codes.get(code, 0) + n
    sipp_cpu_s = sum(sampler.watched.values())

    tags = [waiters.tag] + [t.tag for t in talkers]
    try:
        recs = records(gateway, tags) if crashed is None else db_records(gateway, tags)
    except httpx.HTTPError:  # the gateway died while its records were read
        time.sleep(1)
        crashed = gateway.process.poll()
        recs = db_records(gateway, tags)
    waiting_recs = [r for r in recs if r["sip_call_id"].startswith(f"{waiters.tag}-")]
    speaking_recs = [r for r in recs if not r["sip_call_id"].startswith(f"{waiters.tag}-")]
    speak = summarize_speakers(speaking_recs, {t.tag: t.expected_speech_end_ms for t in talkers})
    wait = summarize_waiting(waiting_recs)

    per_call = {}
    if hold.get("cpu_pct") is not None and idle.get("cpu_pct") is not None and waiting:
        per_call = {"cpu_pct": round((hold["cpu_pct"] - idle["cpu_pct"]) / waiting, 3),
                    "rss_mb": round((hold["rss_mb"] - before.get("rss_mb", idle["rss_mb"])) / waiting, 2)}
    row = {
        "level": level, "waiting": waiting, "speakers": speakers, "all_waiting_up": all_up,
        "offered": offered, "answered": len({r["sip_call_id"] for r in recs}), "successful": successful, "failed": failed, "failure_codes": codes,
        "held_max": whole.get("max_active"), "hold_window": hold, "speech_window": speech,
        "gateway_udp_drops": whole.get("udp_drops"),  # datagrams the kernel dropped at the gateway's sockets
        "rss_before_mb": before.get("rss_mb"), "per_held_call": per_call, "speaking": speak, "waiting_callers": wait,
        "sipp": sipp_counts, "sipp_cpu_pct": round(100 * sipp_cpu_s / max(1e-9, t_end - t0), 1),
        "seconds": round(t_end - t0, 1),
        "flood": flood,
    }
    if crashed is not None:
        row["gateway_exit"] = crashed
        row["gateway_crash"] = {
            "exit": crashed, "signal": -crashed if crashed < 0 else None,
            "states_of_answered_calls": {st: sum(1 for r in recs if r["state"] == st) for st in {r["state"] for r in recs}},
            "log_tail": gateway.log_path.read_text(errors="replace")[-2000:],
        }
        print(f"      the gateway exited with {crashed} during this level "
              f"({row['gateway_crash']['states_of_answered_calls']} answered calls by state)")
    print(HEADER)
    print_row(row)
    return row


def flood_during_speech(gateway: RunningGateway, count: int) -> dict:
    """``count`` INVITEs at once from one untrusted source (FLOOD_HOST, never ACKing), while the
    level's callers speak: what it was answered, how fast the refusals came, and what the gateway
    counted (``/healthz`` ``sip.invites``)."""
    before = gateway.get("/healthz")["sip"]["invites"]
    flood = burst(gateway.sip_port, count, wait_s=5.0)
    after = gateway.get("/healthz")["sip"]["invites"]
    codes: dict[str, int] = {}
    for answer in flood.finals.values():
        codes[str(answer.code)] = codes.get(str(answer.code), 0) + 1
    refusal_ms = [1000 * (a.at - a.sent_at) for a in flood.finals.values() if a.code >= 400]
    return {
        "source": FLOOD_HOST, "invites": count, "answered": len(flood.finals), "codes": codes,
        "refusal_ms": {"p50": pct(refusal_ms, 50), "p95": pct(refusal_ms, 95), "max": pct(refusal_ms, 100)},
        "gateway_counted": {k: after[k] - before[k] for k in after},
    }


# --- report ---------------------------------------------------------------------------------

HEADER = (f"{'calls':>5} {'offer':>5} {'answ':>5} {'fail':>4} {'held':>4} │ {'e2d p50':>7} {'p95':>6} {'asr p95':>7} "
          f"{'wait p95':>8} {'dec':>5} {'sat':>3} │ {'frames':>6} │ {'cpu hold':>8} {'cpu talk':>8} {'rss MB':>6} "
          f"{'hz p95':>6} │ {'/call cpu%':>10} {'MB':>5} │ {'sipp%':>5} {'host%':>5}")


def _f(value, fmt: str, width: int) -> str:
    return f"{value:{width}{fmt}}" if value is not None else f"{'-':>{width}}"


def print_row(row: dict) -> None:
    s, w = row["speaking"], row["waiting_callers"]
    e2d = s["end_of_speech_to_decision_ms"]
    frames = w["frames_vs_wall_between_no_inputs"]["min"]
    print(f"{row['level']:>5} {row['offered']:>5} {row['answered']:>5} {row['failed']:>4} {_f(row['held_max'], 'd', 4)} │ "
          f"{_f(e2d['p50'], '.0f', 7)} {_f(e2d['p95'], '.0f', 6)} {_f(s['transcription_ms']['p95'], '.0f', 7)} "
          f"{_f(s['wait_ms']['p95'], '.0f', 8)} {s['decided']:>2}/{s['calls']:<2} {s['asr_saturated']:>3} │ {_f(frames, '.3f', 6)} │ "
          f"{_f(row['hold_window'].get('cpu_pct'), '.0f', 8)} {_f(row['speech_window'].get('cpu_pct'), '.0f', 8)} "
          f"{_f(row['hold_window'].get('rss_mb'), '.0f', 6)} {_f(row['speech_window'].get('healthz_p95_ms'), '.0f', 6)} │ "
          f"{_f(row['per_held_call'].get('cpu_pct'), '.2f', 10)} {_f(row['per_held_call'].get('rss_mb'), '.2f', 5)} │ "
          f"{row['sipp_cpu_pct']:>5.0f} {_f(row['speech_window'].get('machine_cpu_pct'), '.0f', 5)}", flush=True)
    print(f"      the kernel dropped {row['gateway_udp_drops']} datagrams at the gateway's UDP sockets (RTP, RTCP, SIP) "
          f"during the level")
    if row["failure_codes"]:
        print(f"      failures: {row['failure_codes']}")
    if row.get("flood"):
        f = row["flood"]
        print(f"      flood from {f['source']} during the speech: {f['invites']} INVITEs → {f['codes']} "
              f"({f['invites'] - f['answered']} unanswered; refusals p50 {_f(f['refusal_ms']['p50'], '.0f', 0)} ms, "
              f"p95 {_f(f['refusal_ms']['p95'], '.0f', 0)} ms); the legitimate callers above: {row['failed']} failed")


def should_stop(row: dict, args: argparse.Namespace, cores: int) -> str | None:
    """Why ramping further would only measure an overloaded node, or None."""
    e2d = row["speaking"]["end_of_speech_to_decision_ms"]["p95"]
    cpu = max(row["hold_window"].get("cpu_pct") or 0, row["speech_window"].get("cpu_pct") or 0)
    if row["failed"] or row["answered"] < row["offered"]:
        return f"{row['failed']} failed calls"
    if cpu >= 90 * cores or (row["speech_window"].get("machine_cpu_pct") or 0) >= 95 * cores:
        return "CPU saturated"
    if e2d is not None and e2d > args.stop_p95_s * 1000:
        return f"p95 end of speech → decision over {args.stop_p95_s:.1f} s"
    if row["speaking"]["undecided"]:
        return "speaking callers left without a decision"
    return None


def knee(rows: list[dict], args: argparse.Namespace, cores: int) -> dict:
    """The first level that misses, and what ran out there."""
    for row in rows:
        e2d = row["speaking"]["end_of_speech_to_decision_ms"]["p95"]
        reasons = []
        if "gateway_exit" in row:
            reasons.append(f"the gateway process died (exit {row['gateway_exit']}) with "
                           f"{row['answered']} of {row['offered']} calls answered")
        if row["failed"] or row["answered"] < row["offered"]:
            codes = row["failure_codes"] or {"?": row["failed"]}
            reasons.append(f"call slots/signalling: {row['failed']} failed ({codes})")
        cpu = max(row["hold_window"].get("cpu_pct") or 0, row["speech_window"].get("cpu_pct") or 0)
        host = row["speech_window"].get("machine_cpu_pct") or 0
        if cpu >= 90 * cores:
            reasons.append(f"CPU: gateway at {cpu:.0f} % of {cores * 100} %")
        elif host >= 95 * cores:
            reasons.append(f"CPU: machine at {host:.0f} % of {cores * 100} % (gateway {cpu:.0f} %, SIPp {row['sipp_cpu_pct']:.0f} %)")
        frames = row["waiting_callers"]["frames_vs_wall_between_no_inputs"]["min"]
        if frames is not None and frames < 0.97:
            reasons.append(f"media clock (pjmedia's conference-bridge clock thread, one for all calls): a waiting call got only {frames:.2f} of its 20 ms frames")
        if e2d is not None and e2d > args.max_p95_s * 1000:
            s = row["speaking"]
            first = rows[0]["speaking"]["transcription_ms"]["p95"]
            reasons.append(
                f"CPU for Whisper: p95 end of speech → decision {e2d:.0f} ms > {args.max_p95_s * 1000:.0f} ms goal; "
                f"Whisper p95 {s['transcription_ms']['p95']:.0f} ms (at {rows[0]['level']} calls {first:.0f} ms: "
                f"it shares 2 cores with the held calls' media and SIPp), ASR queue/loop wait p95 {s['wait_ms']['p95']:.0f} ms")
        if row["speaking"]["undecided"]:
            reasons.append(f"{row['speaking']['undecided']} speaking callers got no decision before hanging up")
        if row["speaking"]["asr_saturated"]:
            reasons.append(f"Whisper's wait bound (asr.max_wait_s {args.max_wait_s:g}): {row['speaking']['asr_saturated']} "
                           f"of {row['speaking']['calls']} speaking callers were routed to voice without a transcript")
        hz = row["speech_window"].get("healthz_p95_ms")
        if hz is not None and hz > 250:
            reasons.append(f"event loop: /healthz p95 {hz:.0f} ms")
        if reasons:
            return {"level": row["level"], "first_limit": reasons[0], "all": reasons}
    return {"level": None, "first_limit": f"none reached up to {rows[-1]['level'] if rows else 0} calls"}


def cost_per_held_call(rows: list[dict]) -> dict:
    """Least-squares slope of the gateway's CPU % and RSS over the waiting calls held, across levels."""
    points = [(r["waiting"], r["hold_window"].get("cpu_pct"), r["hold_window"].get("rss_mb")) for r in rows
              if r["hold_window"].get("cpu_pct") is not None and r["all_waiting_up"]]
    if len({n for n, _, _ in points}) < 2:
        return {}
    n = np.array([p[0] for p in points], dtype=float)
    cpu_slope, cpu_at_zero = np.polyfit(n, [p[1] for p in points], 1)
    rss_slope, rss_at_zero = np.polyfit(n, [p[2] for p in points], 1)
    return {"cpu_pct": round(float(cpu_slope), 3), "rss_mb": round(float(rss_slope), 3),
            "cpu_pct_at_zero_calls": round(float(cpu_at_zero), 1), "rss_mb_at_zero_calls": round(float(rss_at_zero), 1),
            "levels": [p[0] for p in points], "method": "slope of hold-window CPU %/RSS over waiting calls, across levels"}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), None)
    sipp = subprocess.run(["sipp", "-v"], capture_output=True, text=True, check=False).stdout
    version = re.search(r"SIPp v[\w.\-]+", sipp)
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_mb": mem, "python": platform.python_version(),
            "sipp": version.group(0) if version else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="10,25,50,100,200,300", help="concurrent calls per level")
    parser.add_argument("--speakers", type=float, default=0.1, help="share of each level's callers who speak")
    parser.add_argument("--speech-window", type=float, default=4.0, help="seconds over which the speakers start")
    parser.add_argument("--cps", type=float, default=25.0, help="new waiting calls per second")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the waiting calls are up")
    parser.add_argument("--hold-window", type=float, default=10.0, help="seconds of CPU/RSS sampling with only waiting callers")
    parser.add_argument("--max-p95-s", type=float, default=GOALS["p95_end_of_speech_to_decision_s"],
                        help="the latency goal: the first level whose p95 end of speech → decision is over it is the knee")
    parser.add_argument("--stop-p95-s", type=float, default=3.0,
                        help="the ramp stops after a level with failed calls, a saturated CPU or a p95 over this")
    parser.add_argument("--max-minutes", type=float, default=9.0, help="no new level starts after this")
    parser.add_argument("--flood", type=int, default=200,
                        help="INVITEs sent at once from one untrusted source (127.0.0.2) during each level's speech; 0: none")
    parser.add_argument("--max-wait-s", type=float, default=3.0,
                        help="the gateway's asr.max_wait_s: an utterance expected to wait longer for Whisper takes the voice route")
    parser.add_argument("--all-levels", action="store_true", help="run every level even past the knee")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, help="keep SIPp's files, the pcaps and the gateway's log in this directory")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if shutil.which("sipp") is None:
        raise SystemExit("SIPp is not installed (Debian sip-tester)")
    info = machine()
    cores = info["nproc"] or 1
    print(f"machine: {info['nproc']} cores, {info['cpu']}, {info['mem_mb']} MB; {info['sipp']}")

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="puente-capacity-") as tmp:
        workdir = Path(tmp)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep
        longest_ramp = max(levels) * (1 - args.speakers) / args.cps
        silence, clips = build_media(workdir, longest_ramp + args.settle + args.hold_window + args.speech_window + 60)
        gateway = start_gateway(
            workdir, sip={"max_calls": MAX_CALLS}, routing={"hold_timeout_s": 3600},
            endpointing={"no_input_ms": NO_INPUT_MS}, whatsapp={"consent": {"required": False}},
            asr={"max_wait_s": args.max_wait_s},
        )
        sampler = Sampler(gateway)
        sampler.start()
        started = time.monotonic()
        try:
            health = gateway.get("/healthz")
            # One speaking call first: Whisper's first utterance allocates its buffers (RSS) and is slow.
            shortest = min(clips, key=lambda c: c["clip_s"])
            warm = Sipp(workdir / "warm-up", gateway.sip_port, "warm", shortest["pcap"], 1, 1.0,
                        GREETING_S + shortest["clip_s"] + 4, "5519999", EXTENSION)
            warm.wait()
            sampler.wait_active(lambda n: n == 0, 15)
            time.sleep(6)
            now = time.monotonic()
            idle = sampler.window(now - 5, now)
            print(f"gateway idle: {idle.get('cpu_pct')} % CPU, {idle.get('rss_mb')} MB; holds "
                  f"{health['sip']['max_calls']} calls (pjsua2 cap {health['sip']['pjsua2']['max_calls']})", flush=True)
            for index, level in enumerate(levels):
                if level > health["sip"]["max_calls"]:
                    print(f"level {level} is above this gateway's {health['sip']['max_calls']} calls: stop")
                    break
                row = run_level(index, level, args, gateway, sampler, workdir, silence, clips, idle)
                rows.append(row)
                if gateway.process.poll() is not None:
                    print(f"the gateway exited ({gateway.process.returncode}): stop")
                    break
                if time.monotonic() - started > args.max_minutes * 60:
                    print(f"over --max-minutes {args.max_minutes}: stop")
                    break
                stop = should_stop(row, args, cores)
                if stop and not args.all_levels:
                    print(f"past the knee ({stop}): stop")
                    break
        finally:
            try:
                gateway.stop()
            finally:
                sampler.stop()
        elapsed = time.monotonic() - started

    found = knee(rows, args, cores)
    report = {
        "machine": info,
        "settings": {"asr_model": "base", "compute_type": "int8", "end_silence_ms": 600, "no_input_ms": NO_INPUT_MS,
                     "sip.max_calls": MAX_CALLS, "codec": "PCMU/8000", "line": EXTENSION, "levels": levels,
                     "speakers_share": args.speakers, "speech_window_s": args.speech_window, "cps": args.cps,
                     "clips": [{k: c[k] for k in ("name", "clip_s", "expected_speech_end_ms")} for c in clips]},
        "goals": GOALS, "idle": idle, "levels": rows, "knee": found,
        "cost_per_held_call": cost_per_held_call(rows), "seconds": round(elapsed, 1),
    }
    print(f"\nmachine: {info['nproc']} cores, {info['cpu']}; gateway idle {idle.get('cpu_pct')} % CPU, {idle.get('rss_mb')} MB")
    print(HEADER)
    for row in rows:
        print_row(row)
    cost = report["cost_per_held_call"]
    if cost:
        print(f"cost per held call (slope over levels {cost['levels']}): {cost['cpu_pct']:.2f} % of a core, "
              f"{cost['rss_mb']:.2f} MB")
    print(f"knee: {found['first_limit']}" + (f" at {found['level']} calls" if found["level"] else ""))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"wrote {args.output.relative_to(REPO_ROOT) if args.output.is_relative_to(REPO_ROOT) else args.output}"
          f" ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
