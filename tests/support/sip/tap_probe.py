"""Plays a WAV through the conference bridge into an AudioTaps port, in its own process (one
pjsua2 Endpoint per process), and prints what arrived as one JSON line.

    python tests/support/sip/tap_probe.py WAV [--stall-s S]

``--stall-s`` stops draining for S seconds after the first second, as a stuck reader would.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
import wave
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import pjsua2 as pj  # noqa: E402

from models.audio import AudioFrame  # noqa: E402
from sip.config import SipConfig  # noqa: E402
from sip.media import AudioTaps  # noqa: E402
from sip.runtime import base_config  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("wav", type=Path)
    parser.add_argument("--stall-s", type=float, default=0.0)
    args = parser.parse_args()
    with wave.open(str(args.wav), "rb") as w:
        pcm = w.readframes(w.getnframes())
        seconds = w.getnframes() / w.getframerate()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg, writer = base_config(max_calls=4, user_agent="tap-probe", log_level=0,
                              media_quality=SipConfig.media_quality)
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    ep.libStart()

    taps = AudioTaps()
    frames: list[AudioFrame] = []
    port = taps.open("probe", frames.append)
    player = pj.AudioMediaPlayer()
    player.createPlayer(str(args.wav), pj.PJMEDIA_FILE_NO_LOOP)
    player.startTransmit(port)
    started = time.monotonic()
    stall_from, stall_until = 1.0, 1.0 + args.stall_s
    while (elapsed := time.monotonic() - started) < seconds + args.stall_s + 0.5:
        if not stall_from <= elapsed < stall_until:
            taps.drain()
        time.sleep(0.02)
    player.stopTransmit(port)
    taps.close(port)

    received = b"".join(f.pcm for f in frames)
    # The player's audio starts at the first non-silent frame the bridge delivered.
    start = next((i for i, f in enumerate(frames) if any(f.pcm)), 0)
    head = b"".join(f.pcm for f in frames[start:])[: len(pcm)]
    indices = [f.index for f in frames]
    print(json.dumps({
        "native": taps.native,
        "frames": len(frames),
        "bytes": len(received),
        "gaps": sum(1 for a, b in zip(indices, indices[1:]) if b != a + 1),
        "increasing": all(b > a for a, b in zip(indices, indices[1:])),
        "dropped": taps.dropped,
        "wav_sha256": hashlib.sha256(pcm).hexdigest(),
        "received_sha256": hashlib.sha256(head).hexdigest(),
    }))
    del player, port, taps, frames
    ep.libDestroy()
    del writer
    return 0


if __name__ == "__main__":
    sys.exit(main())
