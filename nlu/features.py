"""Text -> sparse TF-IDF vector. Plain Python and numpy so training and runtime share it.

Why not scikit-learn's vectorizers: the runtime must not import scikit-learn, and a
model is only portable if the exact same code computes its features at training time
and at run time. This module is that code; the vocabulary and idf are data saved with
the model.

Features (all on :func:`nlu.text.normalize` output):

* word unigrams and bigrams (``w:`` prefix) – the phrasing ("me robaron", "dónde está");
* character n-grams inside word boundaries (``c:`` prefix), like scikit-learn's
  ``char_wb`` – robust to ASR misspellings, plurals and verb forms ("cancelar",
  "cancelé", "cancelacion").

Each block is TF-IDF weighted (sublinear tf: ``1 + log(tf)``; smooth idf:
``log((1 + n) / (1 + df)) + 1``), l2-normalised on its own and scaled by its block
weight, then the whole vector is l2-normalised. Normalising per block stops the many
character n-grams from drowning the few word features.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from . import text as textnorm

__all__ = ["FeatureConfig", "Featurizer"]

WORD_PREFIX = "w:"
CHAR_PREFIX = "c:"


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    # Document frequency a feature needs to enter the vocabulary. 1 measured best (held-out
    # accuracy +0.5-1 pt over 2): with ~70 examples per intent, rare words still carry signal.
    min_count: int = 1
    drop_fillers: bool = True
    word_weight: float = 1.0
    char_weight: float = 1.0
    # Sentence embedding appended to the TF-IDF vector (see nlu/embeddings.py), scaled by
    # ``embedding_weight``; None for TF-IDF only. Chosen by measurement (README: Decisions):
    # TF-IDF + USE beat either alone on our held-out split, CLINC150 and Banking77.
    embedding: str | None = "use-multilingual-v3"
    embedding_weight: float = 0.5
    # Fold spelling variants ("polisa", "poliza" → "póliza") to the training data's form before
    # any feature, the embedding included (nlu/spelling.py). False reads the text as written.
    spelling: bool = True

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["word_ngrams"] = list(self.word_ngrams)
        d["char_ngrams"] = list(self.char_ngrams)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> FeatureConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown feature settings: {', '.join(sorted(unknown))}")
        values = dict(data)
        for key in ("word_ngrams", "char_ngrams"):
            if key in values:
                lo, hi = values[key]  # type: ignore[misc]
                values[key] = (int(lo), int(hi))
        return cls(**values)  # type: ignore[arg-type]


def extract(text: str, config: FeatureConfig) -> Counter[str]:
    """Raw feature counts of one text (before vocabulary lookup and weighting)."""
    words = textnorm.tokens(text, drop_fillers=config.drop_fillers)
    counts: Counter[str] = Counter()
    wlo, whi = config.word_ngrams
    for n in range(wlo, whi + 1):
        for i in range(len(words) - n + 1):
            counts[WORD_PREFIX + " ".join(words[i : i + n])] += 1
    clo, chi = config.char_ngrams
    for word in words:
        padded = f" {word} "
        for n in range(clo, chi + 1):
            for i in range(len(padded) - n + 1):
                counts[CHAR_PREFIX + padded[i : i + n]] += 1
    return counts


class Featurizer:
    """A fitted vocabulary + idf. Build with :meth:`fit` (training) or the constructor (loading)."""

    def __init__(self, config: FeatureConfig, vocabulary: Sequence[str], idf: np.ndarray):
        idf = np.asarray(idf, dtype=np.float64)
        if idf.shape != (len(vocabulary),):
            raise ValueError(f"idf has shape {idf.shape}, vocabulary has {len(vocabulary)} entries")
        self.config = config
        self.vocabulary: tuple[str, ...] = tuple(vocabulary)
        self.idf = idf
        self._index = {feature: i for i, feature in enumerate(self.vocabulary)}
        if len(self._index) != len(self.vocabulary):
            raise ValueError("vocabulary has duplicate entries")
        # Which block each column belongs to, for per-block normalisation.
        self._is_word = np.array([f.startswith(WORD_PREFIX) for f in self.vocabulary], dtype=bool)

    @classmethod
    def fit(cls, texts: Iterable[str], config: FeatureConfig | None = None) -> Featurizer:
        config = config or FeatureConfig()
        df: Counter[str] = Counter()
        n_docs = 0
        for text in texts:
            n_docs += 1
            df.update(extract(text, config).keys())
        # Sorted vocabulary: the column order depends only on the data, not on dict order.
        vocabulary = sorted(f for f, c in df.items() if c >= config.min_count)
        idf = np.array([math.log((1 + n_docs) / (1 + df[f])) + 1.0 for f in vocabulary], dtype=np.float64)
        return cls(config, vocabulary, idf)

    @property
    def n_features(self) -> int:
        return len(self.vocabulary)

    def vector(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Sparse vector of one text as (column indices ascending, float64 values)."""
        counts = extract(text, self.config)
        pairs = sorted((self._index[f], c) for f, c in counts.items() if f in self._index)
        if not pairs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        idx = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
        tf = np.fromiter((p[1] for p in pairs), dtype=np.float64, count=len(pairs))
        values = (1.0 + np.log(tf)) * self.idf[idx]
        is_word = self._is_word[idx]
        for mask, weight in ((is_word, self.config.word_weight), (~is_word, self.config.char_weight)):
            norm = float(np.sqrt(np.dot(values[mask], values[mask])))
            if norm > 0.0:
                values[mask] *= weight / norm
        total = float(np.sqrt(np.dot(values, values)))
        if total > 0.0:
            values /= total
        return idx, values

    def transform(self, texts: Sequence[str]):  # -> scipy.sparse.csr_matrix
        """Feature matrix of a batch (CSR, float64, shape ``(len(texts), n_features)``)."""
        from scipy import sparse  # imported here: single-text parsing needs only numpy

        indptr = [0]
        all_idx: list[np.ndarray] = []
        all_val: list[np.ndarray] = []
        for text in texts:
            idx, val = self.vector(text)
            all_idx.append(idx)
            all_val.append(val)
            indptr.append(indptr[-1] + len(idx))
        indices = np.concatenate(all_idx) if all_idx else np.zeros(0, dtype=np.int64)
        data = np.concatenate(all_val) if all_val else np.zeros(0, dtype=np.float64)
        return sparse.csr_matrix(
            (data, indices, np.asarray(indptr, dtype=np.int64)), shape=(len(texts), self.n_features)
        )
