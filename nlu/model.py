"""The runtime intent model: a saved model directory -> :class:`IntentResult`. numpy only.

A model directory holds plain data, never pickles, so loading one cannot run code:

* ``weights.npz``  – ``vocabulary`` (unicode array), ``idf``, ``coef`` (labels x TF-IDF
  features), ``intercept`` (labels); for a model with a sentence embedding,
  ``embedding_coef`` (labels x embedding dim); for one that folds spelling variants,
  ``lexicon_keys`` and ``lexicon_forms`` (:class:`nlu.spelling.Lexicon`); loaded with
  ``allow_pickle=False``;
* ``labels.json``  – the label names, in ``coef`` row order;
* ``metadata.json`` – format version, provenance (data hash, code version, seed,
  created_at), feature settings, out-of-scope threshold, held-out metrics.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from . import text as textnorm
from .classifier import RANKING_SIZE, IntentResult, IntentScore
from .embeddings import EmbeddingUnavailable, SentenceEncoder, get_encoder
from .features import FeatureConfig, Featurizer
from .spelling import Lexicon
from .taxonomy import OUT_OF_SCOPE

__all__ = ["FORMAT_VERSION", "IntentModel", "ModelLoadError", "WEIGHTS_FILE", "LABELS_FILE", "METADATA_FILE"]

# Bump when the directory layout or the meaning of a stored array changes. A model
# with another format version is refused rather than silently misread.
# 2: optional sentence-embedding block (``embedding_coef``, ``features.embedding``).
# 3: optional spelling lexicon (``lexicon_keys``/``lexicon_forms``, ``features.spelling``).
FORMAT_VERSION = 3
WEIGHTS_FILE = "weights.npz"
LABELS_FILE = "labels.json"
METADATA_FILE = "metadata.json"
_ARRAYS = ("vocabulary", "idf", "coef", "intercept")
_REQUIRED_METADATA = ("format_version", "created_at", "data_hash", "code_version", "threshold", "features")


class ModelLoadError(RuntimeError):
    """A model directory is missing, corrupt, or from an incompatible version."""

    def __init__(self, path: str | PathLike[str], reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load intent model from {self.path}: {reason}")


class IntentModel:
    """Linear softmax classifier over :class:`Featurizer` vectors, with out-of-scope rules.

    ``parse`` answers ``out_of_scope`` when the text has no content (empty, only
    greetings/fillers/yes/no), or when the best intent's probability is under
    ``threshold``. Safe to share between threads: parsing reads only immutable state.
    """

    def __init__(
        self,
        labels: Sequence[str],
        featurizer: Featurizer,
        coef: np.ndarray,
        intercept: np.ndarray,
        threshold: float,
        metadata: Mapping[str, Any] | None = None,
        embedding_coef: np.ndarray | None = None,
        encoder: SentenceEncoder | None = None,
        lexicon: Lexicon | None = None,
    ):
        coef = np.asarray(coef, dtype=np.float64)
        intercept = np.asarray(intercept, dtype=np.float64)
        if coef.shape != (len(labels), featurizer.n_features):
            raise ValueError(f"coef shape {coef.shape} != ({len(labels)}, {featurizer.n_features})")
        if intercept.shape != (len(labels),):
            raise ValueError(f"intercept shape {intercept.shape} != ({len(labels)},)")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold {threshold} outside [0, 1]")
        self.labels: tuple[str, ...] = tuple(labels)
        self.featurizer = featurizer
        self.coef = coef
        self.intercept = intercept
        self.threshold = float(threshold)
        self._metadata = dict(metadata or {})
        # Row-per-feature copy: gathering a text's ~100 active rows is then contiguous.
        self._coef_by_feature = np.ascontiguousarray(coef.T)
        self.embedding_coef: np.ndarray | None = None
        self._encoder: SentenceEncoder | None = None
        config = featurizer.config
        if config.embedding is not None:
            if embedding_coef is None:
                raise ValueError(f"features use the {config.embedding!r} embedding but embedding_coef is missing")
            self._encoder = encoder if encoder is not None else get_encoder(config.embedding)
            embedding_coef = np.asarray(embedding_coef, dtype=np.float64)
            if embedding_coef.shape != (len(labels), self._encoder.dim):
                raise ValueError(
                    f"embedding_coef shape {embedding_coef.shape} != ({len(labels)}, {self._encoder.dim})"
                )
            self.embedding_coef = embedding_coef
            # The block weight folded into the coefficients: one multiply less per parse.
            self._embedding_proj = np.ascontiguousarray(embedding_coef.T * config.embedding_weight)
        elif embedding_coef is not None:
            raise ValueError("embedding_coef given but the feature settings name no embedding")
        if config.spelling != (lexicon is not None):
            raise ValueError("a spelling lexicon is needed exactly when the feature settings fold spelling")
        self.lexicon = lexicon

    def with_threshold(self, threshold: float) -> IntentModel:
        """The same model with another out-of-scope threshold (weights shared, not copied)."""
        metadata = {**self._metadata, "threshold": float(threshold)}
        return IntentModel(
            self.labels, self.featurizer, self.coef, self.intercept, threshold, metadata,
            embedding_coef=self.embedding_coef, encoder=self._encoder, lexicon=self.lexicon,
        )

    # --- identity ------------------------------------------------------------------

    @property
    def metadata(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._metadata))  # a deep copy callers cannot corrupt us with

    @property
    def version(self) -> str:
        """``<data hash 12>-<created_at compact>``, e.g. ``3fa2b1c4d5e6-20250101T120000Z``."""
        data = str(self._metadata.get("data_hash", "unknown"))[:12]
        created = str(self._metadata.get("created_at", "")).replace("-", "").replace(":", "")
        return f"{data}-{created}" if created else data

    # --- inference -----------------------------------------------------------------

    def probabilities(self, text: str) -> np.ndarray:
        """Softmax over ``labels`` for one text (no out-of-scope rules applied)."""
        text = self.reading(text)
        idx, values = self.featurizer.vector(text)
        logits = self.intercept + values @ self._coef_by_feature[idx]
        if self._encoder is not None:
            logits = logits + self._encoder.encode(text) @ self._embedding_proj
        logits = logits - logits.max()
        exp = np.exp(logits)
        return exp / exp.sum()

    def probabilities_many(self, texts: Sequence[str]) -> np.ndarray:
        """``probabilities`` for many texts at once (batched embedding: ~2x faster for evaluation).

        Equal to stacking :meth:`probabilities` up to floating-point rounding of the batch.
        """
        if not texts:
            return np.zeros((0, len(self.labels)))
        texts = [self.reading(t) for t in texts]
        logits = np.vstack(
            [self.intercept + v @ self._coef_by_feature[i] for i, v in map(self.featurizer.vector, texts)]
        )
        if self._encoder is not None:
            logits += self._encoder.encode_many(texts) @ self._embedding_proj
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def reading(self, text: str) -> str:
        """The text as the features see it: spelling variants folded (:class:`nlu.spelling.Lexicon`)."""
        return text if self.lexicon is None else self.lexicon.canonical(text)

    def parse(self, text: str) -> IntentResult:
        if not textnorm.has_content(text):
            return self._no_content(text)
        return self._result(text, self.probabilities(text))

    def _no_content(self, text: str) -> IntentResult:
        return IntentResult(text, OUT_OF_SCOPE, 1.0, (IntentScore(OUT_OF_SCOPE, 1.0),), fallback=True)

    def _result(self, text: str, probs: np.ndarray) -> IntentResult:
        # Ties (rare) are broken by label order so results are reproducible.
        order = sorted(range(len(self.labels)), key=lambda i: (-probs[i], i))
        top = order[0]
        if self.labels[top] != OUT_OF_SCOPE and probs[top] < self.threshold:
            rest = [IntentScore(self.labels[i], float(probs[i])) for i in order if self.labels[i] != OUT_OF_SCOPE]
            ranking = (IntentScore(OUT_OF_SCOPE, self.threshold), *rest)[:RANKING_SIZE]
            return IntentResult(text, OUT_OF_SCOPE, self.threshold, ranking, fallback=True)
        ranking = tuple(IntentScore(self.labels[i], float(probs[i])) for i in order[:RANKING_SIZE])
        return IntentResult(text, self.labels[top], float(probs[top]), ranking)

    # --- persistence ---------------------------------------------------------------

    @classmethod
    def load(cls, directory: str | PathLike[str]) -> IntentModel:
        path = Path(directory)
        if not path.is_dir():
            raise ModelLoadError(path, "not a directory" if path.exists() else "directory does not exist")
        for name in (WEIGHTS_FILE, LABELS_FILE, METADATA_FILE):
            if not (path / name).is_file():
                raise ModelLoadError(path, f"missing {name}")

        metadata = _read_json(path, METADATA_FILE)
        if not isinstance(metadata, dict):
            raise ModelLoadError(path, f"{METADATA_FILE} must hold a JSON object")
        missing = [k for k in _REQUIRED_METADATA if k not in metadata]
        if missing:
            raise ModelLoadError(path, f"{METADATA_FILE} lacks {', '.join(missing)}")
        if metadata["format_version"] != FORMAT_VERSION:
            raise ModelLoadError(
                path,
                f"incompatible model format version {metadata['format_version']!r}; "
                f"this code reads version {FORMAT_VERSION} (retrain the model)",
            )
        threshold = metadata["threshold"]
        if not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
            raise ModelLoadError(path, f"threshold {threshold!r} is not a number in [0, 1]")
        try:
            config = FeatureConfig.from_dict(metadata["features"])
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(path, f"bad feature settings in {METADATA_FILE}: {exc}") from exc

        labels = _read_json(path, LABELS_FILE)
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or not all(isinstance(x, str) and x for x in labels)
            or len(set(labels)) != len(labels)
        ):
            raise ModelLoadError(path, f"{LABELS_FILE} must be a list of at least two distinct label names")

        arrays = _read_weights(path, embedding=config.embedding is not None, spelling=config.spelling)
        vocabulary, idf, coef, intercept = (arrays[k] for k in _ARRAYS)
        if vocabulary.ndim != 1 or vocabulary.dtype.kind != "U":
            raise ModelLoadError(path, "vocabulary must be a 1-D unicode array")
        n_features, n_labels = vocabulary.shape[0], len(labels)
        expected = {"idf": (n_features,), "coef": (n_labels, n_features), "intercept": (n_labels,)}
        encoder = None
        if config.embedding is not None:
            try:
                encoder = get_encoder(config.embedding)
            except EmbeddingUnavailable as exc:
                raise ModelLoadError(path, str(exc)) from exc
            expected["embedding_coef"] = (n_labels, encoder.dim)
        for name, shape in expected.items():
            array = arrays[name]
            if array.shape != shape:
                raise ModelLoadError(path, f"{name} has shape {array.shape}, expected {shape}")
            if array.dtype.kind != "f" or not np.all(np.isfinite(array)):
                raise ModelLoadError(path, f"{name} must hold finite floats")
        try:
            featurizer = Featurizer(config, vocabulary.tolist(), idf)
            lexicon = Lexicon.from_arrays(arrays["lexicon_keys"], arrays["lexicon_forms"]) if config.spelling else None
            return cls(
                labels, featurizer, coef, intercept, float(threshold), metadata,
                embedding_coef=arrays.get("embedding_coef"), encoder=encoder, lexicon=lexicon,
            )
        except ValueError as exc:
            raise ModelLoadError(path, str(exc)) from exc


def _read_json(path: Path, name: str) -> Any:
    try:
        return json.loads((path / name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(path, f"{name} is unreadable or not JSON: {exc}") from exc


def _read_weights(path: Path, *, embedding: bool, spelling: bool) -> dict[str, np.ndarray]:
    names = (*_ARRAYS, *(("embedding_coef",) if embedding else ()), *(("lexicon_keys", "lexicon_forms") if spelling else ()))
    try:
        with np.load(path / WEIGHTS_FILE, allow_pickle=False) as npz:
            missing = [k for k in names if k not in npz.files]
            if missing:
                raise ModelLoadError(path, f"{WEIGHTS_FILE} lacks {', '.join(missing)}")
            return {k: npz[k] for k in names}
    except ModelLoadError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelLoadError(path, f"{WEIGHTS_FILE} is corrupt: {exc}") from exc
