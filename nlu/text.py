"""Text normalisation shared by the dataset checks, training and the runtime.

Whisper output for phone calls is inconsistent: sometimes capitalised and punctuated,
sometimes not; accents come and go ("esta"/"está"); numbers appear as digits or as words
("12", "doce"). The classifier must see the same token for all of these, so everything that
reaches the featurizer goes through :func:`normalize` first (and, in a trained model, through
:class:`nlu.spelling.Lexicon`, which also folds spelling variants such as "polisa"/"póliza").
"""

from __future__ import annotations

import re
import unicodedata

# A run of digits (with inner separators such as "12.500" or "3/4") becomes one
# placeholder: order numbers and amounts say *that* a number was spoken, not which.
NUMBER_TOKEN = "0"
_NUMBER_RE = re.compile(r"\d+(?:[.,:/\-]\d+)*")
_NON_WORD_RE = re.compile(r"[\W_]+")

# Number words say the same as digits (Whisper writes "dos facturas" one day, "2 facturas" the
# next). "un", "una", "uno", "one" are left out: they are mostly articles ("una cita").
NUMBER_WORDS: frozenset[str] = frozenset(
    """cero dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince dieciseis
    diecisiete dieciocho diecinueve veinte veintiuno veintidos veintitres veinticuatro veinticinco
    veintiseis veintisiete veintiocho veintinueve treinta cuarenta cincuenta sesenta setenta ochenta
    noventa cien ciento doscientos trescientos cuatrocientos quinientos seiscientos setecientos
    ochocientos novecientos mil millon millones
    zero two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand
    million""".split()
)
# Joins two number words into one number: "treinta y dos", "one hundred and five".
_NUMBER_JOINERS = frozenset({"y", "and"})

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


def normalize(text: str, *, drop_fillers: bool = False, keep_accents: bool = False) -> str:
    """Lowercase, strip accents, one token per number, drop punctuation and extra spaces.

    >>> normalize("¿Dónde está mi PEDIDO nº 12.345?")
    'donde esta mi pedido no 0'
    >>> normalize("Tengo dos facturas, la 3 y la 4 5 6", keep_accents=True)
    'tengo 0 facturas la 0 y la 0'
    """
    return " ".join(tokens(text, drop_fillers=drop_fillers, keep_accents=keep_accents))


def tokens(text: str, *, drop_fillers: bool = False, keep_accents: bool = False) -> list[str]:
    """:func:`normalize` as a list of words. ``keep_accents`` keeps "está" as written (for the
    sentence embedding, which reads real spelling); the tests on words ignore accents either way."""
    text = _NUMBER_RE.sub(f" {NUMBER_TOKEN} ", text.lower())
    words = []
    for word in _NON_WORD_RE.sub(" ", text).split():
        plain = strip_accents(word)
        if (drop_fillers and plain in FILLERS) or not plain:
            continue
        words.append(NUMBER_TOKEN if plain in NUMBER_WORDS else word if keep_accents else plain)
    return _join_numbers(words)


def _join_numbers(words: list[str]) -> list[str]:
    """One token per spoken number: "4 5 6", "treinta y dos", "ciento 0" are each one number."""
    out: list[str] = []
    for i, word in enumerate(words):
        if word == NUMBER_TOKEN and out and out[-1] == NUMBER_TOKEN:
            continue
        if word in _NUMBER_JOINERS and out and out[-1] == NUMBER_TOKEN and words[i + 1 : i + 2] == [NUMBER_TOKEN]:
            continue
        out.append(word)
    return out


def has_content(text: str) -> bool:
    """False for empty text and for utterances made only of greetings/fillers/yes/no."""
    return any(t not in NO_CONTENT for t in tokens(text))
