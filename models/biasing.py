"""Biasing Whisper toward a contact center's words, and the guard that biasing needs.

Whisper reads a "previous text" before the audio (faster-whisper's ``initial_prompt``): words in
it become likelier, so a domain vocabulary ("pedido, envío, póliza, siniestro") turns "polisa"
back into "póliza". The price is known: over silence or noise Whisper may repeat the prompt.
:func:`echoes` recognises that output so the transcriber can drop it.

    >>> prompt = biasing_prompt(["pedido", "envío", "darme de baja"])
    >>> prompt
    'pedido, envío, darme de baja.'
    >>> echoes("Pedido, darme de baja.", prompt), echoes("Darme de baja", prompt), echoes("mi pedido", prompt)
    (True, False, False)
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from models.evaluation import words as _words

__all__ = ["MIN_ECHO_ITEMS", "biasing_prompt", "echoes"]

# A caller may say one vocabulary item alone ("factura", "darme de baja"); two or more of them,
# in the prompt's order and with nothing else, is what an echo of the prompt looks like.
MIN_ECHO_ITEMS = 2


def biasing_prompt(vocabulary: Iterable[str]) -> str:
    """The prompt for a vocabulary: its words and phrases as one comma-separated line."""
    items = [item.strip() for item in vocabulary if item.strip()]
    return ", ".join(items) + "." if items else ""


def echoes(text: str, prompt: str) -> bool:
    """True when ``text`` is nothing but :data:`MIN_ECHO_ITEMS` or more of ``prompt``'s items, in order."""
    said = _words(text)
    items = [words for words in map(_words, re.split(r"[,.;]", prompt)) if words]
    matched, i = 0, 0
    for item in items:
        if said[i : i + len(item)] == item:
            i += len(item)
            matched += 1
    return i == len(said) and matched >= MIN_ECHO_ITEMS

