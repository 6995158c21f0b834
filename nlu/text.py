"""Text normalisation shared by the dataset checks, training and the runtime.

Whisper output for phone calls is inconsistent: sometimes capitalised and punctuated,
sometimes not; accents come and go ("esta"/"está"); numbers appear as digits. The
classifier must see the same token for all of these, so everything that reaches the
featurizer goes through :func:`normalize` first.
"""

from __future__ import annotations

import re
import unicodedata

# A run of digits (with inner separators such as "12.500" or "3/4") becomes one
# placeholder: order numbers and amounts say *that* a number was spoken, not which.
NUMBER_TOKEN = "0"
_NUMBER_RE = re.compile(r"\d+(?:[.,:/\-]\d+)*")
_NON_WORD_RE = re.compile(r"[^a-z0-9]+")

# Pure vocal hesitations. Words like "bueno", "pues", "like" are *not* here: they also
# carry meaning ("I'd like to…") and the model learns their (low) weight on its own.
FILLERS: frozenset[str] = frozenset(
    {
        "eh", "ehh", "ehm", "em", "emm", "mm", "mmm", "hmm", "hm", "mhm",
        "um", "umm", "uh", "uhh", "uhm", "ah", "ahh", "er", "erm", "aja",
    }
)

# Utterances made only of these words give no call reason: see ``IntentModel.parse``.
NO_CONTENT: frozenset[str] = FILLERS | frozenset(
    {
        "hola", "buenas", "buenos", "buen", "dia", "dias", "tardes", "noches", "alo", "aloha",
        "bueno", "diga", "digame", "si", "no", "ok", "okay", "vale", "gracias", "muchas",
        "senor", "senora", "senorita", "oiga", "oye", "a", "ver", "claro", "perfecto",
        "hello", "hi", "hey", "yes", "yeah", "yep", "nope", "good", "morning", "afternoon",
        "evening", "thanks", "thank", "you", "sure", "right", "alright", "well", "so", "okey",
        NUMBER_TOKEN,
    }
)


def strip_accents(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalize(text: str, *, drop_fillers: bool = False) -> str:
    """Lowercase, strip accents, collapse numbers, drop punctuation and extra spaces.

    >>> normalize("¿Dónde está mi PEDIDO nº 12.345?")
    'donde esta mi pedido no 0'
    """
    text = strip_accents(text.lower())
    text = _NUMBER_RE.sub(f" {NUMBER_TOKEN} ", text)
    tokens = _NON_WORD_RE.sub(" ", text).split()
    if drop_fillers:
        tokens = [t for t in tokens if t not in FILLERS]
    return " ".join(tokens)


def tokens(text: str, *, drop_fillers: bool = False) -> list[str]:
    return normalize(text, drop_fillers=drop_fillers).split()


def has_content(text: str) -> bool:
    """False for empty text and for utterances made only of greetings/fillers/yes/no."""
    return any(t not in NO_CONTENT for t in tokens(text))
