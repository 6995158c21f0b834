"""A crowd of callers for ``puente demo --scenario queue``: many real SIP calls from one process.

Run as ``python -m gateway.dev.crowd --gateway sip:HOST:PORT --api URL --plan PLAN.json``. Each caller
of the plan says why they call (espeak-ng), then behaves as planned when the gateway offers
WhatsApp in the queue: ``dtmf1`` / ``yes`` accept (key 1 / say "sí"), ``dtmf2`` / ``no`` decline,
``wait`` ignores it; ``abandon`` hangs up after ``hangup_after_s`` whatever happens. The crowd
watches the gateway's own records (``GET /v1/calls``) to know when a caller is being offered, as
a person knows by listening. One JSON line per event on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, TextIO

import httpx

from gateway.dev.caller import synthesize
from sip import CallScript, LiveCall, SipCaller

Behaviour = Literal["dtmf1", "yes", "dtmf2", "no", "wait", "abandon"]
_REPLIES: dict[str, dict[str, str]] = {"yes": {"es": "sí", "en": "yes"}, "no": {"es": "no", "en": "no"}}


@dataclass(frozen=True)
class Caller:
    name: str
    lang: str
    text: str
    number: str
    behaviour: Behaviour
    hangup_after_s: float | None = None  # abandon: when the caller gives up
    start_s: float = 0.0  # when the call is placed, after the first


class Crowd:
    def __init__(self, out: TextIO, api: str, plan: list[Caller]) -> None:
        self._out = out
        self._api = api
        self._plan = plan
        self._lock = threading.Lock()
        self._live: dict[str, tuple[Caller, LiveCall]] = {}  # number → call
        self._replied: set[str] = set()
        self.done = threading.Event()

    def emit(self, record: dict) -> None:
        with self._lock:
            self._out.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._out.flush()

    def run(self, sip: SipCaller, gateway: str, tmp: Path) -> None:
        threads = []
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        started = time.monotonic()
        for caller in self._plan:
            time.sleep(max(0.0, started + caller.start_s - time.monotonic()))
            threads.append(threading.Thread(target=self._call, args=(sip, gateway, caller, tmp), daemon=True))
            threads[-1].start()
        for thread in threads:
            thread.join()
        self.done.set()
        watcher.join(5)

    def _call(self, sip: SipCaller, gateway: str, caller: Caller, tmp: Path) -> None:
        wav = synthesize(caller.text, caller.lang, tmp / f"{caller.name}.wav")
        reply = _REPLIES.get(caller.behaviour, {}).get(caller.lang)
        script = CallScript(
            # One account for the whole crowd (pjsua holds few), each caller's number asserted as a carrier would.
            wav=wav, headers={"P-Asserted-Identity": f"<sip:{caller.number}@127.0.0.1>"}, hangup_after_s=caller.hangup_after_s,
            reply_wav=synthesize(reply, caller.lang, tmp / f"{caller.name}-reply.wav") if reply else None,
            reply_dtmf={"dtmf1": "1", "dtmf2": "2"}.get(caller.behaviour), reply_when="asked", reply_after_s=0.0,
            max_duration_s=240.0,
        )
        live = sip.place(f"sip:{caller.lang}@{gateway}", script)
        with self._lock:
            self._live[caller.number] = (caller, live)
        self.emit({"event": "placed", "caller": caller.name, "number": caller.number, "behaviour": caller.behaviour})
        result = live.wait()
        self.emit({"event": "ended", "caller": caller.name, "number": caller.number, "ended_by": result.ended_by,
                   "duration_s": round(result.duration_s, 1), "sip_call_id": result.sip_call_id})

    def _watch(self) -> None:
        """Reply to the first offer each caller hears, as planned."""
        with httpx.Client(base_url=self._api, timeout=5) as client:
            while not self.done.is_set():
                try:
                    calls = client.get("/v1/calls", params={"limit": 200}).raise_for_status().json()
                except httpx.HTTPError:
                    calls = []
                for call in calls:
                    number = call.get("caller_number")
                    if call.get("state") != "offering" or number in self._replied:
                        continue
                    with self._lock:
                        entry = self._live.get(number)
                    if entry is None:
                        continue
                    self._replied.add(number)
                    caller, live = entry
                    self.emit({"event": "offered", "caller": caller.name, "number": number, "behaviour": caller.behaviour})
                    if caller.behaviour in ("dtmf1", "yes", "dtmf2", "no"):
                        live.reply()
                time.sleep(0.3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateway", required=True, help="HOST:PORT of the gateway's SIP")
    parser.add_argument("--api", required=True)
    parser.add_argument("--plan", type=Path, required=True, help="JSON list of callers (gateway.dev.crowd.Caller)")
    args = parser.parse_args()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    plan = [Caller(**entry) for entry in json.loads(args.plan.read_text())]
    crowd = Crowd(out, args.api, plan)
    with tempfile.TemporaryDirectory(prefix="puente-crowd-") as tmp, SipCaller(max_calls=64) as sip:
        crowd.run(sip, args.gateway, Path(tmp))
    return 0


def plan_json(plan: list[Caller]) -> str:
    return json.dumps([asdict(c) for c in plan], ensure_ascii=False)


if __name__ == "__main__":
    sys.exit(main())
