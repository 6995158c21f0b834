"""``nlu.completeness``: whether a transcript's last words say more is coming (early commit waits then)."""
from __future__ import annotations

import pytest

from nlu import is_complete, open_ending


@pytest.mark.parametrize(
    "text, language, why",
    [
        # Spanish: requests that are done
        ("Quiero saber dónde está mi pedido.", "es", None),
        ("Me cobraron dos veces la factura", "es", None),
        ("Necesito una copia de mi factura del mes pasado", "es", None),
        ("Me robaron la tarjeta de crédito.", "es", None),
        ("¿A qué hora abren mañana?", "es", None),
        ("Quiero hablar con una persona, por favor.", "es", None),
        ("Quiero cambiar mi número", "es", None),
        # Spanish: a pause in the middle
        ("Quiero saber el estado de mi", "es", "ends with 'mi'"),
        ("Quiero saber el estado de", "es", "ends with 'de'"),
        ("Me cobraron dos veces y", "es", "ends with 'y'"),
        ("Llamo porque", "es", "ends with 'porque'"),
        ("Necesito que", "es", "ends with 'que'"),
        ("Quiero pagar el", "es", "ends with 'el'"),
        ("Es para", "es", "ends with 'para'"),
        ("Hola, eh", "es", "ends with 'eh'"),
        ("Quiero", "es", "ends with 'quiero'"),
        ("Mi número de pedido es", "es", "ends with 'es'"),
        ("Mi número es 3 5", "es", "ends with a number"),
        ("Mi número es tres cinco siete.", "es", "ends with a number"),
        ("Es que, o sea", "es", "ends with 'o sea'"),
        ("Quería saber, ", "es", "ends with ','"),
        ("Llamaba por lo de...", "es", "ends with '...'"),
        ("Quiero saber dónde está", "es", "ends with 'esta'"),
        # English: done
        ("I would like to know where my order is.", "en", None),
        ("I want to speak to an agent please", "en", None),
        ("My credit card was stolen.", "en", None),
        ("What time do you open tomorrow?", "en", None),
        ("I was charged twice on my last bill", "en", None),
        # English: a pause in the middle
        ("I want to cancel my", "en", "ends with 'my'"),
        ("I need to speak with", "en", "ends with 'with'"),
        ("I'd like to make an appointment for", "en", "ends with 'for'"),
        ("I was charged twice and", "en", "ends with 'and'"),
        ("I'm calling because", "en", "ends with 'because'"),
        ("I want to pay the", "en", "ends with 'the'"),
        ("I need to", "en", "ends with 'to'"),
        ("Hi, um", "en", "ends with 'um'"),
        ("My order number is", "en", "ends with 'is'"),
        ("My order number is 4 8", "en", "ends with a number"),
        ("My number is five five five one two", "en", "ends with a number"),
        ("It's about, you know", "en", "ends with 'you know'"),
        ("I want to cancel my...", "en", "ends with '...'"),
        # nothing said
        ("", "es", "no words"),
        ("  ...  ", "en", "ends with '...'"),
    ],
)
def test_the_last_words_say_whether_more_is_coming(text, language, why):
    assert open_ending(text, language) == why
    assert is_complete(text, language) is (why is None)


def test_without_a_language_both_languages_words_count():
    assert open_ending("Quiero saber el estado de", None) == "ends with 'de'"
    assert open_ending("I want to cancel my", None) == "ends with 'my'"
    assert open_ending("Quiero saber el estado de", "en") is None  # "de" is no English word that opens
    assert open_ending("I want to cancel my", "es") is None  # nor "my" a Spanish one


def test_capitals_and_accents_do_not_matter():
    assert open_ending("QUIERO SABER EL ESTADO DE MÍ", "es") == "ends with 'mi'"
    assert open_ending("Mi número es", "es") == open_ending("mi numero es", "es") == "ends with 'es'"
