"""What a waiting caller hears about their place and wait (``gateway.call.announcements``)."""
from __future__ import annotations

import math
import shutil
import wave

import pytest

from gateway.call.announcements import AnnouncementError, Announcer, announcement_text


@pytest.mark.parametrize("language, position, wait_s, announce, words", [
    ("es", 0, None, "both", "Eres la siguiente persona en ser atendida."),
    ("es", 1, 45, "both", "Hay una persona antes que tú. Tu espera estimada es de un minuto."),
    ("es_MX", 3, 230, "both", "Hay 3 personas antes que tú. Tu espera estimada es de unos 4 minutos."),
    ("en", 3, 230, "position", "There are 3 callers ahead of you."),
    ("en", 3, 230, "wait", "Your estimated wait is about 4 minutes."),
    ("en", 9, 5000, "wait", "Your estimated wait is over an hour."),
    ("en", None, math.inf, "both", None),  # nothing known: nothing said
])
def test_the_words_follow_the_place_the_wait_and_the_language(language, position, wait_s, announce, words):
    assert announcement_text(language, position=position, wait_s=wait_s, announce=announce) == words


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("sox") is None, reason="espeak-ng and sox are not installed")
def test_an_announcement_is_rendered_once_into_a_16_khz_wav(tmp_path):
    announcer = Announcer(tmp_path)
    first = announcer.render("es", "Hay 3 personas antes que tú.")
    assert announcer.render("es", "Hay 3 personas antes que tú.") == first  # cached by its words
    with wave.open(str(first)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert wav.getnframes() / 16000 > 1.0
    with pytest.raises(AnnouncementError, match="no voice"):
        announcer.render("fr", "Bonjour")
