"""Place a real test call against a running gateway and fetch the gateway's record of it.

Used by ``puente call``, the demo and the benchmarks. The call runs in this process
with its own pjsua2 endpoint (``sip.caller``), so never from inside the gateway process.
"""
from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import httpx

from gateway.call.announcements import speak
from models.voices import Voice, write_wav
from sip import CallResult, CallScript, SipCaller

RECORD_KEYS = ("call_id", "sip_call_id", "state", "outcome", "language", "transcript", "intent", "confidence", "route", "reason")


class CallFailed(Exception):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


def synthesize(text: str, lang: str, out: Path, voice: Voice | None = None) -> Path:
    """Speak ``text`` into a 16 kHz mono WAV: with ``voice`` (e.g. ``VoiceLibrary().voice("kokoro:ef_dora")``),
    else with espeak-ng in ``lang`` (its default rate)."""
    return write_wav(voice.synthesize(text), out) if voice is not None else speak(text, lang, out)


def place_call(
    uri: str,
    *,
    wav: Path | None = None,
    say: str | None = None,
    lang: str | None = None,
    api: str = "http://127.0.0.1:8080",
    from_number: str = "+525555550123",
    answer: str | None = None,
    dtmf: str | None = None,
    hangup_after_s: float | None = None,
    timeout_s: float = 60.0,
    srtp: Literal["off", "optional", "mandatory"] = "off",
    tls_ca_file: Path | None = None,
    follow_transfer: bool = False,
    voice: Voice | None = None,
    codecs: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Call, wait for the gateway to end the call, return its record (``CallFailed`` otherwise).

    A ``;transport=tls`` URI calls over TLS (the certificate is checked against ``tls_ca_file``
    when given); ``srtp`` is the media encryption offered.

    ``answer`` (spoken) and ``dtmf`` (keyed) reply to the gateway's next question after the
    first utterance (e.g. WhatsApp consent), as soon as the gateway starts asking it.
    ``follow_transfer``: accept the gateway's REFER and call the agent, as a phone would; else decline it.
    ``voice`` speaks ``say`` and ``answer`` (espeak-ng in ``lang`` when ``None``); ``lang`` defaults to its language.
    ``codecs`` are the only ones offered, in order (e.g. ``("PCMU/8000",)``; default G.722, opus, PCMU, PCMA).
    """
    lang = lang or (voice.language if voice is not None else "es")
    with tempfile.TemporaryDirectory(prefix="puente-call-") as tmp:
        work = Path(tmp)
        if say is not None:
            wav = synthesize(say, lang, work / "say.wav", voice)
        if wav is None or not Path(wav).is_file():
            raise CallFailed(f"no such audio file: {wav}")
        reply = synthesize(answer, lang, work / "answer.wav", voice) if answer is not None else None
        host = uri.split("@")[-1].split(":")[0].split(";")[0]
        script = CallScript(
            wav=to_pcm16(Path(wav), work / "speech.wav"), from_uri=f"sip:{from_number}@{host}",
            hangup_after_s=hangup_after_s, max_duration_s=timeout_s, reply_wav=reply, reply_dtmf=dtmf, srtp=srtp,
            follow_transfer=follow_transfer, codecs=codecs,
        )
        with SipCaller(tls="transport=tls" in uri.lower(), tls_ca_file=tls_ca_file) as caller:
            result = caller.call(uri, script)
    if not result.connected:
        raise CallFailed(f"the call was not answered (SIP {result.status_code})", status_code=result.status_code)
    record = fetch_record(api, result.sip_call_id, timeout_s=15.0)
    return {**{key: record.get(key) for key in RECORD_KEYS}, "caller": _caller_view(result), "record": record}


def to_pcm16(source: Path, out: Path) -> Path:
    """Any audio sox reads → 16 kHz mono 16-bit WAV."""
    subprocess.run(["sox", str(source), "-r", "16000", "-c", "1", "-b", "16", str(out)], check=True, capture_output=True)
    return out


def fetch_record(api: str, sip_call_id: str, *, timeout_s: float) -> dict[str, Any]:
    """The gateway records the end of a call just after the hangup; wait for it."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=api, timeout=5.0) as client:
        while True:
            try:
                calls = client.get("/v1/calls", params={"sip_call_id": sip_call_id}).raise_for_status().json()
            except httpx.HTTPError as exc:
                raise CallFailed(f"the gateway API at {api} did not answer: {exc}", sip_call_id=sip_call_id) from exc
            if calls and calls[0]["state"] == "ended":
                return client.get(f"/v1/calls/{calls[0]['call_id']}").raise_for_status().json()
            if time.monotonic() > deadline:
                raise CallFailed("the gateway has no ended record of this call", sip_call_id=sip_call_id, calls=calls)
            time.sleep(0.1)


def _caller_view(result: CallResult) -> dict[str, Any]:
    return {
        "status_code": result.status_code,
        "ended_by": result.ended_by,
        "duration_s": round(result.duration_s, 2),
        "speech_started_at": result.speech_started_at,
        "speech_ended_at": result.speech_ended_at,
        "transfer_target": result.transfer_target,
        "codec": result.codec,
        "srtp": result.srtp,
    }
