"""Whether a transcribed utterance sounds finished, from its last words (Spanish and English).

A caller who pauses mid-sentence usually stops on a word that cannot end one: a connector
("y", "porque", "and", "because"), a preposition ("de", "para", "to"), an article or a
possessive ("el", "mi", "the", "my"), a filler ("eh", "um"), a verb that asks for what follows
("quiero", "es", "I want"; English "is" unless after "where", "what"…), or a number being dictated ("mi número es 3 5"). The gateway
commits an utterance before the full end-of-speech silence only when the intent model is sure
*and* :func:`open_ending` finds none of these: a cheap rule, biased towards waiting.

    >>> open_ending("Quiero saber el estado de mi", "es")
    "ends with 'mi'"
    >>> open_ending("Quiero saber dónde está mi pedido.", "es") is None
    True

Text only: no audio, no model.
"""
from __future__ import annotations

import re

from . import text as textnorm

__all__ = ["OPEN_WORDS", "is_complete", "open_ending"]

_ES_OPEN = """
    y e o u ni pero sino que porque pues como cuando donde mientras aunque si entonces
    de del a al en con sin por para sobre entre hasta desde hacia segun contra tras ante bajo
    el la los las un una unos unas lo
    mi mis tu tus su sus nuestro nuestra nuestros nuestras este esta estos estas ese esa esos esas
    me te se le les nos
    eh em ehm mm mmm hmm este
    es son esta estan era fue soy estoy
    quiero quisiera necesito queria puedo podria tengo voy vamos gustaria
"""
_EN_OPEN = """
    and or but so because cause that which who whose if when where while than then
    of to for from with about in on at by into onto over under through without
    the a an some any
    my your our his her their its this these those
    um uh er erm uhm hmm mm mmm
    be i i'm im
    want wanna need would could can will should like gonna
"""
#: Words after which a caller is almost never done, per language (lower case, accents removed).
OPEN_WORDS: dict[str, frozenset[str]] = {
    "es": frozenset(_ES_OPEN.split()),
    "en": frozenset(_EN_OPEN.split()),
}
# A number at the end may be the middle of a dictated one; here "uno"/"one" (and "oh", as in "five oh
# two") count too, which text.NUMBER_WORDS leaves out because mid-sentence they are mostly articles.
_NUMBERS = textnorm.NUMBER_WORDS | {"uno", "una", "one", "oh"}
# Multi-word fillers: "o sea", "you know", "I mean".
_OPEN_PHRASES = {"es": ("o sea", "es decir", "a ver"), "en": ("you know", "i mean", "kind of", "sort of")}
# English copulas end a question clause ("where my order is") but open a statement ("my number is").
_EN_COPULAS = frozenset("is are was were am".split())
_EN_WH = frozenset("where what when which who how why whether".split())
_WORD = re.compile(r"[a-z0-9']+")
_DIGIT = re.compile(r"\d")
# Punctuation that says the sentence goes on (Whisper writes "..." and "," at pauses).
_TRAILING_OPEN = ("...", "…", ",", ";", ":", "-", "—")


def open_ending(text: str, language: str | None = None) -> str | None:
    """Why ``text`` sounds unfinished, or None when it may be a complete request.

    ``language`` is ``"es"`` or ``"en"``; None (or another) checks the words of both. Empty text is
    unfinished ("no words"). The reasons: ``"ends with 'de'"``, ``"ends with a number"``,
    ``"ends with ','"``, ``"ends with 'o sea'"``.
    """
    stripped = text.strip()
    if not stripped:
        return "no words"
    for mark in _TRAILING_OPEN:
        if stripped.endswith(mark):
            return f"ends with {mark!r}"
    folded = textnorm.strip_accents(stripped.lower())  # ñ becomes n, which no rule minds
    words = _WORD.findall(folded.replace("’", "'"))
    if not words:
        return "no words"
    languages = [language] if language in OPEN_WORDS else list(OPEN_WORDS)
    tail = " ".join(words[-2:])
    for lang in languages:
        for phrase in _OPEN_PHRASES[lang]:
            if tail == phrase or tail.endswith(" " + phrase):
                return f"ends with {phrase!r}"
    last = words[-1]
    if _DIGIT.search(last) or last in _NUMBERS:
        return "ends with a number"
    if any(last in OPEN_WORDS[lang] for lang in languages):
        return f"ends with {last!r}"
    if "en" in languages and last in _EN_COPULAS and not _EN_WH.intersection(words[:-1]):
        return f"ends with {last!r}"
    return None


def is_complete(text: str, language: str | None = None) -> bool:
    """True when :func:`open_ending` finds nothing that says more is coming."""
    return open_ending(text, language) is None
