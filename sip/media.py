"""Audio plumbing between pjsua2's conference bridge and Python."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import pjsua2 as pj

from models.audio import FRAME_BYTES, FRAME_MS, SAMPLE_RATE, AudioFrame


def pcm_format() -> pj.MediaFormatAudio:
    """The bridge-side format of every port we create: 16 kHz, 20 ms, mono, 16-bit."""
    fmt = pj.MediaFormatAudio()
    fmt.init(pj.PJMEDIA_FORMAT_PCM, SAMPLE_RATE, 1, FRAME_MS * 1000, 16)
    return fmt


class FrameSink(pj.AudioMediaPort):
    """A bridge port that hands every 20 ms of real audio it receives to ``on_frame``.

    Runs on the media clock thread: it copies the bytes and calls back, nothing else.
    Frames without audio (NONE/silence-suppressed) are skipped so ``index``
    counts delivered frames without gaps.
    """

    def __init__(self, on_frame: Callable[[AudioFrame], None]) -> None:
        super().__init__()
        self._on_frame = on_frame
        self._index = 0

    def create(self, name: str) -> None:
        self.createPort(name, pcm_format())

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        if frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO or frame.size != FRAME_BYTES:
            return
        index = self._index
        self._index += 1
        # bytes() copies through SWIG element by element (~300 µs a frame). A ctypes read of the
        # vector's pointers was 100x faster but crashed the media thread now and then on our own
        # pjsua2 build; a safe fast copy is future work (see README: Known limits).
        self._on_frame(AudioFrame(bytes(frame.buf), index))


class Player(pj.AudioMediaPlayer):
    """A one-shot WAV player that reports its end (from a pj thread) to ``on_eof``."""

    def __init__(self, path: Path, on_eof: Callable[[], None]) -> None:
        super().__init__()
        self._on_eof = on_eof
        self.createPlayer(str(path), pj.PJMEDIA_FILE_NO_LOOP)

    def onEof2(self) -> None:
        # Never stop or destroy the player here (pjmedia forbids it): the owner
        # schedules that on the SIP thread.
        self._on_eof()


class WavCache:
    """Makes any PCM WAV playable: 16 kHz mono 16-bit, converted with sox when needed.

    Conversion runs in the calling thread, never on the SIP thread.
    """

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def prepare(self, path: Path) -> Path:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"prompt not found: {path}")
        if _is_bridge_format(path):
            return path
        stat = path.stat()
        key = hashlib.sha1(f"{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:16]
        out = self._dir / f"{path.stem}-{key}.wav"
        if not out.exists():
            if shutil.which("sox") is None:
                raise RuntimeError(f"{path} is not 16 kHz mono 16-bit PCM and sox is not installed to convert it")
            self._dir.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp.wav")
            subprocess.run(
                ["sox", str(path), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed-integer", str(tmp)],
                check=True, capture_output=True, timeout=60,
            )
            tmp.replace(out)  # atomic: concurrent prepares never see half a file
        return out


def _is_bridge_format(path: Path) -> bool:
    try:
        with wave.open(str(path), "rb") as w:
            return w.getframerate() == SAMPLE_RATE and w.getnchannels() == 1 and w.getsampwidth() == 2
    except (wave.Error, EOFError):
        return False  # not plain PCM (e.g. WAVE_FORMAT_EXTENSIBLE or µ-law): let sox read it
