"""Word error rate and the text normalisation it is computed on.

Small on purpose (no jiwer): WER is the number we compare whenever the ASR engine
changes (window sizing, decoding options, model), so the definition lives here with it.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

_NON_WORD = re.compile(r"[^\w\s']|_")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower-case, strip accents and punctuation, collapse spaces.

    Accents go because the reference transcripts (Asterisk es) are written without
    them ("numero") while Whisper writes "número"; that is not a recognition error.
    """
    decomposed = unicodedata.normalize("NFKD", text.lower())
    no_accents = "".join(c for c in decomposed if not unicodedata.combining(c))
    no_punct = _NON_WORD.sub(" ", no_accents).replace("'", "")
    return _SPACES.sub(" ", no_punct).strip()


def words(text: str) -> list[str]:
    """The normalised words of ``text``."""
    normalized = normalize_text(text)
    return normalized.split(" ") if normalized else []


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance over tokens (substitutions + deletions + insertions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion
                    current[j - 1] + 1,  # insertion
                    previous[j - 1] + (ref_word != hyp_word),  # substitution / match
                )
            )
        previous = current
    return previous[-1]


@dataclass(frozen=True, slots=True)
class WerResult:
    errors: int
    reference_words: int

    @property
    def wer(self) -> float:
        return self.errors / self.reference_words if self.reference_words else 0.0


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> WerResult:
    """Corpus WER: total word edits over total reference words (not a mean of ratios)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    errors = sum(edit_distance(words(r), words(h)) for r, h in zip(references, hypotheses))
    total = sum(len(words(r)) for r in references)
    return WerResult(errors=errors, reference_words=total)
