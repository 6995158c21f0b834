"""A tiny UAS around SipEndpoint for tests: one JSON line per event.

Run as ``python -m tests.support.sip.uas --port P ...``. Events go to the
original stdout; anything pjsua prints at the C level is moved to stderr so
the JSON stream stays clean. Test reactions:

* DTMF ``5`` plays ``--prompt``, ``9`` transfers to ``--transfer-to`` with
  X-Puente headers, ``#`` hangs up;
* calls to user ``agent`` (a followed transfer) are hung up after 1 s;
* a final 2xx transfer NOTIFY hangs up the transferred call;
* ``--greet`` plays a prompt as soon as media is ready, ``--hangup-after``
  hangs every call up that many seconds after media is ready;
* with ``--record DIR``, what a call to user ``record`` sent is written to
  ``DIR/<call_id>.pcm`` when it ends (a ``recorded`` event names the file);
* calls to user ``busy`` are refused with 486;
* with ``--bridge`` it acts as a B2BUA: once a call's media is up it dials the URI in the
  call's ``X-Bridge-To`` header with X-Puente context headers (a ``dial`` event names the leg)
  and bridges the two when the leg answers (a ``bridge`` event); DTMF ``0`` hangs the leg up,
  and the leg is hung up 0.5 s after its caller's call ended.
"""
from __future__ import annotations

import argparse
import array
import dataclasses
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TextIO

from models.audio import FRAME_MS, AudioFrame
from sip import (
    CallEnded,
    CallEvent,
    CallMediaReady,
    DtmfReceived,
    IncomingCall,
    SipConfig,
    SipEndpoint,
    SipStartError,
    TransferUpdate,
)

SPEECH_RMS = 300.0  # ≈ -40 dBFS: well above line noise, below any speech


@dataclasses.dataclass
class FrameStats:
    count: int = 0
    first_index: int | None = None
    last_index: int | None = None
    gaps: int = 0
    speech_frames: int = 0
    rms_max: float = 0.0

    def add(self, frame: AudioFrame) -> None:
        if self.last_index is not None and frame.index != self.last_index + 1:
            self.gaps += 1
        if self.first_index is None:
            self.first_index = frame.index
        self.last_index = frame.index
        self.count += 1
        samples = array.array("h", frame.pcm)
        rms = math.sqrt(sum(s * s for s in samples) / len(samples))
        self.rms_max = max(self.rms_max, rms)
        if rms > SPEECH_RMS:
            self.speech_frames += 1


class RecordingHandler:
    def __init__(self, out: TextIO, args: argparse.Namespace) -> None:
        self._out = out
        self._args = args
        self._lock = threading.Lock()
        self._stats: dict[str, FrameStats] = {}
        self._to_user: dict[str, str] = {}
        self._recordings: dict[str, bytearray] = {}
        self._bridge_to: dict[str, str] = {}  # caller's call id -> the URI to dial (--bridge)
        self._leg_of: dict[str, str] = {}  # caller's call id -> its agent leg
        self._caller_of: dict[str, str] = {}  # agent leg -> its caller's call id
        self.endpoint: SipEndpoint | None = None

    def emit(self, record: dict) -> None:
        with self._lock:
            self._out.write(json.dumps(record) + "\n")
            self._out.flush()

    def on_incoming(self, call: IncomingCall) -> None:
        self._stats[call.call_id] = FrameStats()
        self._to_user[call.call_id] = call.to_user
        if self._args.record and call.to_user == "record":
            self._recordings[call.call_id] = bytearray()
        if self._args.bridge and "X-Bridge-To" in call.headers:
            self._bridge_to[call.call_id] = call.headers["X-Bridge-To"]
        self.emit({"event": "incoming", **dataclasses.asdict(call)})
        if call.to_user == "busy":
            assert self.endpoint is not None
            self.endpoint.hangup(call.call_id, 486)

    def on_frame(self, call_id: str, frame: AudioFrame) -> None:
        self._stats[call_id].add(frame)
        recording = self._recordings.get(call_id)
        if recording is not None:
            recording += frame.pcm

    def on_event(self, event: CallEvent) -> None:
        record = {"event": type(event).__name__, **dataclasses.asdict(event)}
        if isinstance(event, CallEnded):
            stats = self._stats.get(event.call_id, FrameStats())
            self.emit({"event": "frames", "call_id": event.call_id, "speech_s": stats.speech_frames * FRAME_MS / 1000,
                       **dataclasses.asdict(stats)})
            recording = self._recordings.pop(event.call_id, None)
            if recording is not None:
                path = self._args.record / f"{event.call_id}.pcm"
                path.write_bytes(recording)
                self.emit({"event": "recorded", "call_id": event.call_id, "path": str(path)})
        self.emit(record)
        self._react(event)

    def _react(self, event: CallEvent) -> None:
        ep, args = self.endpoint, self._args
        assert ep is not None
        call_id = event.call_id
        if self._bridge(event):
            return
        if isinstance(event, CallMediaReady):
            if self._to_user.get(call_id) == "agent":
                threading.Timer(1.0, ep.hangup, (call_id,)).start()
            if args.greet:
                self.emit({"event": "play", "call_id": call_id, "playback_id": ep.play(call_id, args.greet)})
            if args.hangup_after is not None:
                threading.Timer(args.hangup_after, ep.hangup, (call_id,)).start()
        elif isinstance(event, DtmfReceived):
            if event.digit == "5" and args.prompt:
                self.emit({"event": "play", "call_id": call_id, "playback_id": ep.play(call_id, args.prompt)})
            elif event.digit == "9" and args.transfer_to:
                headers = {"X-Puente-Call-Id": call_id, "X-Puente-Intent": "billing dispute",
                           "X-Puente-Lang": "es"}
                ep.transfer(call_id, args.transfer_to, headers)
            elif event.digit == "#":
                ep.hangup(call_id)
            elif event.digit == "0" and call_id in self._leg_of:
                ep.hangup(self._leg_of[call_id])
        elif isinstance(event, TransferUpdate) and event.final and 200 <= event.status_code < 300:
            ep.hangup(call_id)

    def _bridge(self, event: CallEvent) -> bool:
        """--bridge: dial the agent for a caller, bridge them on answer; True if the event was a leg's."""
        ep = self.endpoint
        assert ep is not None
        call_id = event.call_id
        if call_id in self._caller_of:
            caller = self._caller_of[call_id]
            if isinstance(event, CallMediaReady):
                ep.bridge(caller, call_id)
                self.emit({"event": "bridge", "call_id": caller, "leg_id": call_id})
            return True
        if isinstance(event, CallMediaReady) and call_id in self._bridge_to:
            headers = {"X-Puente-Call-Id": call_id, "X-Puente-Intent": "billing dispute",
                       "X-Puente-Language": "es", "X-Puente-Wait-S": "42",
                       "X-Puente-Context-Url": f"http://127.0.0.1:8080/calls/{call_id}"}
            leg = ep.dial(self._bridge_to[call_id], headers)
            self._stats[leg] = FrameStats()  # a leg must deliver no frames: its count shows it
            self._leg_of[call_id], self._caller_of[leg] = leg, call_id
            self.emit({"event": "dial", "call_id": call_id, "leg_id": leg, "headers": headers})
        elif isinstance(event, CallEnded) and call_id in self._leg_of:
            threading.Timer(0.5, ep.hangup, (self._leg_of[call_id],)).start()
        return False


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rtp-port", type=int, default=40000)
    parser.add_argument("--allow", action="append", help="allowed CIDR (repeatable)")
    parser.add_argument("--max-calls", type=int, default=8)
    parser.add_argument("--codecs", nargs="*")
    parser.add_argument("--prompt", type=Path)
    parser.add_argument("--greet", type=Path)
    parser.add_argument("--transfer-to")
    parser.add_argument("--hangup-after", type=float)
    parser.add_argument("--record", type=Path, help="write what calls to user 'record' sent here")
    parser.add_argument("--bridge", action="store_true", help="dial each call's X-Bridge-To and bridge them")
    parser.add_argument("--log-level", type=int, default=0)
    parser.add_argument("--sip", action="append", default=[], metavar="FIELD=JSON",
                        help="any other SipConfig field, value as JSON (repeatable)")
    args = parser.parse_args()

    # Keep the JSON stream on the real stdout; send C-level chatter to stderr.
    events = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    config = SipConfig(
        host=args.host, port=args.port, rtp_port=args.rtp_port, max_calls=args.max_calls,
        log_level=args.log_level,
        **({"allowed_networks": tuple(args.allow)} if args.allow else {}),
        **({"codecs": tuple(args.codecs)} if args.codecs else {}),
        **{name: json.loads(value) for name, value in (item.split("=", 1) for item in args.sip)},
    )
    handler = RecordingHandler(events, args)
    endpoint = SipEndpoint(config, handler)
    handler.endpoint = endpoint
    try:
        endpoint.start()
    except SipStartError as exc:
        handler.emit({"event": "start_error", "message": str(exc)})
        return 2
    handler.emit({"event": "started", "port": args.port, "codecs": list(endpoint.codecs)})

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    endpoint.stop()
    handler.emit({"event": "stopped"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
