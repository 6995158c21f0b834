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

The RTP is a pcap of RTP/PCMU packets built here from the recordings (8 kHz µ-law, 20 ms, a
small pure-Python pcap writer, in a temporary directory); SIPp 3.6.1's ``rtp_stream`` sends
no RTP here, ``play_pcap_audio`` does.

Per level it prints one row and records in JSON: calls offered / answered / failed (SIPp's counts,
the SIP codes of failures from its error log), the most calls the gateway held at once
(``/healthz`` ``active_calls``), end of speech → decision p50/p95 from the gateway's own records
(``GET /v1/calls/{id}``: ``decisions[].timings``; the part not spent endpointing, in Whisper,
NLU or routing is shown as "wait": the ASR queue, the event loop and the store), frames received
vs expected (waiting callers: call-audio ms between their two no-input events over the wall time
between them; speaking callers: the utterance's ``speech_end_ms`` over where the clip's speech
ends in the stream), gateway CPU % (of one core; /proc/<pid>/stat) and RSS while the waiting
callers are held and while the speakers are heard, ``/healthz`` round trip p95 (the HTTP API
shares the gateway's event loop: a proxy for event-loop lag), and SIPp's own CPU (it shares the
machine). The cost per held call is the CPU and RSS above the idle gateway, divided by N.

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
import socket
import struct
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

from gateway.dev.harness import RunningGateway, free_port, start_gateway  # noqa: E402
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
PTIME_S = 0.020
GOALS = {"held_calls_zero_failures": 200, "speakers_at_once": 20, "p95_end_of_speech_to_decision_s": 1.5}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# --- RTP/PCMU pcap -------------------------------------------------------------------------


def mulaw(pcm: np.ndarray) -> bytes:
    """G.711 µ-law of 16-bit samples (the ITU-T reference encoder)."""
    x = pcm.astype(np.int32)
    sign = (x < 0).astype(np.int32) << 7
    x = np.minimum(np.where(x < 0, -x - 1, x), 32635) + 0x84
    exponent = np.clip(np.floor(np.log2(x)).astype(np.int32) - 7, 0, 7)
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def write_rtp_pcap(path: Path, ulaw: bytes, ssrc: int) -> int:
    """One RTP packet (PT 0, 160 samples) per 20 ms, Ethernet/IPv4/UDP, pcap timestamps 20 ms apart.

    SIPp replaces the addresses and ports with the call's and sends at the pcap's pace. Returns packets.
    """
    step = 160
    ulaw = ulaw + b"\xff" * (-len(ulaw) % step)
    with path.open("wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # LINKTYPE_ETHERNET
        count = len(ulaw) // step
        for n in range(count):
            rtp = struct.pack("!BBHII", 0x80, 0x80 if n == 0 else 0, n & 0xFFFF, (n * step) & 0xFFFFFFFF, ssrc)
            udp_payload = rtp + ulaw[n * step:(n + 1) * step]
            udp = struct.pack("!HHHH", 40000, 40000, 8 + len(udp_payload), 0) + udp_payload
            ip_header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
                                    socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1"))
            checksum = _ip_checksum(ip_header)
            ip_header = ip_header[:10] + struct.pack("!H", checksum) + ip_header[12:]
            frame = b"\x00" * 12 + b"\x08\x00" + ip_header + udp
            micros = round(n * PTIME_S * 1e6)
            out.write(struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)))
            out.write(frame)
    return count


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


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


# --- SIPp ----------------------------------------------------------------------------------

_FROM = "<sip:+52[field0]@[local_ip]:[local_port]>;tag=[pid]T[call_number]"
_TO = f"<sip:{EXTENSION}@[remote_ip]:[remote_port]>"


def scenario(tag: str, pcap: Path, hang_up_after_ms: int) -> str:
    """UAC: INVITE (PCMU only), ACK, play the pcap, then either answer the gateway's BYE or send ours."""
    headers = (f"From: {_FROM}\n      To: {_TO}[peer_tag_param]\n      Call-ID: [call_id]\n"
               f"      Contact: <sip:+52[field0]@[local_ip]:[local_port]>\n      Max-Forwards: 70")
    via = "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]"
    ruri = f"sip:{EXTENSION}@[remote_ip]:[remote_port]"
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="puente-capacity-{tag}">
  <send retrans="500">
    <![CDATA[

      INVITE {ruri} SIP/2.0
      {via}
      From: {_FROM}
      To: {_TO}
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:+52[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-Agent: puente-capacity
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- [pid][call_number] 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=ptime:20
      a=sendrecv

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[

      ACK {ruri} SIP/2.0
      {via}
      {headers}
      CSeq: 1 ACK
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
  <recv request="BYE" timeout="{hang_up_after_ms}" ontimeout="1"/>
  <send next="2">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <label id="1"/>
  <send retrans="500">
    <![CDATA[

      BYE {ruri} SIP/2.0
      {via}
      {headers}
      CSeq: 2 BYE
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <label id="2"/>
</scenario>
"""


_next_port = [61000]


def port_block() -> tuple[int, int]:
    """A SIP port and a media port for one SIPp, with the media port's neighbours free too (SIPp binds
    audio RTP/RTCP at ``-mp`` and video at ``-mp``+2): a range above the kernel's ephemeral ports and the
    gateway's RTP ports, handed out once per run."""
    while _next_port[0] < 65000:
        base = _next_port[0]
        _next_port[0] += 6
        if all(_port_free(base + k) for k in range(6)):
            return base + 5, base
    return free_port(), free_port() // 2 * 2


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


class Sipp:
    """One SIPp process placing ``calls`` calls at ``rate`` per second, each up ``hang_up_after_s``."""

    def __init__(self, workdir: Path, gateway: RunningGateway, tag: str, pcap: Path, calls: int, rate: float,
                 hang_up_after_s: float, number_prefix: str) -> None:
        self.tag, self.calls = tag, calls
        self.expected_speech_end_ms: int | None = None  # speakers: where the clip's speech ends in the stream
        self.dir = workdir / tag
        self.dir.mkdir(parents=True, exist_ok=True)
        xml = self.dir / "scenario.xml"
        xml.write_text(scenario(tag, pcap, round(hang_up_after_s * 1000)))
        numbers = self.dir / "numbers.csv"
        numbers.write_text("SEQUENTIAL\n" + "".join(f"{number_prefix}{i:05d};\n" for i in range(calls)))
        self.stat = self.dir / "stat.csv"
        self.errors = self.dir / "errors.log"
        self.budget_s = calls / rate + hang_up_after_s + 30
        sip_port, media_port = port_block()
        cmd = ["sipp", "-sf", str(xml), "-inf", str(numbers), "-i", "127.0.0.1", "-mi", "127.0.0.1",
               "-p", str(sip_port), "-mp", str(media_port), "-m", str(calls), "-l", str(calls),
               "-cid_str", f"{tag}-%u-%p@%s", "-r", f"{rate:.3f}", "-rp", "1000", "-timeout", f"{self.budget_s:.0f}", "-nostdin", "-aa",
               "-trace_stat", "-stf", str(self.stat), "-fd", "1", "-trace_err", "-error_file", str(self.errors),
               f"127.0.0.1:{gateway.sip_port}"]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=(self.dir / "screen.txt").open("w"),
                                     stderr=subprocess.STDOUT)

    def wait(self) -> int:
        try:
            return self.proc.wait(max(1.0, self.budget_s + 15 - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def counts(self) -> dict:
        """SIPp's cumulative counters (its last statistics line) and the SIP codes of failed calls."""
        out: dict = {"offered": self.calls, "exit": self.proc.poll()}
        lines = self.stat.read_text(errors="replace").splitlines() if self.stat.exists() else []
        if len(lines) >= 2:
            row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
            for key, name in (("OutgoingCall(C)", "placed"), ("SuccessfulCall(C)", "successful"),
                              ("FailedCall(C)", "failed"), ("FailedMaxUDPRetrans(C)", "udp_retrans"),
                              ("FailedUnexpectedMessage(C)", "unexpected"), ("FailedCallRejected(C)", "rejected"),
                              ("FailedCmdNotSent(C)", "not_sent"), ("FailedRegexpDoesntMatch(C)", "regexp"),
                              ("FailedOutboundCongestion(C)", "congestion"), ("FailedTimeoutOnRecv(C)", "recv_timeout")):
                if key in row and row[key].strip().isdigit():
                    out[name] = int(row[key])
        codes: dict[str, int] = {}
        if self.errors.exists():
            text = self.errors.read_text(errors="replace")
            for match in re.finditer(r"received '?SIP/2\.0 (\d{3})", text):
                codes[match.group(1)] = codes.get(match.group(1), 0) + 1
            retrans = len(re.findall(r"Max UDP retransmission", text, re.IGNORECASE))
            if retrans:
                codes["no answer (UDP retrans)"] = retrans
        if out.get("placed", 0) < self.calls:
            codes["not placed (SIPp error, see its screen)"] = self.calls - out.get("placed", 0)
        out["failure_codes"] = codes
        return out


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


class Sampler(threading.Thread):
    """Every 0.5 s: the gateway's CPU seconds and RSS, ``/healthz`` round trip and ``active_calls``."""

    def __init__(self, gateway: RunningGateway) -> None:
        super().__init__(daemon=True)
        self.gateway, self.pid = gateway, gateway.process.pid
        self.samples: list[dict] = []
        self.watched: dict[int, float] = {}  # SIPp pids → their last CPU seconds seen
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
                self.samples.append({"t": t, "cpu_s": proc_cpu_s(self.pid), "rss_mb": proc_rss_mb(self.pid),
                                     "machine_busy_s": machine_busy_s(), "healthz_ms": rtt, "active": active})
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
    undecided = 0
    for rec in recs:
        decided = [d for d in rec["decisions"] if d.get("utterance_seq") and d["timings"].get("end_of_speech_to_decision_ms")]
        if not decided:
            undecided += 1
        for d in decided[:1]:
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
    waiters = Sipp(workdir / f"L{level}", gateway, f"w{level}", silence, waiting, args.cps, hold_s, f"551{index % 10}0")
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
            talker = Sipp(workdir / f"L{level}", gateway, f"s{level}c{i}", clip["pcap"], share,
                          max(share / args.speech_window, 0.2), clip["call_s"], f"551{index % 10}{i + 1}")
            talker.expected_speech_end_ms = clip["expected_speech_end_ms"]
            sampler.watched[talker.proc.pid] = 0.0
            talkers.append(talker)
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
        "rss_before_mb": before.get("rss_mb"), "per_held_call": per_call, "speaking": speak, "waiting_callers": wait,
        "sipp": sipp_counts, "sipp_cpu_pct": round(100 * sipp_cpu_s / max(1e-9, t_end - t0), 1),
        "seconds": round(t_end - t0, 1),
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


# --- report ---------------------------------------------------------------------------------

HEADER = (f"{'calls':>5} {'offer':>5} {'answ':>5} {'fail':>4} {'held':>4} │ {'e2d p50':>7} {'p95':>6} {'asr p95':>7} "
          f"{'wait p95':>8} {'dec':>5} │ {'frames':>6} │ {'cpu hold':>8} {'cpu talk':>8} {'rss MB':>6} "
          f"{'hz p95':>6} │ {'/call cpu%':>10} {'MB':>5} │ {'sipp%':>5} {'host%':>5}")


def _f(value, fmt: str, width: int) -> str:
    return f"{value:{width}{fmt}}" if value is not None else f"{'-':>{width}}"


def print_row(row: dict) -> None:
    s, w = row["speaking"], row["waiting_callers"]
    e2d = s["end_of_speech_to_decision_ms"]
    frames = w["frames_vs_wall_between_no_inputs"]["min"]
    print(f"{row['level']:>5} {row['offered']:>5} {row['answered']:>5} {row['failed']:>4} {_f(row['held_max'], 'd', 4)} │ "
          f"{_f(e2d['p50'], '.0f', 7)} {_f(e2d['p95'], '.0f', 6)} {_f(s['transcription_ms']['p95'], '.0f', 7)} "
          f"{_f(s['wait_ms']['p95'], '.0f', 8)} {s['decided']:>2}/{s['calls']:<2} │ {_f(frames, '.3f', 6)} │ "
          f"{_f(row['hold_window'].get('cpu_pct'), '.0f', 8)} {_f(row['speech_window'].get('cpu_pct'), '.0f', 8)} "
          f"{_f(row['hold_window'].get('rss_mb'), '.0f', 6)} {_f(row['speech_window'].get('healthz_p95_ms'), '.0f', 6)} │ "
          f"{_f(row['per_held_call'].get('cpu_pct'), '.2f', 10)} {_f(row['per_held_call'].get('rss_mb'), '.2f', 5)} │ "
          f"{row['sipp_cpu_pct']:>5.0f} {_f(row['speech_window'].get('machine_cpu_pct'), '.0f', 5)}", flush=True)
    if row["failure_codes"]:
        print(f"      failures: {row['failure_codes']}")


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
        )
        sampler = Sampler(gateway)
        sampler.start()
        started = time.monotonic()
        try:
            health = gateway.get("/healthz")
            # One speaking call first: Whisper's first utterance allocates its buffers (RSS) and is slow.
            shortest = min(clips, key=lambda c: c["clip_s"])
            warm = Sipp(workdir / "warm-up", gateway, "warm", shortest["pcap"], 1, 1.0,
                        GREETING_S + shortest["clip_s"] + 4, "5519999")
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
