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


FrameCallback = Callable[[AudioFrame], None]


class FrameSink(pj.AudioMediaPort):
    """A bridge port that hands every 20 ms of real audio it receives to ``on_frame``, from the
    media clock thread: what :class:`AudioTaps` falls back to on a pjsua2 without ``FrameTap``.

    Frames without audio (NONE/silence-suppressed) are skipped, so ``index`` counts the audio
    frames the bridge delivered; while ``listening`` is off they are counted but not handed on.
    """

    def __init__(self, on_frame: FrameCallback) -> None:
        super().__init__()
        self._on_frame = on_frame
        self._index = 0
        self.listening = True  # False: frames are counted (the index stays call time), not copied

    def create(self, name: str) -> None:
        self.createPort(name, pcm_format())

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        if frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO or frame.size != FRAME_BYTES:
            return
        index = self._index
        self._index += 1
        if not self.listening:
            return
        # bytes() copies through SWIG element by element (~300 µs a frame): the reason FrameTap exists.
        self._on_frame(AudioFrame(bytes(frame.buf), index))


class AudioTaps:
    """Where every call's received audio is collected, off the media clock thread.

    On Puente's pjsua2 build each call's audio goes into a ``pj.FrameTap``
    (scripts/pjsua2/frame_tap.hpp): the clock thread copies each frame into the tap's ring and
    returns, without Python. :meth:`drain`, run by the SIP thread about once a frame, collects
    every tap's frames and hands them, whole and indexed, to that tap's ``on_frame``. A frame's
    index is its position in the call's audio: frames the ring dropped (the reader ``RING_S``
    behind) leave a gap. Where the module has no FrameTap (the PyPI wheel), :meth:`open` gives a
    :class:`FrameSink`, which calls ``on_frame`` from the clock thread itself.

    SIP thread only.
    """

    RING_S = 2.0  # unread audio a tap keeps: the SIP thread may stall this long without a loss

    def __init__(self) -> None:
        self.native = hasattr(pj, "FrameTap")
        self._taps: dict[int, tuple[pj.FrameTap, FrameCallback]] = {}
        self._deaf: set[int] = set()  # taps drained without handing frames on (listen(port, False))
        self._capacity = round(self.RING_S * 1000 / FRAME_MS)
        self._buffer = bytearray(self._capacity * FRAME_BYTES)
        self._view = memoryview(self._buffer)
        self.dropped = 0  # frames the rings of closed taps dropped (read too late); safe to read anywhere

    def open(self, name: str, on_frame: FrameCallback) -> pj.AudioMedia:
        """A new bridge port whose received audio reaches ``on_frame``; transmit a call's audio to it."""
        if not self.native:
            sink = FrameSink(on_frame)
            sink.create(name)
            return sink
        tap = pj.FrameTap()
        tap.createTap(name, SAMPLE_RATE, FRAME_MS, self._capacity)
        self._taps[id(tap)] = (tap, on_frame)
        return tap

    def close(self, port: pj.AudioMedia) -> None:
        """Deliver what the port still holds and stop draining it (the owner then retires it)."""
        entry = self._taps.pop(id(port), None)
        self._deaf.discard(id(port))
        if entry is not None:
            self._drain_one(*entry)
            self.dropped += entry[0].dropped()

    def listen(self, port: pj.AudioMedia, on: bool) -> None:
        """Whether the port's frames reach its ``on_frame``. Off, they are still taken from the
        bridge (so a frame's index stays its place in the call's audio) but dropped at once:
        a caller on hold costs no Python per frame."""
        if isinstance(port, FrameSink):
            port.listening = on
        elif on:
            self._deaf.discard(id(port))
        else:
            self._deaf.add(id(port))

    def drain(self) -> None:
        """Hand every tap's unread frames to its ``on_frame``."""
        for key, (tap, on_frame) in list(self._taps.items()):
            self._drain_one(tap, None if key in self._deaf else on_frame)

    def clear(self) -> None:
        self._taps.clear()

    def _drain_one(self, tap: pj.FrameTap, on_frame: FrameCallback | None) -> None:
        while True:
            size = tap.read(self._buffer)
            if on_frame is not None:
                start = tap.lastReadStart()
                for n, offset in enumerate(range(0, size, FRAME_BYTES)):
                    on_frame(AudioFrame(bytes(self._view[offset:offset + FRAME_BYTES]), start + n))
            if size < len(self._buffer):
                return


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
