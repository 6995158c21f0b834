"""Rendered speech on disk: neural synthesis is slower than real time here, so a text is spoken once.

A rendering is a 16 kHz WAV at ``<dir>/<key[:2]>/<key>.wav``, ``key`` = sha256 of the voice's
``identity`` (engine, voice, speed, model and voice-file hashes or engine version) and the text:
anything that would change the audio changes the key, so the cache never needs invalidating —
delete the directory to reclaim the space.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from models.voices.base import Voice, read_wav, write_wav


class CachedVoice(Voice):
    """``voice`` with its renderings kept in ``directory``; the same audio a fresh rendering gives,
    as 16-bit samples (the first call returns what it wrote, so first and later calls agree)."""

    def __init__(self, voice: Voice, directory: Path) -> None:
        self.inner = voice
        self.directory = Path(directory)
        self.spec = voice.spec
        self.language = voice.language

    @property
    def identity(self) -> str:
        return self.inner.identity

    def path_for(self, text: str) -> Path:
        key = hashlib.sha256("\0".join((self.identity, text)).encode("utf-8")).hexdigest()
        return self.directory / key[:2] / f"{key}.wav"

    def render(self, text: str) -> Path:
        """The WAV of ``text``, synthesised now only if no earlier run did."""
        path = self.path_for(text)
        if not path.is_file():
            write_wav(self.inner.synthesize(text), path)
        return path

    def synthesize(self, text: str) -> np.ndarray:
        return read_wav(self.render(text))
