"""The recorded prompts the IVR plays, one WAV per prompt and language."""
from __future__ import annotations

from enum import Enum
from importlib.resources import files
from pathlib import Path


class Prompt(str, Enum):
    GREETING = "greeting"
    NO_INPUT = "no_input"
    REPROMPT = "reprompt"
    CONSENT = "consent"
    WHATSAPP_SENT = "whatsapp_sent"
    TRANSFER = "transfer"
    HOLD = "hold"
    HOLD_MUSIC = "hold_music"
    OFFER = "offer"
    OFFER_DECLINED = "offer_declined"
    GOODBYE = "goodbye"


class PromptError(Exception):
    """A prompt file is missing; raised at start-up, never in the middle of a call."""


class PromptLibrary:
    """Checks at construction that every prompt exists for every language in use."""

    def __init__(self, languages: list[str] | set[str], directory: Path | None = None) -> None:
        self.directory = Path(directory) if directory else Path(str(files("gateway.call") / "prompts"))
        missing = [
            f"{lang}/{prompt.value}.wav"
            for lang in sorted(languages)
            for prompt in Prompt
            if not (self.directory / lang / f"{prompt.value}.wav").is_file()
        ]
        if missing:
            raise PromptError(f"missing prompt files in {self.directory}: {', '.join(missing)}")

    def path(self, prompt: Prompt, language: str) -> Path:
        return self.directory / language / f"{prompt.value}.wav"
