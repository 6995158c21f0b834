"""One spelling per word, whatever the recogniser wrote: the model sees the training data's form.

Whisper spells the same spoken word several ways from call to call: with or without accents
("póliza", "poliza"), and, for Latin-American and Andalusian speakers (seseo, ceceo), with
"s", "z" or "c" ("polisa"); "b"/"v" and "ll"/"y" are heard alike. The TF-IDF features already
drop accents, but the sentence embedding reads the text as written, so a misspelling moves the
whole sentence. :class:`Lexicon` folds every word to a :func:`spelling_key` (how it sounds) and
writes it back in the form the training data used most, before any feature is built, at
training and at run time alike; a word the training data never had is kept as it is.

    >>> lexicon = Lexicon.from_texts(["quiero saber si mi póliza sigue vigente"])
    >>> lexicon.canonical("eh quiero saber si mi polisa sigue bijente")
    'quiero saber si mi póliza sigue vigente'
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping

import numpy as np

from . import text as textnorm

__all__ = ["Lexicon", "spelling_key"]

# Applied in order to an accent-free lowercase word. Only confusions that Spanish ASR output
# really shows; each rule is harmless for English because it is applied to training and run
# time alike (a key is never shown to anyone).
_SOUND_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"ll"), "y"),  # yeísmo: "llamar" ~ "yamar"
    (re.compile(r"(.)\1+"), r"\1"),  # doubled letters: "cancellar", "acceso" ~ "aseso"
    (re.compile(r"c(?=[ei])"), "s"),  # seseo: "vigencia" ~ "vigensia"
    (re.compile(r"z"), "s"),  # seseo/ceceo: "póliza" ~ "polisa"
    (re.compile(r"v"), "b"),  # betacismo: "vigente" ~ "bigente"
    (re.compile(r"g(?=[ei])"), "j"),  # "gestión" ~ "jestion"
)


def spelling_key(word: str) -> str:
    """How a word sounds, as far as its spelling variants go: ``"Póliza"`` and ``"polisa"`` → ``"polisa"``."""
    key = textnorm.strip_accents(word.lower())
    for pattern, replacement in _SOUND_RULES:
        key = pattern.sub(replacement, key)
    return key


class Lexicon:
    """Maps each word's :func:`spelling_key` to the form training wrote most (see the module docstring)."""

    def __init__(self, forms: Mapping[str, str]) -> None:
        self._forms = dict(forms)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Lexicon:
        """The most frequent written form of every key; a tie goes to the accented form
        (the recogniser drops accents, it never adds wrong ones), then to the alphabetical first."""
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for text in texts:
            for word in _words(text):
                counts[spelling_key(word)][word] += 1
        forms = {
            key: min(seen, key=lambda w: (-seen[w], w == textnorm.strip_accents(w), w))
            for key, seen in counts.items()
        }
        return cls(forms)

    def __len__(self) -> int:
        return len(self._forms)

    def canonical(self, text: str) -> str:
        """The text as the model reads it: lowercase, no punctuation or fillers, numbers (digits or
        words) as one token, every known word in its training form."""
        return " ".join(self._forms.get(spelling_key(w), w) for w in _words(text))

    # --- persistence: two parallel unicode arrays in the model's weights.npz ----------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        keys = sorted(self._forms)
        return {
            "lexicon_keys": np.array(keys, dtype=np.str_),
            "lexicon_forms": np.array([self._forms[k] for k in keys], dtype=np.str_),
        }

    @classmethod
    def from_arrays(cls, keys: np.ndarray, forms: np.ndarray) -> Lexicon:
        if keys.ndim != 1 or forms.shape != keys.shape or keys.dtype.kind != "U" or forms.dtype.kind != "U":
            raise ValueError("lexicon_keys and lexicon_forms must be 1-D unicode arrays of one length")
        return cls(dict(zip(keys.tolist(), forms.tolist())))


def _words(text: str) -> list[str]:
    return textnorm.tokens(text, drop_fillers=True, keep_accents=True)
