"""A caller's audio stays clean while a hundred other calls are up.

A SIPp load of 100 calls, each streaming RTP, is held by the UAS (a SipEndpoint in its own
process); meanwhile the pjsua2 test caller places one more call over L16/16000, lossless 16-bit PCM
at the bridge's own rate, and speaks a noise clip. What the UAS received must be that clip, 20 ms
frame by frame bit for bit and in order, through RTP, the jitter buffer, the conference bridge and
the frame tap (one frame in a hundred may be concealed: see the assertion). Needs Puente's pjsua2 build (more than 4 calls, and
L16/16000 compiled in) and SIPp (Debian sip-tester); skips otherwise, saying which is missing.
"""
from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from gateway.dev.sipp import Sipp, mulaw, write_rtp_pcap
from sip import CallScript, SipCaller
from sip.capabilities import pjsua2_build
from tests.support.sip.harness import UasProcess

pytestmark = pytest.mark.sip

OTHER_CALLS = 100
HELD_S = 25.0  # each SIPp call's length: the checked call happens while all of them are up
CLIP_S = 4.0


def _needs() -> str | None:
    build = pjsua2_build()
    if build.max_calls < OTHER_CALLS + 1:
        return f"this pjsua2 build holds {build.max_calls} calls per process (the PyPI wheel's cap)"
    if not any(c.startswith("L16/16000/1") for c in build.codecs):
        return "this pjsua2 build has no L16/16000 codec (scripts/pjsua2/config.sh enables it)"
    if shutil.which("sipp") is None:
        return "SIPp is not installed (Debian sip-tester)"
    return None


def noise(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Noise with no zero sample, so the start of the clip is unmistakable in what arrives."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    return (rng.integers(1000, 12000, n) * rng.choice([-1, 1], n)).astype("<i2")


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def test_a_calls_audio_arrives_bit_exact_while_a_hundred_other_calls_stream_rtp(tmp_path) -> None:
    missing = _needs()
    if missing:
        pytest.skip(missing)
    clip = noise(CLIP_S, 16000, seed=11)
    wav = write_wav(tmp_path / "clip.wav", clip, 16000)
    pcap = tmp_path / "load.pcap"
    write_rtp_pcap(pcap, mulaw(noise(HELD_S, 8000, seed=12)), ssrc=0x10AD0000)

    with UasProcess("--max-calls", str(OTHER_CALLS + 8), "--codecs", "L16/16000", "PCMU/8000",
                    "--record", str(tmp_path)) as uas:
        load = Sipp(tmp_path / "sipp", uas.port, "load", pcap, OTHER_CALLS, rate=50.0, hang_up_after_s=HELD_S,
                    number_prefix="55100", extension="load")
        try:
            # Every one of them answered, with its media up.
            uas.wait_for(lambda e: len(uas.named("CallMediaReady")) >= OTHER_CALLS, timeout=20)
            with SipCaller() as caller:
                result = caller.call(uas.uri("record"), CallScript(
                    wav=wav, speak_after_s=0.5, hangup_after_s=0.5 + CLIP_S + 1.0, codecs=("L16/16000",)))
            ended = {e["call_id"] for e in uas.named("CallEnded")}
            up_meanwhile = len({e["call_id"] for e in uas.named("CallMediaReady")} - ended)
            assert result.connected and result.codec == "L16/16000", result
            recorded = Path(uas.wait_event("recorded", timeout=10)["path"]).read_bytes()
            load.wait()
            counts = load.counts()
        finally:
            load.stop()

    assert up_meanwhile >= OTHER_CALLS  # none of the others had ended while the clip was checked
    assert (counts.get("successful"), counts.get("failed", 0)) == (OTHER_CALLS, 0), counts
    samples = np.frombuffer(recorded, dtype="<i2")
    start = int(np.flatnonzero(samples)[0])  # the caller sent exact zeros before it spoke
    sent = _frames(clip)
    arrived = _frames(samples[start:start + len(clip) + 10 * FRAME_SAMPLES])
    position = {frame: n for n, frame in enumerate(sent)}
    found = [position[frame] for frame in arrived if frame in position]
    # Every 20 ms frame of the clip arrives bit for bit and in order. Both test parties share two
    # cores with the rest of the suite: a sender stalled past the jitter buffer's prefetch makes the
    # receiver conceal one frame, so at most 1 in 100 may be missing (the order must hold regardless).
    assert found == sorted(found) and len(set(found)) == len(found), "frames arrived out of order or twice"
    missing = len(sent) - len(found)
    assert missing <= len(sent) // 100, f"{missing} of {len(sent)} frames of the clip did not arrive intact"


FRAME_SAMPLES = 320  # 20 ms at 16 kHz


def _frames(samples: np.ndarray) -> list[bytes]:
    return [samples[i:i + FRAME_SAMPLES].tobytes() for i in range(0, len(samples) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]
