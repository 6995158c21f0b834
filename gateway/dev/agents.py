"""Simulated contact-center agents for ``puente demo --scenario queue``: SIP phones that answer.

Run as ``python -m gateway.dev.agents --port P --talk-s 6``; every user part dialled at that port is
an agent (``sip:ana@…``, ``sip:beto@…``). Each call is answered, hears the agent greet the caller,
and is hung up after ``--talk-s``. What the agent's desktop would show (the X-Puente headers and
the context behind ``X-Puente-Context-Url``) is printed as one JSON line per call. The process holds
its own pjsua2 endpoint, so it cannot share a process with the gateway.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import TextIO

import httpx

from gateway.dev.caller import synthesize
from models.audio import AudioFrame
from sip import CallEnded, CallEvent, CallMediaReady, IncomingCall, SipConfig, SipEndpoint, SipStartError


class Agents:
    def __init__(self, out: TextIO, greeting: Path, talk_s: float) -> None:
        self._out = out
        self._greeting = greeting
        self._talk_s = talk_s
        self._lock = threading.Lock()
        self._calls: dict[str, IncomingCall] = {}
        self.endpoint: SipEndpoint | None = None

    def emit(self, record: dict) -> None:
        with self._lock:
            self._out.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._out.flush()

    # --- sip.CallHandler (SIP thread) ------------------------------------------------------

    def on_incoming(self, call: IncomingCall) -> None:
        self._calls[call.call_id] = call

    def on_frame(self, call_id: str, frame: AudioFrame) -> None:
        pass  # the simulated agent listens to nobody

    def on_event(self, event: CallEvent) -> None:
        assert self.endpoint is not None
        call = self._calls.get(event.call_id)
        if call is None:
            return
        if isinstance(event, CallMediaReady):
            self.endpoint.play(call.call_id, self._greeting)
            threading.Timer(self._talk_s, self.endpoint.hangup, (call.call_id,)).start()
            # The desktop reads the context over HTTP: not on the SIP thread.
            threading.Thread(target=self._answered, args=(call,), daemon=True).start()
        elif isinstance(event, CallEnded):
            self._calls.pop(call.call_id, None)

    def _answered(self, call: IncomingCall) -> None:
        headers = {k: v for k, v in call.headers.items() if k.startswith("X-Puente-")}
        record = {"event": "answered", "agent": call.to_user, "headers": headers}
        url = headers.get("X-Puente-Context-Url")
        if url:
            try:
                context = httpx.get(url, timeout=5).raise_for_status().json()
                record["context"] = {
                    "reason": context.get("reason"), "intent": context.get("intent"),
                    "transcript": " ".join(u["text"] for u in context.get("transcript", [])),
                    "waited_s": (context.get("queue") or {}).get("waited_s"),
                    "history": len(context.get("history") or []),
                }
            except (httpx.HTTPError, ValueError) as exc:
                record["context_error"] = str(exc)
        self.emit(record)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rtp-port", type=int, default=42000)
    parser.add_argument("--talk-s", type=float, default=6.0, help="how long each conversation lasts")
    args = parser.parse_args()
    out = os.fdopen(os.dup(1), "w")  # JSON lines; whatever pjsua prints goes to stderr
    os.dup2(2, 1)
    with tempfile.TemporaryDirectory(prefix="puente-agents-") as tmp:
        greeting = synthesize("Hola, gracias por esperar. Ya veo por qué llamas; te ayudo con eso.", "es",
                              Path(tmp) / "greeting.wav")
        agents = Agents(out, greeting, args.talk_s)
        endpoint = SipEndpoint(SipConfig(host=args.host, port=args.port, rtp_port=args.rtp_port, max_calls=8), agents)
        agents.endpoint = endpoint
        try:
            endpoint.start()
        except SipStartError as exc:
            agents.emit({"event": "start_error", "message": str(exc)})
            return 2
        agents.emit({"event": "started", "port": args.port})
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        endpoint.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
